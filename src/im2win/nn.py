"""`torch.nn` surface: a drop-in `Conv2d`, in-place model conversion, and warmup."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize

from .functional import conv2d


class Conv2d(torch.nn.Conv2d):
    """`torch.nn.Conv2d` computed by `im2win.conv2d`: same arguments, parameters, init and
    state_dict, plus `precision` (see `im2win.conv2d`; float32 is IEEE unless asked)."""

    def __init__(self, *args, precision: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.precision = precision

    def _conv_forward(self, input, weight, bias):
        padding = self.padding
        if self.padding_mode != "zeros":  # as torch does: pad explicitly, convolve unpadded
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups,
                      precision=self.precision)  # fmt: skip

    @classmethod
    def from_torch(cls, conv: torch.nn.Conv2d, precision: str | None = None) -> Conv2d:
        """A new im2win Conv2d with `conv`'s configuration, training mode and Parameter
        objects (shared, not copied). Nothing else of `conv` carries over: no hooks, no
        subclass behaviour. `im2win.convert(conv)` converts in place and keeps them all.

        Raises ValueError if `conv`'s weight or bias is computed rather than a Parameter
        (pruning, weight or spectral norm, parametrizations).
        """
        computed = [name for name in ("weight", "bias") if name not in conv._parameters]
        if computed:
            raise ValueError(
                f"from_torch: this {type(conv).__name__} computes its {' and '.join(computed)} "
                "(pruning, weight or spectral norm, parametrization?) instead of holding "
                "Parameters; im2win.convert(conv) converts it in place with its hooks"
            )
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, bias=conv.bias is not None,
            padding_mode=conv.padding_mode, device="meta", precision=precision,
        )  # fmt: skip
        new.weight, new.bias = conv.weight, conv.bias
        return new.train(conv.training)

    def extra_repr(self) -> str:
        extra = f", precision={self.precision!r}" if self.precision is not None else ""
        return super().extra_repr() + extra


def convert(
    model: torch.nn.Module, precision: str | None = None, *, strict: bool = False
) -> torch.nn.Module:
    """Make every `torch.nn.Conv2d` in `model`, `model` included, compute with im2win, in
    place; returns `model`.

    Only each conv's class changes: to im2win `Conv2d` (with `precision`), or, for a subclass
    of `torch.nn.Conv2d` that overrides neither `forward` nor `_conv_forward` (parametrized
    convs included), to a generated subclass of both (not picklable as a whole module: save
    the state_dict, as for parametrized modules). The module object, its parameters,
    buffers, hooks, training mode and state_dict keys stay: pruning, weight and spectral
    norm (hooks or parametrizations) keep working, and a conv shared by two parents stays
    one module. Convs already im2win are left as they are, precision included, so
    converting twice changes nothing.

    Convs that cannot be converted (subclasses overriding `forward` or `_conv_forward`,
    unmaterialized lazy convs) are left alone and listed by name in one warning; with
    `strict=True` that list raises ValueError instead, before anything is converted.
    """
    todo, left = [], []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Conv2d) or isinstance(module, Conv2d):
            continue
        reason = _unconvertible(module)
        if reason:
            left.append(f"{name or 'model'} ({type(module).__name__}): {reason}")
        else:
            todo.append((module, _im2win_class(module)))
    if left:
        report = "im2win.convert left these convs unconverted:\n  " + "\n  ".join(left)
        if strict:
            raise ValueError(report)
        warnings.warn(report, stacklevel=2)
    for module, cls in todo:
        module.__class__ = cls
        module.precision = precision
    return model


def _unconvertible(conv: torch.nn.Conv2d) -> str | None:
    """Why `conv` cannot take an im2win class, or None if it can."""
    cls = parametrize.type_before_parametrizations(conv)
    overridden = [
        name for name in ("forward", "_conv_forward")
        if getattr(cls, name) is not getattr(torch.nn.Conv2d, name) or name in vars(conv)
    ]  # fmt: skip
    if overridden:
        return f"overrides {' and '.join(overridden)}"
    if isinstance(conv, LazyModuleMixin):
        return "lazy, not materialized yet (run one forward first)"
    return None


def _im2win_class(conv: torch.nn.Conv2d) -> type:
    """The class `conv` takes. A parametrized conv's class (one per module, made by
    `torch.nn.utils.parametrize`) is rebuilt on the converted base, so that
    `remove_parametrizations` restores an im2win class."""
    cls = type(conv)
    if not parametrize.is_parametrized(conv):
        return _im2win_subclass(cls)
    members = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    return type(cls.__name__, (_im2win_subclass(cls.__bases__[0]),), members)


@functools.cache
def _im2win_subclass(cls: type) -> type:
    """im2win `Conv2d` for `torch.nn.Conv2d`; for a subclass, one computing with im2win
    (its `_conv_forward` comes before `torch.nn.Conv2d`'s in the MRO)."""
    return Conv2d if cls is torch.nn.Conv2d else type(cls.__name__, (cls, Conv2d), {})


def warmup(model: torch.nn.Module, *example_inputs: Any, **example_kwargs: Any) -> Any:
    """Run `model(*example_inputs, **example_kwargs)` once under `torch.no_grad()` and return
    its output, so that every im2win conv makes its plan (checks, kernel choice, Triton
    compilation) now rather than in the first timed or served call.

    Plans are per call signature (shapes, strides, dtypes, arguments): warm up with the
    real batch size, dtype and memory format. Grad mode is not part of it, so the plans
    serve training calls too; only the forward is warmed. The call is an ordinary forward:
    in training mode it updates batch-norm statistics and spectral-norm vectors as any
    forward does (call `model.eval()` first to serve). Triton caches compiled kernels on
    disk (~/.triton/cache, or TRITON_CACHE_DIR), so a later process reuses them instead of
    compiling again.
    """
    with torch.no_grad():
        return model(*example_inputs, **example_kwargs)
