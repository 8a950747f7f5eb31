"""`optimize`: a model rewritten for inference, each conv -> batch norm -> activation ->
residual add chain one `conv2d_fused` call.

On the `torch.fx` graph of a copy of the model, every conv (a `torch.nn.Conv2d` or im2win
`Conv2d`, called once) starts a chain that takes, in this order and each only if the value
before it has no other user:

    conv -> BatchNorm2d (eval, running stats: folded into the conv's weight and bias; timm's
            BatchNormAct2d too, its activation then the chain's)
         -> activation (relu, relu6, silu, exact gelu, hardswish, sigmoid; module, function
            or method, in-place or not)
         -> add of another tensor (the residual, before the activation; after it if the
            activation came first)
         -> activation (only after a residual added before it)

and becomes one `FusedConv2d`. ConvNeXt's pointwise MLP, two Linears over a channels-last
image between permutes,

    Linear -> activation -> Linear -> permute to [N, C, H, W] -> times a per-channel layer
           scale -> add of the shortcut    (eval-mode dropouts and stochastic depth between)

becomes two 1x1 `FusedConv2d` calls (the activation in the first's store, the scale folded
into the second's weight, the shortcut added in its store). A conv with nothing to fuse
becomes im2win `Conv2d` as `im2win.convert` makes it. What cannot be folded or converted
stays as it was and is listed in one warning.
"""

from __future__ import annotations

import copy
import math
import operator
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn

from .epilogue import Epilogue, apply
from .functional import conv2d, conv2d_fused
from .nn import Conv2d, _unconvertible, convert
from .params import conv_params

# Activation modules, functions and tensor methods, by the epilogue's name for them.
_ACT_MODULES = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.SiLU: "silu",
    nn.GELU: "gelu",
    nn.Hardswish: "hardswish",
    nn.Sigmoid: "sigmoid",
}
_ACT_FUNCTIONS = {
    F.relu: "relu",
    F.relu_: "relu",
    torch.relu: "relu",
    torch.relu_: "relu",
    F.relu6: "relu6",
    F.silu: "silu",
    F.gelu: "gelu",
    F.hardswish: "hardswish",
    torch.sigmoid: "sigmoid",
    torch.sigmoid_: "sigmoid",
    F.sigmoid: "sigmoid",
}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid"}
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_")
# Adds that write into their first operand: the chain's value must be that one.
_IN_PLACE_ADDS = (operator.iadd, "add_")


class FusedConv2d(nn.Module):
    """A convolution with its batch norm folded in and its activation and residual add fused
    into the store: one `im2win.conv2d_fused` call. For inference: the weight [K, C/groups,
    R, S] and bias [K] are buffers: nothing trains them, and a call records gradients (and
    runs unfused, see `conv2d_fused`) only for an input that requires them.

    `forward(input, residual=None)`: `residual` (when `self.residual` is 'before' or 'after'
    the activation) is the other operand of the add; one of another shape or dtype than the
    output (a broadcast add) runs unfused, in PyTorch ops, as the original did.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding,
                 dilation, groups: int, *, activation: str | None = None,
                 residual: str | None = None, precision: str | None = None) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        # Parsed once: `_fits` runs on every call with a residual (host time).
        self._params = conv_params(stride, padding, dilation, groups,
                                   kernel_size=tuple(weight.shape[2:]))  # fmt: skip
        self.activation = activation
        self.residual = residual  # None, 'before' or 'after' the activation
        self.precision = precision

    def forward(self, input: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        geometry = (self.stride, self.padding, self.dilation, self.groups)
        if residual is not None and not self._fits(input, residual):
            acc = conv2d(input, self.weight, None, *geometry, precision=self.precision)
            dtype = torch.promote_types(acc.dtype, residual.dtype)
            return apply(acc, self.epilogue, bias=self.bias, residual=residual, dtype=dtype)
        return conv2d_fused(input, self.weight, self.bias, *geometry, activation=self.activation,
                            residual=residual, residual_after_activation=self.residual == "after",
                            precision=self.precision)  # fmt: skip

    @property
    def epilogue(self) -> Epilogue:
        """What follows the bias: the activation and where the residual joins."""
        return Epilogue(activation=self.activation, residual=self.residual)

    def _fits(self, input: torch.Tensor, residual: torch.Tensor) -> bool:
        """Whether `residual` has the output's shape and dtype, as the fused call needs."""
        p, q = self._params.output_size(input.shape[-2], input.shape[-1], *self.weight.shape[2:])
        shape = (*input.shape[:-3], self.weight.shape[0], p, q)
        return tuple(residual.shape) == shape and residual.dtype == input.dtype

    def extra_repr(self) -> str:
        k, cg, r, s = self.weight.shape
        text = (f"{cg * self.groups}, {k}, kernel_size=({r}, {s}), stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}")  # fmt: skip
        if not self.epilogue.empty:
            text += f", {self.epilogue}"
        if self.precision is not None:
            text += f", precision={self.precision!r}"
        return text


class _Tracer(fx.Tracer):
    """fx's tracer, keeping every conv, batch norm and fused conv a single call (im2win's
    `Conv2d` and other subclasses would otherwise be traced through)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        leaves = (nn.Conv2d, nn.modules.batchnorm._BatchNorm, FusedConv2d)
        return isinstance(m, leaves) or super().is_leaf_module(m, qualname)


def optimize(model: nn.Module, *, precision: str | None = None) -> fx.GraphModule:
    """`model` (in eval mode) rewritten for inference: a new `torch.fx.GraphModule` whose
    conv -> batch norm -> activation -> residual add chains are each one `FusedConv2d` (one
    `im2win.conv2d_fused` call), and whose other convs are im2win `Conv2d`. `model` itself
    is not modified (the result holds a deep copy of its modules).

    A `BatchNorm2d` in eval mode with running statistics, whose input is a conv's output
    used by nothing else, is folded into the conv's weight and bias, in float64 and cast
    back to the conv's dtype:

        scale = gamma / sqrt(running_var + eps)
        weight' = weight * scale[k],  bias' = (bias - running_mean) * scale + beta

    (folded into the weight, not run as `conv2d_fused`'s `scale`: the classic choice, one
    multiply less per output; the cost is one rounding of the folded weight in 16-bit.)
    The activation and the residual add that follow it (the module docstring lists what
    matches) go into the epilogue. ConvNeXt's MLP blocks (Linear -> activation -> Linear
    over [N, H, W, C], permuted back, layer scale, shortcut) become two 1x1 fused convs on
    the block's input seen as [N, C, H, W], the layer scale folded into the second's weight
    and bias as a batch norm is. Fused convs take `precision` (see `im2win.conv2d`; where
    None, an im2win conv's own), torch convs converted take it, and im2win convs with
    nothing to fuse keep theirs, as `convert` leaves them. The model's dtype and device
    stay, and `.to()` works after.

    What cannot be folded or converted (a batch norm in training mode or without running
    statistics, one after a conv with another padding mode, a subclass or hooked conv, a
    conv output used by more than its batch norm, a module called more than once) is left
    as it was and listed, with the reason, in one UserWarning.

    Raises ValueError if `model.training` (call `model.eval()` first) and RuntimeError,
    naming torch.fx's error, if the model cannot be traced (`im2win.convert` converts its
    convs without fusing anything).
    """
    if model.training:
        raise ValueError("optimize is for inference: call model.eval() first")
    root = copy.deepcopy(model)
    try:
        graph = _Tracer().trace(root)
    except Exception as err:
        raise RuntimeError(
            f"im2win.optimize: torch.fx cannot trace {type(model).__name__} "
            f"({type(err).__name__}: {err}); im2win.convert(model) converts its convs "
            "without fusing"
        ) from err
    gm = fx.GraphModule(root, graph, class_name=type(model).__name__)
    left: list[str] = []
    calls = _call_counts(gm.graph)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Conv2d):
            _rewrite(gm, node, calls, precision, left)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.Linear:
            _rewrite_mlp(gm, node, calls, precision)
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    for name, module in gm.named_modules():
        if isinstance(module, nn.Conv2d) and not isinstance(module, Conv2d):
            reason = _unconvertible(module)
            if reason:
                left.append(f"{name} ({type(module).__name__}): not converted: {reason}")
            else:
                convert(module, precision)
    if left:
        warnings.warn("im2win.optimize left these as they were:\n  " + "\n  ".join(left),
                      stacklevel=2)  # fmt: skip
    return gm


def _call_counts(graph: fx.Graph) -> dict[str, int]:
    """How many call_module nodes call each module."""
    counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return counts


def _rewrite(gm: fx.GraphModule, conv_node: fx.Node, calls: dict[str, int],
             precision: str | None, left: list[str]) -> None:  # fmt: skip
    """Replace the chain that starts at `conv_node` by one FusedConv2d call (nothing if the
    chain is the conv alone); append to `left` what stopped a batch norm from folding."""
    conv = gm.get_submodule(conv_node.target)
    bn_node = _only_user(conv_node)
    if not _is_batch_norm(gm, bn_node):
        bn_node = None
        for u in conv_node.users:
            if _is_batch_norm(gm, u):
                left.append(f"{u.target} (after {conv_node.target}): not folded: the conv's "
                            "output has other users")  # fmt: skip
    if bn_node is not None:
        reason = _why_not_foldable(conv, gm.get_submodule(bn_node.target), bn_node, calls)
        if reason is None and calls[conv_node.target] > 1:
            reason = f"{conv_node.target} is called {calls[conv_node.target]} times"
        if reason is None and _mutation_between(gm, [conv_node, bn_node]):
            reason = "an in-place op runs between the conv and the batch norm"
        if reason:
            left.append(f"{bn_node.target} (after {conv_node.target}): not folded: {reason}")
            return
    elif (type(conv) not in (nn.Conv2d, Conv2d) or _hooked(conv) or calls[conv_node.target] > 1
          or conv.padding_mode != "zeros"):  # fmt: skip
        return  # convert's business (or left as it is)
    if len(conv_node.args) != 1 or conv_node.kwargs:
        return

    # [(node, what it adds)]: ("act", name) or ("residual", the other operand)
    chain = [(conv_node, None)]
    act = None
    if bn_node is not None:
        act = _norm_activation(gm.get_submodule(bn_node.target))[0]
        chain.append((bn_node, ("act", act) if act else None))
    if not act:
        act = _activation(gm, _only_user(chain[-1][0]), chain[-1][0])
        if act:
            chain.append((_only_user(chain[-1][0]), ("act", act)))
    other = _residual(_only_user(chain[-1][0]), chain[-1][0])
    if other is not None:
        chain.append((_only_user(chain[-1][0]), ("residual", other)))
        act = None if act else _activation(gm, _only_user(chain[-1][0]), chain[-1][0])
        if act:
            chain.append((_only_user(chain[-1][0]), ("act", act)))
    while len(chain) > 1 + (bn_node is not None) and _mutation_between(gm, [n for n, _ in chain]):
        chain.pop()  # the fused call, at the chain's end, must read the conv's input unchanged
    if len(chain) == 1:
        return

    steps = [step for _, step in chain if step is not None]
    activation = next((value for kind, value in steps if kind == "act"), None)
    residual = next((value for kind, value in steps if kind == "residual"), None)
    where = None
    if residual is not None:
        where = "after" if steps[0][0] == "act" else "before"
    bn = None if bn_node is None else gm.get_submodule(bn_node.target)
    weight, bias = _folded(conv, bn)
    if precision is None:
        precision = getattr(conv, "precision", None)
    fused = FusedConv2d(weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups,
                        activation=activation, residual=where, precision=precision)  # fmt: skip
    _set_submodule(gm, conv_node.target, fused)
    tail = chain[-1][0]
    with gm.graph.inserting_before(tail):
        args = (conv_node.args[0],) if residual is None else (conv_node.args[0], residual)
        new = gm.graph.call_module(conv_node.target, args)
    tail.replace_all_uses_with(new)
    for node, _ in reversed(chain):
        gm.graph.erase_node(node)


def _rewrite_mlp(gm: fx.GraphModule, fc1_node: fx.Node, calls: dict[str, int],
                 precision: str | None) -> None:  # fmt: skip
    """Replace a pointwise MLP over a channels-last image (ConvNeXt's block: Linear ->
    activation -> Linear on [N, H, W, C], permuted to [N, C, H, W], times a per-channel
    layer scale, plus the shortcut; eval-mode dropouts, identities and stochastic depth
    between them) by two 1x1 `FusedConv2d` calls on the input seen as [N, C, H, W]: the
    activation in the first's store, the scale folded into the second's weight and bias
    (in float64), the shortcut added in its store. Nothing if the block does not match."""
    fc1 = gm.get_submodule(fc1_node.target)
    if not _plain_linear(fc1, fc1_node, calls):
        return
    chain, node = _past(gm, [fc1_node])
    act = _activation(gm, node, chain[-1])
    if act:
        chain, node = _past(gm, [*chain, node])
    fc2 = None if node is None or node.op != "call_module" else gm.get_submodule(node.target)
    if type(fc2) is not nn.Linear or node.args[0] is not chain[-1]:
        return
    if not _plain_linear(fc2, node, calls):
        return
    fc2_node = node
    chain, node = _past(gm, [*chain, fc2_node])
    if not _to_nchw(node, chain[-1]):
        return
    chain.append(node)
    scale, constants = _channel_scale(gm, _only_user(node), node, fc2.out_features)
    if scale is not None:
        chain.append(_only_user(node))
    longer, node = _past(gm, chain)
    other = _residual(node, longer[-1])
    if other is not None:
        chain = [*longer, node]
    if _mutation_between(gm, chain):
        return
    b1 = None if fc1.bias is None else fc1.bias.detach().clone()
    w2, b2 = _scaled(fc2, scale)
    geometry = (1, 0, 1, 1)  # stride, padding, dilation, groups: a 1x1 convolution
    first = FusedConv2d(fc1.weight.detach().clone()[:, :, None, None], b1, *geometry,
                        activation=act, precision=precision)  # fmt: skip
    residual = None if other is None else "before"
    second = FusedConv2d(w2[:, :, None, None], b2, *geometry, residual=residual,
                         precision=precision)  # fmt: skip
    _set_submodule(gm, fc1_node.target, first)
    _set_submodule(gm, fc2_node.target, second)
    tail = chain[-1]
    with gm.graph.inserting_before(tail):
        x = gm.graph.call_method("permute", (fc1_node.args[0], 0, 3, 1, 2))  # a view
        hidden = gm.graph.call_module(fc1_node.target, (x,))
        args = (hidden,) if other is None else (hidden, other)
        new = gm.graph.call_module(fc2_node.target, args)
    tail.replace_all_uses_with(new)
    for node in [*reversed(chain), *constants]:  # the scale's reshape, then its attribute
        if not node.users:
            gm.graph.erase_node(node)


def _plain_linear(linear: nn.Module, node: fx.Node, calls: dict[str, int]) -> bool:
    """Whether a Linear module's call can become a convolution: a plain `nn.Linear`, called
    once, without hooks, on one positional argument."""
    return (type(linear) is nn.Linear and calls[node.target] == 1 and not _hooked(linear)
            and len(node.args) == 1 and not node.kwargs)  # fmt: skip


def _past(gm: fx.GraphModule, chain: list[fx.Node]) -> tuple[list[fx.Node], fx.Node | None]:
    """`chain` followed through the nodes that return their input unchanged in eval mode
    (`_passes`), each the only user of the last; and the only user after them."""
    chain = list(chain)
    node = _only_user(chain[-1])
    while node is not None and _passes(gm, node, chain[-1]):
        chain.append(node)
        node = _only_user(node)
    return chain, node


def _passes(gm: fx.GraphModule, node: fx.Node, value: fx.Node) -> bool:
    """Whether `node` returns `value` unchanged in eval mode: an `nn.Identity`, a `Dropout`
    module not training, or torchvision's `stochastic_depth` called with training=False."""
    if not node.args or node.args[0] is not value:
        return False
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if _hooked(module) or len(node.args) != 1 or node.kwargs:
            return False
        return type(module) is nn.Identity or (type(module) is nn.Dropout and not module.training)
    if node.op == "call_function" and getattr(node.target, "__name__", "") == "stochastic_depth":
        training = node.kwargs.get("training", node.args[3] if len(node.args) > 3 else True)
        return node.target.__module__.startswith("torchvision.") and training is False
    return False


def _to_nchw(node: fx.Node | None, value: fx.Node) -> bool:
    """Whether `node` permutes `value` from [N, H, W, C] to [N, C, H, W] (a method call or
    `torch.permute`, the dimensions as separate ints or one sequence)."""
    if node is None or not node.args or node.args[0] is not value or node.kwargs:
        return False
    dims = node.args[1:]
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else dims
    is_permute = (node.op == "call_method" and node.target == "permute") or (
        node.op == "call_function" and node.target is torch.permute
    )
    return is_permute and dims == (0, 3, 1, 2)


def _channel_scale(gm: fx.GraphModule, node: fx.Node | None, value: fx.Node,
                   channels: int) -> tuple[torch.Tensor | None, list[fx.Node]]:  # fmt: skip
    """(the per-channel factor, float64 [C], and the nodes that make it) if `node` multiplies
    `value` [N, C, H, W] by a constant of the module (an attribute, maybe reshaped) that
    broadcasts along C alone; else (None, [])."""
    is_mul = (node is not None and not node.kwargs and len(node.args) == 2) and (
        (node.op == "call_method" and node.target == "mul")
        or (node.op == "call_function" and node.target in (operator.mul, torch.mul))
    )
    if not is_mul or value not in node.args or node.args[0] is node.args[1]:
        return None, []
    other = node.args[1] if node.args[0] is value else node.args[0]
    constant, nodes = _constant(gm, other)
    shape = () if constant is None else tuple(constant.shape)
    if len(shape) not in (3, 4) or shape[-3] != channels or math.prod(shape) != channels:
        return None, []
    return constant.detach().double().reshape(channels), nodes


def _constant(gm: fx.GraphModule, node) -> tuple[torch.Tensor | None, list[fx.Node]]:
    """(the tensor, [its nodes]) of a module attribute, or of one reshaped or viewed by
    constant sizes; (None, [])."""
    if not isinstance(node, fx.Node):
        return None, []
    if node.op == "get_attr":
        value = operator.attrgetter(node.target)(gm)
        return (value, [node]) if isinstance(value, torch.Tensor) else (None, [])
    if (node.op == "call_method" and node.target in ("reshape", "view") and not node.kwargs
            and all(isinstance(size, int) for size in node.args[1:])):  # fmt: skip
        value, nodes = _constant(gm, node.args[0])
        if value is not None and len(nodes) == 1:
            return value.reshape(*node.args[1:]), [node, *nodes]
    return None, []


def _scaled(linear: nn.Linear, scale: torch.Tensor | None):
    """The Linear's weight [out, in] and bias with each output row times `scale` (in
    float64, cast back), detached."""
    weight = linear.weight.detach()
    bias = None if linear.bias is None else linear.bias.detach()
    if scale is None:
        return weight.clone(), None if bias is None else bias.clone()
    scaled = (weight.double() * scale.view(-1, 1)).to(weight.dtype)
    return scaled, None if bias is None else (bias.double() * scale).to(bias.dtype)


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _mutation_between(gm: fx.GraphModule, chain: list[fx.Node]) -> bool:
    """Whether an in-place op other than the chain's own runs between the chain's first and
    last node (the fused call, made at the last, might read a mutated input)."""
    node = chain[0].next
    while node is not chain[-1] and node.op != "root":
        if node not in chain and _in_place(gm, node):
            return True
        node = node.next
    return False


def _in_place(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether `node` writes into one of its inputs (as far as the graph says)."""
    if node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_module":
        return getattr(gm.get_submodule(node.target), "inplace", False) is True
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return name.endswith("_") and not name.endswith("__") or node.target is operator.iadd
    return False


def _only_user(node: fx.Node) -> fx.Node | None:
    """The one node using `node`'s value, or None if it has none or several."""
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is_batch_norm(gm: fx.GraphModule, node: fx.Node | None) -> bool:
    return (
        node is not None
        and node.op == "call_module"
        and isinstance(gm.get_submodule(node.target), nn.BatchNorm2d)
    )


def _why_not_foldable(conv: nn.Conv2d, bn: nn.BatchNorm2d, bn_node: fx.Node,
                      calls: dict[str, int]) -> str | None:  # fmt: skip
    """Why `bn` cannot fold into `conv`, or None if it can."""
    reason = _norm_activation(bn)[1]
    if reason:
        return reason
    if bn.training:
        return "the batch norm is in training mode"
    if bn.running_mean is None:
        return "the batch norm has no running statistics (track_running_stats=False)"
    if bn._forward_hooks or bn._forward_pre_hooks:
        return "the batch norm has hooks"
    if calls[bn_node.target] > 1:
        return f"{bn_node.target} is called {calls[bn_node.target]} times"
    if type(conv) not in (nn.Conv2d, Conv2d):
        return f"the conv is a {type(conv).__name__} (a subclass or parametrized)"
    if conv._forward_hooks or conv._forward_pre_hooks:
        return "the conv has hooks"
    if conv.padding_mode != "zeros":
        return f"the conv's padding_mode is {conv.padding_mode!r}"
    return None


def _norm_activation(bn: nn.Module) -> tuple[str | None, str | None]:
    """(the activation a batch norm module applies after normalizing, why it cannot fold):
    none for `BatchNorm2d`; timm's `BatchNormAct2d` (batch norm, then its `drop`, then its
    `act`) folds when `drop` is an identity in eval and `act` an identity or an activation
    the epilogue runs."""
    kind = type(bn)
    if kind is nn.BatchNorm2d:
        return None, None
    if kind.__name__ != "BatchNormAct2d" or not kind.__module__.startswith("timm."):
        return None, f"a {kind.__name__}, not a BatchNorm2d"
    if type(bn.drop) is not nn.Identity and not (type(bn.drop) is nn.Dropout and not bn.training):
        return None, f"its drop is a {type(bn.drop).__name__}"
    if type(bn.act) is nn.Identity:
        return None, None
    name = _ACT_MODULES.get(type(bn.act))
    if name is None or (name == "gelu" and bn.act.approximate != "none") or _hooked(bn.act):
        return None, f"its activation {bn.act} is not one the epilogue runs"
    return name, None


def _activation(gm: fx.GraphModule, node: fx.Node | None, value: fx.Node) -> str | None:
    """The epilogue's name of the activation `node` computes of `value` alone, or None."""
    if node is None or not node.args or node.args[0] is not value:
        return None
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        name = _ACT_MODULES.get(type(module))
        if name == "gelu" and module.approximate != "none":
            return None
        hooked = module._forward_hooks or module._forward_pre_hooks
        return name if len(node.args) == 1 and not node.kwargs and not hooked else None
    if node.op == "call_function":
        name = _ACT_FUNCTIONS.get(node.target)
        extra = dict(zip(("inplace",), node.args[1:], strict=False)) | dict(node.kwargs)
        if name == "gelu":
            return name if extra in ({}, {"approximate": "none"}) else None
        return name if set(extra) <= {"inplace"} else None
    if node.op == "call_method" and len(node.args) == 1 and not node.kwargs:
        return _ACT_METHODS.get(node.target)
    return None


def _residual(node: fx.Node | None, value: fx.Node) -> fx.Node | None:
    """The other operand if `node` adds `value` to another tensor (a node of the graph), or
    None."""
    if node is None or node.kwargs or len(node.args) != 2:
        return None  # alpha, out=: not a plain add
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in _ADD_METHODS
    )
    a, b = node.args
    if not is_add or not isinstance(a, fx.Node) or not isinstance(b, fx.Node) or a is b:
        return None
    if node.target in _IN_PLACE_ADDS:
        return b if a is value else None
    if value not in (a, b):
        return None
    other = b if a is value else a
    return None if other.op == "get_attr" else other  # a parameter: likely a broadcast


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The conv's weight and bias with `bn` folded in (computed in float64, returned in the
    conv's dtype), detached."""
    weight = conv.weight.detach()
    bias = None if conv.bias is None else conv.bias.detach()
    if bn is None:
        return weight.clone(), None if bias is None else bias.clone()
    k = weight.shape[0]
    w64 = weight.double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.detach().double() if bn.affine else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(mean)
    b64 = bias.double() if bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    folded_weight = (w64 * scale.view(k, 1, 1, 1)).to(weight.dtype)
    folded_bias = ((b64 - mean) * scale + beta).to(weight.dtype)
    return folded_weight, folded_bias


def _set_submodule(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent), name, module)
