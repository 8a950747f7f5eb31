"""A convolution's gradients on the im2win kernels, the counterparts of
`torch.nn.grad.conv2d_input` and `conv2d_weight`.

Input gradient: the output gradient correlated with the filter flipped and its input and
output channels swapped, by stride phase (`dgrad.py`). Weight gradient: the input with its
batch and channel axes swapped, correlated with the output gradient, likewise swapped, as
the filter (stride and dilation trade places), or, where the im2win kernels run, one GEMM
per group over the input's windows (by TMA where it can, in 16-bit on Hopper
warp-specialized where the rule has its tiles; depthwise layers: every tap of a block of
channels at once) with the reduction split into slices summed in order
(`kernels/conv2d_wgrad.py`, `kernels/conv2d_wgrad_tma.py`, `kernels/conv2d_wgrad_ws.py`).
`torch.compile` traces them as two operators, `im2win::conv2d_input_grad` and
`im2win::conv2d_weight_grad`.

The input gradient runs the forward pass's plans, so every tier, layout and backend is the
forward pass's; the weight-gradient kernel takes every tier and layout as well. The backward of
im2win's convolution runs them with `IM2WIN_BACKWARD=im2win` (`autograd.py`); by default
it is still PyTorch's, which these do not yet beat (notes/backward).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import kernels
from .dgrad import input_grad, split_padding
from .functional import conv2d
from .kernels.sizes import cdiv, next_power_of_2
from .ops import resolve_backend
from .params import ConvParams, check_tensor, conv_params, memory_format_of
from .problem import ConvProblem, MathMode
from .variants import target_of


def conv2d_input(
    input_size,
    weight: torch.Tensor,
    grad_output: torch.Tensor,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    precision: str | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """The gradient of `conv2d` with respect to its input [N, C, H, W] (`input_size`), from
    `weight` [K, C/groups, R, S] and `grad_output` [N, K, P, Q]; the other arguments as
    `conv2d` takes them. The result has grad_output's dtype and memory format."""
    check_tensor("weight", weight, dims=(4,))  # before its shape is read
    params = conv_params(stride, padding, dilation, groups, kernel_size=tuple(weight.shape[2:]))
    size = _check_input_grad(input_size, weight, grad_output, params)
    return input_grad(size, weight, grad_output, params, precision=precision, backend=backend)


def conv2d_weight(
    input: torch.Tensor,
    weight_size,
    grad_output: torch.Tensor,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    precision: str | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """The gradient of `conv2d` with respect to its weight [K, C/groups, R, S]
    (`weight_size`), from `input` [N, C, H, W] and `grad_output` [N, K, P, Q]; the other
    arguments as `conv2d` takes them. The result has input's dtype, contiguous."""
    size = _weight_size(weight_size)
    params = conv_params(stride, padding, dilation, groups, kernel_size=size[2:])
    _check_weight_grad(input, size, grad_output, params)
    grad_weight, _ = weight_grad(input, size, grad_output, params, precision=precision,
                                 backend=backend)  # fmt: skip
    return grad_weight


def weight_grad(input: torch.Tensor, weight_size: tuple[int, ...], grad_output: torch.Tensor,
                params: ConvParams, *, precision: str | None, backend: str,
                bias: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """`conv2d_weight` for checked arguments and parsed geometry (padding per side), and with
    `bias` the bias gradient too (else None): the weight-gradient kernel
    (`kernels/conv2d_wgrad.py`, the bias in the same pass) where the im2win kernels run,
    else (float64, the reference backend) the convolution below."""
    k, cg, r, s = weight_size
    n, _, h, w = input.shape
    g = params.groups
    if resolve_backend(backend, input.device, input.dtype) == "triton":
        return _wgrad_kernel(input, weight_size, grad_output, params, precision, bias)
    # Batch = input channels of a group, channels = (group, image), groups = g: one call.
    x = input.reshape(n, g, cg, h, w).permute(2, 1, 0, 3, 4).reshape(cg, g * n, h, w)
    p, q = grad_output.shape[2:]
    dy = grad_output.reshape(n, g, k // g, p, q).permute(1, 2, 0, 3, 4).reshape(k, n, p, q)
    out = _correlate(x, dy, params.padding, stride=params.dilation, dilation=params.stride,
                     groups=g, precision=precision, backend=backend)  # fmt: skip
    out = out[:, :, :r, :s]  # rows and columns past the filter's met only unused padding
    grad_weight = out.reshape(cg, g, k // g, r, s).permute(1, 2, 0, 3, 4).reshape(k, cg, r, s)
    return grad_weight, grad_output.sum((0, 2, 3)) if bias else None


# The gradients as operators, opaque to tracing: `torch.compile` traces the backward of
# im2win's convolution through these (autograd.py), not into their kernels.
@torch.library.custom_op("im2win::conv2d_input_grad", mutates_args=())
def input_grad_op(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    precision: str | None,
) -> torch.Tensor:
    """`input_grad`, padding per side (top, bottom, left, right), in grad_output's layout."""
    params = ConvParams(tuple(stride), tuple(padding), tuple(dilation), groups)
    size = _check_input_grad(input_size, weight, grad_output, params)
    grad_input = input_grad(size, weight, grad_output, params, precision=precision,
                            backend="auto")  # fmt: skip
    return grad_input.contiguous(memory_format=memory_format_of(grad_output))


@input_grad_op.register_fake
def _(grad_output, weight, input_size, stride, padding, dilation, groups, precision):
    params = ConvParams(tuple(stride), tuple(padding), tuple(dilation), groups)
    size = _check_input_grad(input_size, weight, grad_output, params)
    return torch.empty(size, dtype=grad_output.dtype, device=grad_output.device,
                       memory_format=memory_format_of(grad_output))  # fmt: skip


@torch.library.custom_op("im2win::conv2d_weight_grad", mutates_args=())
def weight_grad_op(
    input: torch.Tensor,
    grad_output: torch.Tensor,
    weight_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    precision: str | None,
    bias: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`weight_grad`: (dW, the bias gradient, or an empty tensor without `bias`)."""
    params = ConvParams(tuple(stride), tuple(padding), tuple(dilation), groups)
    size = _weight_size(weight_size)
    _check_weight_grad(input, size, grad_output, params)
    grad_weight, grad_bias = weight_grad(input, size, grad_output, params, precision=precision,
                                         backend="auto", bias=bias)  # fmt: skip
    return grad_weight.contiguous(), grad_bias if bias else input.new_empty(0)


@weight_grad_op.register_fake
def _(input, grad_output, weight_size, stride, padding, dilation, groups, precision, bias):
    params = ConvParams(tuple(stride), tuple(padding), tuple(dilation), groups)
    size = _weight_size(weight_size)
    _check_weight_grad(input, size, grad_output, params)
    return input.new_empty(size), input.new_empty(size[0] if bias else 0)


# Weight-gradient plans by call signature: the choice made once, the kernels relaunched
# without Triton's dispatch (kernels/launch.py). Each keeps the rule it was made under and
# is made again where the rule has changed since (the tile sweeps and the tests change it).
_WGRAD_PLANS: dict[tuple, _WgradPlan] = {}
MAX_WGRAD_PLANS = 1024  # then the plans start over (as plan.py's)


@dataclass(frozen=True)
class _WgradPlan:
    rule: dict  # a copy of the `wgrad` rule the plan was made under
    run: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def _wgrad_kernel(input, weight_size, grad_output, params: ConvParams, precision, bias: bool):
    target = target_of(input.device, kernels.interpreted())
    rule = target.table["wgrad"]
    if rule["nchw_to_channels_last"]:  # a copy only of a tensor that is not channels-last
        # The kernels read a pixel's window channel-fastest: one run of memory in a
        # channels-last tensor, single elements scattered across planes in an NCHW one; the
        # TMA kernel reads the output gradient's pixels as rows of channels too.
        input = input.contiguous(memory_format=torch.channels_last)
        grad_output = grad_output.contiguous(memory_format=torch.channels_last)
    key = (
        input.shape, input.stride(), input.dtype, input.device, input.data_ptr() % 16,
        grad_output.shape, grad_output.stride(), grad_output.data_ptr() % 16,
        tuple(weight_size), params, precision, bias, torch.get_float32_matmul_precision(),
        # a relaunched kernel runs in the context of the device current at its first launch
        torch._C._cuda_getDevice() if input.is_cuda else None,  # current_device(), unwrapped
    )  # fmt: skip
    plan = _WGRAD_PLANS.get(key)
    if plan is None or plan.rule != rule:
        if len(_WGRAD_PLANS) >= MAX_WGRAD_PLANS:
            _WGRAD_PLANS.clear()
        plan = _wgrad_plan(input, weight_size, grad_output, params, precision, bias, target)
        _WGRAD_PLANS[key] = plan
    return plan.run(input, grad_output)


def _wgrad_plan(input, weight_size, grad_output, params: ConvParams, precision, bias: bool,
                target) -> _WgradPlan:  # fmt: skip
    """The weight gradient of this call's signature: the rule's kernel and config."""
    interpreted = target.interpreted
    rule = target.table["wgrad"]
    k, cg, r, s = weight_size
    weight = torch.empty(weight_size, dtype=input.dtype, device="meta")
    problem = ConvProblem.of(input, weight, params, MathMode.of(input.dtype, precision))
    depthwise = cg == 1 and k == params.groups  # no GEMM left: a kernel of its own
    size_class = "16bit" if input.element_size() == 2 else "32bit"
    kg, j = k // params.groups, cg * r * s
    if depthwise:
        config = dict(rule["depthwise"])
        programs = cdiv(k, config["BLOCK_C"])
    elif _takes_ws(rule, problem, grad_output, target):
        config = dict(rule["ws_tiles"])
        config["BLOCK_C"] = kernels.wgrad_tma_block_c(problem, config["BLOCK_C"])
        columns = kernels.wgrad_tma_columns(problem, config["BLOCK_C"])
        programs = params.groups * cdiv(kg, config["CONSUMERS"] * config["BLOCK_K"]) * columns
    elif _takes_tma(rule, problem, grad_output):
        config = dict(rule["tma_tiles"][size_class])
        config["BLOCK_K"] = min(config["BLOCK_K"], max(16, next_power_of_2(kg)))
        config["BLOCK_C"] = kernels.wgrad_tma_block_c(problem, config["BLOCK_C"])
        columns = kernels.wgrad_tma_columns(problem, config["BLOCK_C"])
        programs = params.groups * cdiv(kg, config["BLOCK_K"]) * columns
    else:
        config = dict(rule["tiles"][size_class])
        # Narrow groups: tiles cut to the gradient's own size (16 at least, for the dot).
        config["BLOCK_K"] = min(config["BLOCK_K"], max(16, next_power_of_2(kg)))
        config["BLOCK_J"] = min(config["BLOCK_J"], max(16, next_power_of_2(j)))
        programs = params.groups * cdiv(kg, config["BLOCK_K"]) * cdiv(j, config["BLOCK_J"])
    # Enough slices of the reduction for `waves` full waves of programs.
    config["SLICES"] = min(rule["max_slices"], max(1, cdiv(rule["waves"] * target.sms, programs)))
    slots: dict = {}  # the kernels' launches, kept for this signature

    def run(x, dy):
        if depthwise:
            return kernels.conv2d_wgrad_depthwise(x, dy, weight_size, problem, config=config,
                                                  bias=bias, slots=slots)  # fmt: skip
        return kernels.conv2d_wgrad(x, dy, weight_size, problem, config=config,
                                    interpreted=interpreted, bias=bias, slots=slots,
                                    sms=target.sms)  # fmt: skip

    return _WgradPlan(copy.deepcopy(rule), run)


def _takes_ws(rule: dict, problem: ConvProblem, grad_output: torch.Tensor, target) -> bool:
    """Whether the warp-specialized weight-gradient kernel takes the layer: the rule has
    tiles for it (null until a rule says where it wins), a Hopper GPU, the TMA kernel's
    filters and tensors, 16-bit."""
    return (
        rule["ws_tiles"] is not None
        and target.arch == "sm90" and not target.interpreted
        and problem.r * problem.s >= rule["tma_min_taps"]
        and kernels.wgrad_ws_supported(problem, grad_output)
    )  # fmt: skip


def _takes_tma(rule: dict, problem: ConvProblem, grad_output: torch.Tensor) -> bool:
    """Whether the TMA weight-gradient kernel takes the layer: the rule's filters (1x1
    layers keep the gathers, faster there on the H200), tensors TMA can read."""
    return (
        rule["tma_tiles"] is not None
        and problem.r * problem.s >= rule["tma_min_taps"]
        and kernels.wgrad_tma_supported(problem, grad_output)
    )


def _correlate(x: torch.Tensor, w: torch.Tensor, pads: tuple[int, int, int, int],
               **conv_kwargs) -> torch.Tensor:  # fmt: skip
    """`conv2d` of `x` padded by `pads` (top, bottom, left, right; negative: rows or columns
    cut). The padding both sides share is the convolution's own; only the rest (uneven or
    negative, rare) costs a padded copy of `x`."""
    (pad_h, pad_w), rest = split_padding(pads)
    if any(rest):
        fmt = memory_format_of(x)
        x = F.pad(x, rest).contiguous(memory_format=fmt)
    return conv2d(x, w, None, padding=(pad_h, pad_w), **conv_kwargs)


def _check_input_grad(input_size, weight, grad_output, params: ConvParams) -> tuple[int, ...]:
    """The input size, checked with weight and grad_output against `params`."""
    check_tensor("weight", weight, dims=(4,))
    check_tensor("grad_output", grad_output, dims=(4,))
    _check_like("weight", weight, grad_output)
    return _input_size(input_size, weight, grad_output, params)


def _check_weight_grad(input, weight_size, grad_output, params: ConvParams) -> None:
    """`input` and `grad_output` checked against a checked weight size and `params`."""
    check_tensor("input", input, dims=(4,))
    check_tensor("grad_output", grad_output, dims=(4,))
    _check_like("input", input, grad_output)
    k, cg, r, s = weight_size
    n, c, h, w = input.shape
    g = params.groups
    if c != cg * g or k % g or grad_output.shape[:2] != (n, k):
        raise ValueError(
            f"weight_size {tuple(weight_size)} with groups={g} does not fit input "
            f"{tuple(input.shape)} and grad_output {tuple(grad_output.shape)}"
        )
    _check_output(grad_output, (h, w), (r, s), params, "input")


def _input_size(input_size, weight, grad_output, params: ConvParams) -> tuple[int, ...]:
    size = tuple(input_size) if isinstance(input_size, (tuple, list, torch.Size)) else None
    if size is None or len(size) != 4 or not all(isinstance(v, int) and v >= 0 for v in size):
        raise ValueError(f"input_size must be four ints [N, C, H, W], got {input_size!r}")
    n, c, h, w = size
    k, cg, r, s = weight.shape
    if c != cg * params.groups or k % params.groups or grad_output.shape[:2] != (n, k):
        raise ValueError(
            f"input_size {size} with groups={params.groups} does not fit weight "
            f"{tuple(weight.shape)} and grad_output {tuple(grad_output.shape)}"
        )
    _check_output(grad_output, (h, w), (r, s), params, "input_size")
    return size


def _weight_size(weight_size) -> tuple[int, ...]:
    size = tuple(weight_size) if isinstance(weight_size, (tuple, list, torch.Size)) else None
    if size is None or len(size) != 4 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ValueError(
            f"weight_size must be four positive ints [K, C/groups, R, S], got {weight_size!r}"
        )
    return size


def _check_like(name: str, t: torch.Tensor, grad_output: torch.Tensor) -> None:
    if t.dtype != grad_output.dtype or t.device != grad_output.device:
        raise TypeError(
            f"grad_output ({grad_output.dtype} on {grad_output.device}) must match {name} "
            f"({t.dtype} on {t.device})"
        )


def _check_output(grad_output, hw, rs, params: ConvParams, name: str) -> None:
    want = params.output_size(*hw, *rs)
    if tuple(grad_output.shape[2:]) != want:
        raise ValueError(
            f"grad_output is {tuple(grad_output.shape)}, but a convolution of this {name} "
            f"gives outputs of {want[0]} x {want[1]}"
        )
