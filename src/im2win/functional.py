"""The public functions: `conv2d` (the `torch.nn.functional.conv2d` contract), `conv2d_fused`
(the same with a fused epilogue), `explain` (the plan a call runs), `transform` and
`transform_filter` (the im2win layouts themselves)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .epilogue import apply, check_tensors, epilogue_of
from .op import autocast_inputs, conv2d_fused_op, conv2d_op
from .ops import check_epilogue_backend, resolve_backend, window_transform
from .params import (
    SUPPORTED_DTYPES,
    as_pair,
    check_conv_args,
    check_tensor,
    conv_params,
    is_channels_last,
    output_channels_last,
)  # fmt: skip
from .plan import Conv2dPlan, conv2d_plan, fused_plan
from .problem import MathMode
from .reference import filter_reference
from .variants import check_takes_epilogue, pinned_variant
from .variants.aten import hands_to_aten, prefers_aten
from .variants.strips import strips_would_serve


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    precision: str | None = None,
    backend: str = "auto",
    windows: str | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """2D convolution (cross-correlation) through the im2win window layout.

    Same contract as `torch.nn.functional.conv2d`: input [N, C, H, W] or unbatched
    [C, H, W], weight [K, C/groups, R, S], bias [K]; stride, padding, dilation as an int or
    a pair (numpy integers too), padding also 'same' or 'valid'. The output [N, K, P, Q] is
    dense, has the input's dtype and PyTorch's memory format: channels_last when the input's
    or the weight's strides are channels-last, else contiguous. C = 0 gives the bias (or
    zeros). It is the operator `torch.ops.im2win.conv2d`: `torch.compile` (fullgraph),
    `torch.export`, CUDA graphs and `torch.autocast` (cast as for `F.conv2d`) all see it.
    Gradients flow (backward is PyTorch's own unless `IM2WIN_BACKWARD=im2win`: `grad.py`).

    `precision`: float16 and bfloat16 multiply in their own type and accumulate in float32.
    float32 follows `torch.get_float32_matmul_precision()` unless `precision` is given:
    'highest' (PyTorch's default) is 'ieee' (fp32 FMA), 'high' is 'tf32x3' (tensor cores,
    fp32-accurate), 'medium' is 'tf32' (tensor cores, ~1e-3 relative error). cuDNN's
    `allow_tf32` (True by default) is not followed, so fp32 never turns TF32 unasked.

    `backend`: 'auto' (on a GPU, per call signature the faster of the im2win kernels and
    PyTorch's own convolution, so a converted layer is never slower than the stock one; CPU
    tensors run the kernels under TRITON_INTERPRET=1, else the plain-PyTorch reference;
    float64 always the reference), 'triton' (the im2win kernels only), 'reference' or
    'paper' (the paper's CUDA kernel, `im2win.paper`: fp32 IEEE, groups 1, CUDA).

    The Triton backend runs one of the kernel variants of `im2win.variants.VARIANTS`: the
    first, in priority order, that supports the call and expects to win (PyTorch's own
    convolution under 'auto' where the measured standings put it ahead, packed narrow
    groups, NCHW inputs staged through channels-last chunks, depthwise FMA, TMA window or
    raster tiles on Hopper, the pointer kernel for everything else), with tiles from the
    tuning table of the GPU's architecture. With IM2WIN_AUTOTUNE=1 the first call of each
    shape class on a GPU times every candidate instead and keeps the fastest in an on-disk
    cache (IM2WIN_TUNING_CACHE, default ~/.cache/im2win/tuning.json). Choices are made once
    per call signature (shapes, strides, dtypes, alignment, arguments); `im2win.explain`
    shows them. Two options override them (Triton backend only):

    `windows`: where the im2win kernels read windows: 'streamed' (straight from the input, no
    buffer; the pointer and TMA kernels) or 'materialized' (the im2win tensor written by the
    transform: the paper's scheme, the pointer kernel).

    `config` pins a variant and its config, for tests and tuning (eager calls only): VARIANT
    (a name of `im2win.variants.BY_NAME`) or, without it, LOOP picks the kernel: 'flat' or
    'channels' (the pointer kernel's reduction loops), 'tma' (window tiles of BLOCK_M pixels,
    BLOCK_Q wide) or 'tma_raster' (runs of BLOCK_M input pixels; unpadded unit-stride only).
    The pointer and TMA kernels take BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages and
    optionally SPLIT_K (reduction slices, 1-64); `print(im2win.explain(...))` shows the
    config of any choice, which passed back with its VARIANT reproduces it.
    """
    if config is not None or runs_direct(input):
        if torch._C._is_any_autocast_enabled():  # cast here as the operator's rule would
            input, weight, bias = autocast_inputs(input, weight, bias)
        plan = conv2d_plan(
            input, weight, bias, stride, padding, dilation, groups,
            precision=precision, backend=backend, windows=windows, config=config,
        )  # fmt: skip
        return plan(input, weight, bias)
    check_tensor("input", input, dims=(3, 4))
    check_tensor("weight", weight, dims=(4,))
    params = conv_params(stride, padding, dilation, groups, kernel_size=tuple(weight.shape[2:]))
    if _traced_as_aten(input, params, backend, windows):
        pads = params.symmetric_padding
        return F.conv2d(input, weight, bias, params.stride, pads, params.dilation, params.groups)
    x = input.unsqueeze(0) if input.dim() == 3 else input
    y = conv2d_op(x, weight, bias, list(params.stride), list(params.padding),
                  list(params.dilation), params.groups, precision, backend, windows)  # fmt: skip
    return y.squeeze(0) if input.dim() == 3 else y


def conv2d_fused(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    scale: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    residual_after_activation: bool = False,
    precision: str | None = None,
    backend: str = "auto",
    windows: str | None = None,
    config: dict | None = None,
) -> torch.Tensor:
    """`conv2d` with an epilogue fused into its store: a folded batch norm (or a bias), an
    activation and a residual, as inference runs them after a convolution.

    Per output channel k at output pixel (n, p, q), on the fp32 accumulator `acc`:

        y = acc * scale[k] + bias[k]     (each only if given)
        y = act(y + residual[n, k, p, q])         residual_after_activation=False
        y = act(y) + residual[n, k, p, q]         residual_after_activation=True
        output = y, cast once to the output dtype

    all in fp32 (float64 for float64 inputs), rounded once at the end. A batch norm folds
    in as scale = gamma / sqrt(running_var + eps), bias = beta - running_mean * scale (plus
    the conv's bias times scale).

    Arguments as `conv2d` takes them (its docstring), plus:
      `scale`: [K] per output channel, on the input's device, in its dtype or float32.
      `activation`: None, 'relu', 'relu6' (clamp to [0, 6]), 'silu' (x * sigmoid(x)),
        'gelu' (exact, the erf form: F.gelu's default), 'hardswish'
        (x * clamp(x + 3, 0, 6) / 6) or 'sigmoid'.
      `residual`: a tensor of the output's shape, dtype and device (any strides, read in
        place), added before the activation, or after it with `residual_after_activation`.
    The output has the input's dtype (a separate output dtype is for a later version) and
    PyTorch's memory format, as `conv2d`'s. With none of scale, activation and residual it
    is `conv2d`.

    Every kernel variant runs the epilogue on its accumulator before the store (under
    split-K the sum of the slices runs it); under backend='auto', PyTorch's own convolution
    may run the call instead, followed by the epilogue in PyTorch ops in the output's dtype
    (`im2win.explain(..., activation=...)` shows which). The reference backend computes it
    in PyTorch ops; backend='paper' refuses it.

    Calls that record gradients (grad enabled and any tensor requiring it) compute the same
    math unfused: `conv2d` (whose gradients and tracing are its own), then the epilogue in
    PyTorch ops, so gradients are exact. Under `torch.compile`, `torch.export`, functorch
    transforms or dispatch modes, a call recording no gradients is the operator
    `torch.ops.im2win.conv2d_fused` wherever an im2win kernel would run it, else (a layer
    `backend='auto'` hands to PyTorch) PyTorch's convolution and the epilogue in PyTorch
    ops, for the compiler to fuse as in the stock model. Under autocast, input, weight,
    bias and residual are cast as for `conv2d`.
    """
    if _no_epilogue(scale, activation, residual, residual_after_activation):
        return conv2d(input, weight, bias, stride, padding, dilation, groups, precision=precision,
                      backend=backend, windows=windows, config=config)  # fmt: skip
    if config is not None or runs_direct(input):
        if torch._C._is_any_autocast_enabled():
            input, weight, bias, residual = autocast_inputs(input, weight, bias, residual)
        if not _records_grad(input, weight, bias, scale, residual):
            plan = fused_plan(
                input, weight, bias, scale, residual, stride, padding, dilation, groups,
                activation=activation, residual_after_activation=residual_after_activation,
                precision=precision, backend=backend, windows=windows, config=config,
            )  # fmt: skip
            return plan.fused(input, weight, bias, scale, residual)
    else:
        input, weight, bias, residual = autocast_inputs(input, weight, bias, residual)
        if not _records_grad(input, weight, bias, scale, residual):
            params = _params_of_fused_op(input, weight, stride, padding, dilation, groups,
                                         precision, backend, windows)  # fmt: skip
            if params is not None:
                x = input.unsqueeze(0) if input.dim() == 3 else input
                r = residual.unsqueeze(0) if input.dim() == 3 and residual is not None else residual
                y = conv2d_fused_op(
                    x, weight, bias, scale, r, list(params.stride), list(params.padding),
                    list(params.dilation), params.groups, activation, residual_after_activation,
                    precision, backend, windows,
                )  # fmt: skip
                return y.squeeze(0) if input.dim() == 3 else y
    return _conv_then_epilogue(
        input, weight, bias, stride, padding, dilation, groups, scale=scale,
        activation=activation, residual=residual,
        residual_after_activation=residual_after_activation, precision=precision,
        backend=backend, windows=windows, config=config,
    )  # fmt: skip


def _no_epilogue(scale, activation, residual, residual_after_activation) -> bool:
    """Whether `conv2d_fused`'s epilogue arguments are all their defaults: a plain conv2d."""
    return (scale is None and activation is None and residual is None
            and residual_after_activation is False)  # fmt: skip


def _records_grad(*tensors) -> bool:
    """Whether autograd would record a graph through any of `tensors`."""
    return torch.is_grad_enabled() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors
    )


def _conv_then_epilogue(input, weight, bias, stride, padding, dilation, groups, *, scale,
                        activation, residual, residual_after_activation, precision, backend,
                        windows, config) -> torch.Tensor:  # fmt: skip
    """`conv2d_fused` as `conv2d` and then the epilogue in PyTorch ops: differentiable and
    traceable. Checks the arguments as a plan would."""
    epilogue = epilogue_of(scale, activation, residual, residual_after_activation)
    check_tensor("input", input, dims=(3, 4))
    check_tensor("weight", weight, dims=(4,))
    if bias is not None:
        check_tensor("bias", bias, dims=(1,))
    params = conv_params(stride, padding, dilation, groups, kernel_size=tuple(weight.shape[2:]))
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    check_epilogue_backend(backend, epilogue)
    real = resolve_backend(backend, x.device, x.dtype)
    dtypes = SUPPORTED_DTYPES + ((torch.float64,) if real == "reference" else ())
    check_conv_args(x, weight, bias, params, dtypes=dtypes)
    shape = (x.shape[0], weight.shape[0], *params.output_size(*x.shape[2:], *weight.shape[2:]))
    check_tensors(epilogue, scale, residual, output_shape=shape[1:] if unbatched else shape,
                  dtype=x.dtype, device=x.device)  # fmt: skip
    if config is not None:
        check_takes_epilogue(pinned_variant(config, windows), epilogue)
    acc = conv2d(x, weight, None, stride, padding, dilation, groups, precision=precision,
                 backend=backend, windows=windows, config=config)  # fmt: skip
    if unbatched and residual is not None:
        residual = residual.unsqueeze(0)
    y = apply(acc, epilogue, scale=scale, bias=bias, residual=residual)
    fmt = torch.channels_last if output_channels_last(x, weight) else torch.contiguous_format
    y = y.contiguous(memory_format=fmt)
    return y.squeeze(0) if unbatched else y


def _params_of_fused_op(input, weight, stride, padding, dilation, groups, precision,
                        backend: str, windows: str | None):  # fmt: skip
    """A traced `conv2d_fused` call (no gradients recorded) is the fused operator wherever
    an im2win kernel would run it: its parsed geometry then, else None (PyTorch's
    convolution and the epilogue in PyTorch ops, which the compiler fuses with their
    neighbours, as in the stock model)."""
    if not (isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor)):
        return None  # for _conv_then_epilogue's checks to name
    if input.dim() not in (3, 4) or weight.dim() != 4:
        return None
    params = conv_params(stride, padding, dilation, groups, kernel_size=tuple(weight.shape[2:]))
    if backend == "auto" and windows is None and input.is_cuda:
        math = MathMode.of(input.dtype, precision)
        taps = weight.shape[2] * weight.shape[3]
        strips = strips_would_serve(input, weight, params, math)
        if hands_to_aten(math, is_channels_last(input), input.shape[-3], params.groups, taps,
                         fused=True, strips=strips):  # fmt: skip
            return None
    return params


def _traced_as_aten(input, params, backend: str, windows: str | None) -> bool:
    """Under `torch.compile`, a 16-bit GPU layer that `backend='auto'` would hand to PyTorch's
    convolution is traced as one, so the compiler treats it as in the stock model (fuses
    around it, picks its algorithm). fp32 keeps the operator: it sets cuDNN's fp32 mode."""
    return (
        torch.compiler.is_compiling()
        and backend == "auto"
        and windows is None
        and input.is_cuda
        and input.dtype in (torch.float16, torch.bfloat16)
        and not torch._C._is_any_autocast_enabled()
        and params.symmetric_padding is not None
        and prefers_aten(input.shape[-3], params.groups)
    )


def runs_direct(input) -> bool:
    """Whether a call may run its plan straight, outside the dispatcher (autocast applied
    here): a plain tensor, and nothing that must see the operator (tracing, functorch,
    dispatch modes)."""
    return (
        type(input) is torch.Tensor
        and not torch.compiler.is_compiling()
        and not torch._C._are_functorch_transforms_active()
        and _get_current_dispatch_mode() is None
    )


def explain(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    *,
    precision: str | None = None,
    backend: str = "auto",
    windows: str | None = None,
    config: dict | None = None,
    scale: torch.Tensor | None = None,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    residual_after_activation: bool = False,
) -> Conv2dPlan:
    """The plan `conv2d` runs for these arguments (`conv2d_fused`, given any of its scale,
    activation and residual), made and kept as a call would make it (no convolution runs;
    autotuning, when on, times its candidates as a first call would): the problem as the
    library sees it (its epilogue too), the backend, and the kernel variant and config
    chosen (a fused call that records gradients runs PyTorch ops instead: `conv2d_fused`).
    `print(im2win.explain(x, w, padding=1))` shows them."""
    if _no_epilogue(scale, activation, residual, residual_after_activation):
        return conv2d_plan(
            input, weight, bias, stride, padding, dilation, groups,
            precision=precision, backend=backend, windows=windows, config=config,
        )  # fmt: skip
    return fused_plan(
        input, weight, bias, scale, residual, stride, padding, dilation, groups,
        activation=activation, residual_after_activation=residual_after_activation,
        precision=precision, backend=backend, windows=windows, config=config,
    )  # fmt: skip


def transform(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """The im2win tensor of `x` for a `kernel_size` (R, S) filter.

    NCHW input gives [N, C, P, Wp*R], with Win[n, c, p, w*R + r] = Xpad[n, c, p*sh + r*dh, w];
    channels_last input gives [N, P, Wp, R, C]. Wp is the padded width; padded positions are
    zeros. Column stride and dilation are not applied here: they pick where each window
    starts (q*sw) and how it steps (f*dw) inside its strip.
    """
    check_tensor("x", x, dims=(4,))
    if x.dtype not in SUPPORTED_DTYPES + (torch.float64,):
        raise TypeError(f"x dtype must be float32, float16, bfloat16 or float64, got {x.dtype}")
    r, s = as_pair("kernel_size", kernel_size, minimum=1)
    params = conv_params(stride, padding, dilation, 1, kernel_size=(r, s))
    p, q = params.output_size(x.shape[2], x.shape[3], r, s)
    if p <= 0 or q <= 0:
        raise ValueError(
            f"output would be empty: input {tuple(x.shape[2:])} with padding {params.padding} "
            f"is smaller than the dilated kernel {kernel_size}"
        )
    backend = resolve_backend("auto", x.device, x.dtype)
    return window_transform(x, r, params, is_channels_last(x), backend)


def transform_filter(weight: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """The filter re-laid to match the windows: [K, Cg, S, R], or [K, S, R, Cg] for NHWC."""
    check_tensor("weight", weight, dims=(4,))
    return filter_reference(weight, channels_last)
