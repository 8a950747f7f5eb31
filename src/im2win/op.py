"""`torch.ops.im2win.conv2d`: im2win's convolution as a registered PyTorch operator, and
`torch.ops.im2win.conv2d_fused`, the same with a fused epilogue (for inference).

What PyTorch needs to treat it as one of its own: a fake (meta) implementation for tracing
(`torch.compile`, `torch.export`, FakeTensor), the autograd formula, and autocast rules that
cast as `F.conv2d` does. The operator takes parsed geometry (padding per side) and batched
input; `im2win.conv2d` parses the arguments and calls it whenever PyTorch is tracing,
autocasting or under a dispatch mode, and otherwise runs the same plan directly (the
dispatcher's Python round trip costs more host time than a whole cached call).
"""

from __future__ import annotations

import torch

from .autograd import conv2d_backward
from .epilogue import check_tensors, epilogue_of
from .ops import check_epilogue_backend, resolve_backend
from .params import SUPPORTED_DTYPES, ConvParams, check_conv_args, output_channels_last
from .plan import fused_params_plan, params_plan, traced
from .problem import MathMode


@torch.library.custom_op("im2win::conv2d", mutates_args=())
def conv2d_op(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    precision: str | None,
    backend: str,
    windows: str | None,
) -> torch.Tensor:
    """input [N, C, H, W], weight [K, C/groups, R, S], bias [K] or None; padding (top,
    bottom, left, right); the other arguments as `im2win.conv2d` takes them."""
    params = _params(stride, padding, dilation, groups)
    plan = params_plan(input, weight, bias, params, precision=precision, backend=backend,
                       windows=windows)  # fmt: skip
    traced(plan)
    return plan.launch(input, weight, bias)


@conv2d_op.register_fake
def _(input, weight, bias, stride, padding, dilation, groups, precision, backend, windows):
    return _fake_output(input, weight, bias, _params(stride, padding, dilation, groups), backend)


def _fake_output(input, weight, bias, params: ConvParams, backend: str) -> torch.Tensor:
    """The operators' output for tracing: the arguments checked, an empty tensor of the
    output's shape, dtype and memory format."""
    real = resolve_backend(backend, input.device, input.dtype)
    dtypes = SUPPORTED_DTYPES + ((torch.float64,) if real == "reference" else ())
    check_conv_args(input, weight, bias, params, dtypes=dtypes)
    p, q = params.output_size(*input.shape[2:], *weight.shape[2:])
    fmt = torch.channels_last if output_channels_last(input, weight) else torch.contiguous_format
    shape = (input.shape[0], weight.shape[0], p, q)
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=fmt)


def _setup_context(ctx, inputs, output) -> None:
    input, weight, bias, stride, padding, dilation, groups, precision = inputs[:8]
    ctx.save_for_backward(input, weight)
    ctx.params = _params(stride, padding, dilation, groups)
    ctx.has_bias = bias is not None
    ctx.tf32 = input.dtype == torch.float32 and MathMode.of(input.dtype, precision) is (
        MathMode.TF32
    )


def _backward(ctx, grad_y):
    input, weight = ctx.saved_tensors
    needs = (*ctx.needs_input_grad[:2], ctx.has_bias and ctx.needs_input_grad[2])
    grads = conv2d_backward(grad_y, input, weight, ctx.params, ctx.tf32, needs)
    return *grads, None, None, None, None, None, None, None


conv2d_op.register_autograd(_backward, setup_context=_setup_context)


def _params(stride, padding, dilation, groups) -> ConvParams:
    return ConvParams(tuple(stride), tuple(padding), tuple(dilation), groups)


def autocast_inputs(input, *others):
    """The tensors (input, weight, bias; a fused call's residual too) as autocast gives them
    to conv2d: floating tensors on the input's device type, float64 excepted, in the
    autocast dtype when autocast is on there. Arguments that are not tensors pass through,
    for the checks after to name."""
    if not isinstance(input, torch.Tensor):
        return input, *others
    device_type = input.device.type
    if not torch.is_autocast_enabled(device_type):
        return input, *others
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(_autocast(t, device_type, dtype) for t in (input, *others))


def _autocast(t, device_type: str, dtype: torch.dtype):
    eligible = isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
    return t.to(dtype) if eligible and t.device.type == device_type else t


def _autocast_kernel(device_type: str):
    """Autocast's rule for conv2d on `device_type`, as the operator's Autocast kernel."""
    key = getattr(torch._C.DispatchKey, "Autocast" + torch._C._dispatch_key_for_device(device_type))
    outside_autocast = torch._C.DispatchKeySet(key)

    def kernel(keyset, input, weight, bias, *arguments):
        dtype = torch.get_autocast_dtype(device_type)
        cast = (_autocast(t, device_type, dtype) for t in (input, weight, bias))
        with torch._C._ExcludeDispatchKeyGuard(outside_autocast):
            return conv2d_op(*cast, *arguments)

    return kernel


_LIBRARY = torch.library.Library("im2win", "FRAGMENT")
for _device_type in ("cuda", "cpu"):
    _key = "Autocast" + torch._C._dispatch_key_for_device(_device_type)
    _LIBRARY.impl("conv2d", _autocast_kernel(_device_type), _key, with_keyset=True)


# The fused operator is declared on the library directly, not through
# `torch.library.custom_op`: it records no gradients, so the autograd wrapper and the
# redispatch around the implementation would cost host time on every call for nothing.
_LIBRARY.define(
    "conv2d_fused(Tensor input, Tensor weight, Tensor? bias, Tensor? scale, Tensor? residual, "
    "int[] stride, int[] padding, int[] dilation, int groups, str? activation, "
    "bool residual_after_activation, str? precision, str backend, str? windows) -> Tensor"
)


def _conv2d_fused(input, weight, bias, scale, residual, stride, padding, dilation, groups,
                  activation, residual_after_activation, precision, backend, windows):  # fmt: skip
    """`conv2d_op` with `im2win.conv2d_fused`'s epilogue (scale, activation, residual) in
    its store. For inference: it has no autograd formula, and `conv2d_fused` calls it only
    where no gradient is recorded."""
    params = _params(stride, padding, dilation, groups)
    plan = fused_params_plan(
        input, weight, bias, scale, residual, params, activation=activation,
        residual_after_activation=residual_after_activation, precision=precision,
        backend=backend, windows=windows,
    )  # fmt: skip
    traced(plan)
    return plan.launch(input, weight, bias, scale, residual)


_LIBRARY.impl("conv2d_fused", _conv2d_fused, "CompositeExplicitAutograd")


@torch.library.register_fake("im2win::conv2d_fused", lib=_LIBRARY)
def _(input, weight, bias, scale, residual, stride, padding, dilation, groups, activation,
      residual_after_activation, precision, backend, windows):  # fmt: skip
    params = _params(stride, padding, dilation, groups)
    epilogue = epilogue_of(scale, activation, residual, residual_after_activation)
    check_epilogue_backend(backend, epilogue)
    y = _fake_output(input, weight, bias, params, backend)
    check_tensors(epilogue, scale, residual, output_shape=tuple(y.shape), dtype=y.dtype,
                  device=y.device)  # fmt: skip
    return y


conv2d_fused_op = torch.ops.im2win.conv2d_fused.default
