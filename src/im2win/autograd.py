"""The backward of every im2win convolution, and the autograd.Function of eager calls.

Forward runs im2win. Backward is, by default, PyTorch's own convolution backward (exact, and
the same on every device). With `IM2WIN_BACKWARD=im2win` it is `grad.py`'s: both gradients
on the im2win kernels (slower than cuDNN on the H200 so far, notes/backward; hence not the
default). The registered operator (`op.py`) uses the same backward through
`torch.library`'s autograd registration.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .cudnn_mode import conv_precision
from .params import ConvParams
from .problem import MathMode


class Conv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, plan):
        """`plan` (plan.Conv2dPlan) holds the problem (geometry, math mode) and the launch."""
        ctx.save_for_backward(x, weight)
        ctx.params = plan.problem.params
        ctx.has_bias = bias is not None
        ctx.tf32 = plan.problem.math is MathMode.TF32
        return plan.launch(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        needs = (*ctx.needs_input_grad[:2], ctx.has_bias)
        grads = conv2d_backward(grad_y, x, weight, ctx.params, ctx.tf32, needs)
        return *grads, None


def conv2d_backward(grad_y, x, weight, params: ConvParams, tf32: bool,
                    needs: tuple[bool, bool, bool]):  # fmt: skip
    """(grad_x, grad_weight, grad_bias) of a batched convolution, each None where `needs`
    (input, weight, bias) says so; TF32 only if the forward used it."""
    if backward_kernels() == "im2win":
        return _im2win_backward(grad_y, x, weight, params, tf32, needs)
    top, bottom, left, right = params.padding
    pads = params.symmetric_padding
    if pads is None:  # aten's backward takes one pad per axis: pad explicitly instead
        x = F.pad(x, (left, right, top, bottom))
    # The backward keeps the forward's precision: cuDNN's TF32 default would not.
    with conv_precision("tf32" if tf32 else "ieee"):
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_y, x, weight,
            [weight.shape[0]] if needs[2] else None,
            list(params.stride), list(pads or (0, 0)), list(params.dilation),
            False, [0, 0], params.groups, list(needs),
        )  # fmt: skip
    if grad_x is not None and pads is None:
        grad_x = grad_x[:, :, top : x.shape[2] - bottom, left : x.shape[3] - right]
    return grad_x, grad_w, grad_b if needs[2] else None


BACKWARDS = ("pytorch", "im2win")


def backward_kernels() -> str:
    """Whose kernels compute the backward: `IM2WIN_BACKWARD`, 'pytorch' (the default) or
    'im2win'."""
    chosen = os.environ.get("IM2WIN_BACKWARD", "pytorch")
    if chosen not in BACKWARDS:
        raise ValueError(f"IM2WIN_BACKWARD must be one of {BACKWARDS}, got {chosen!r}")
    return chosen


def _im2win_backward(grad_y, x, weight, params: ConvParams, tf32: bool,
                     needs: tuple[bool, bool, bool]):  # fmt: skip
    """`conv2d_backward` on the im2win kernels (`grad.py`), in the forward's precision:
    called directly, or, where PyTorch traces (`torch.compile`'s backward graph), through
    their operators."""
    from . import grad  # grad runs im2win.conv2d, whose operator imports this module
    from .functional import runs_direct

    precision = ("tf32" if tf32 else "ieee") if x.dtype == torch.float32 else None
    if runs_direct(x):  # plain tensors, eagerly: the functions, past the dispatcher
        kw = dict(precision=precision, backend="auto")  # float64 (gradcheck): the reference

        def input_grad():
            return grad.input_grad(tuple(x.shape), weight, grad_y, params, **kw)

        def weight_grad(bias: bool):
            return grad.weight_grad(x, tuple(weight.shape), grad_y, params, **kw, bias=bias)

    else:  # traced: the operators, which the trace keeps whole
        geometry = (list(params.stride), list(params.padding), list(params.dilation),
                    params.groups, precision)  # fmt: skip

        def input_grad():
            return grad.input_grad_op(grad_y, weight, list(x.shape), *geometry)

        def weight_grad(bias: bool):
            return grad.weight_grad_op(x, grad_y, list(weight.shape), *geometry, bias)

    grad_x = input_grad() if needs[0] else None
    grad_w = grad_b = None
    if needs[1]:  # the bias gradient comes in the weight gradient's pass
        grad_w, grad_b = weight_grad(needs[2])
        grad_b = grad_b if needs[2] else None  # the operator's is empty when not asked for
    elif needs[2]:
        grad_b = grad_y.sum((0, 2, 3))
    return grad_x, grad_w, grad_b
