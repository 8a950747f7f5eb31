"""The thin autograd layer between the ops and the public functions.

Forward runs im2win. Backward is, for now, PyTorch's own convolution backward (exact, and
the same on every device); im2win backward kernels, whose weight gradient can reuse the
forward's window tensor, are on the roadmap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
        top, bottom, left, right = ctx.params.padding
        pads = ctx.params.symmetric_padding
        if pads is None:  # aten's backward takes one pad per axis: pad explicitly instead
            x = F.pad(x, (left, right, top, bottom))
        cudnn = torch.backends.cudnn
        # The backward keeps the forward's precision: cuDNN's TF32 default would not.
        flags = cudnn.flags(
            enabled=cudnn.enabled, benchmark=cudnn.benchmark,
            deterministic=cudnn.deterministic, allow_tf32=ctx.tf32,
        )  # fmt: skip
        with flags:
            grad_x, grad_w, grad_b = _convolution_backward(grad_y, x, weight, ctx, pads or (0, 0))
        if grad_x is not None and pads is None:
            grad_x = grad_x[:, :, top : x.shape[2] - bottom, left : x.shape[3] - right]
        return grad_x, grad_w, grad_b if ctx.has_bias else None, None


def _convolution_backward(grad_y, x, weight, ctx, pads: tuple[int, int]):
    return torch.ops.aten.convolution_backward(
        grad_y, x, weight,
        [weight.shape[0]] if ctx.has_bias else None,
        list(ctx.params.stride),
        list(pads),
        list(ctx.params.dilation),
        False, [0, 0], ctx.params.groups,
        [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias],
    )  # fmt: skip
