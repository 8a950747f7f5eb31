"""The layer bench's backward directions: a layer's input gradient (dgrad) and weight gradient
(wgrad), im2win's (`im2win.grad`, on the im2win kernels) against PyTorch's
`aten.convolution_backward` (cuDNN's pick with cudnn.benchmark), in the same tier and layout.

Each result is checked against float64 autograd through `F.conv2d` on the tier's rounded
operands, as the forward is against a float64 convolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from im2win import grad
from im2win.baselines import Prepared, Unsupported
from im2win.baselines.common import measure_extra_bytes, set_tier_flags
from im2win.ops import resolve_backend
from im2win.params import conv_params

from .methods import im2win_backend
from .tiers import TIERS, Tier

DIRECTIONS = ("fprop", "dgrad", "wgrad")

GradBuilder = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict, Tier, str], Prepared]


@dataclass(frozen=True)
class GradMethod:
    name: str
    build: GradBuilder  # (x, weight, grad_output, conv kwargs, tier, direction)
    backend: Callable[[torch.device], str]  # what actually runs, for the result row
    tiers: tuple[str, ...] = tuple(TIERS)
    output: str = "grad"  # as `methods.Method.output`: what `run()` returns


def _im2win(x, w, dy, conv_kwargs: dict, tier: Tier, direction: str) -> Prepared:
    # backend 'triton': the im2win kernels alone, never PyTorch's own convolution.
    backend = "triton" if resolve_backend("auto", x.device, x.dtype) == "triton" else "auto"
    options = dict(precision=tier.math.precision, backend=backend)
    if direction == "dgrad":
        run = lambda: grad.conv2d_input(x.shape, w, dy, **conv_kwargs, **options)  # noqa: E731
    else:
        run = lambda: grad.conv2d_weight(x, w.shape, dy, **conv_kwargs, **options)  # noqa: E731
    return Prepared("im2win-grad", run, _extra_bytes(run, x.device))


def _torch(x, w, dy, conv_kwargs: dict, tier: Tier, direction: str) -> Prepared:
    if x.device.type != "cuda":
        raise Unsupported("torch-convolution-backward is the CUDA baseline (cuDNN): needs a GPU")
    params = conv_params(**conv_kwargs, kernel_size=tuple(w.shape[2:]))
    pads = params.symmetric_padding
    if pads is None:
        raise Unsupported(f"convolution_backward pads symmetrically, got {params.padding}")
    mask = [direction == "dgrad", direction == "wgrad", False]
    backward = torch.ops.aten.convolution_backward.default

    def run() -> torch.Tensor:
        # The flags are process-wide and part of PyTorch's benchmark cache key: set each call.
        torch.backends.cudnn.benchmark = True
        set_tier_flags(tier.name)
        grads = backward(dy, x, w, None, list(params.stride), list(pads),
                         list(params.dilation), False, [0, 0], params.groups, mask)  # fmt: skip
        return grads[0] if direction == "dgrad" else grads[1]

    run()  # cudnn.benchmark tries its engines on the first call of a shape
    return Prepared("torch-convolution-backward", run, _extra_bytes(run, x.device))


def _extra_bytes(run: Callable[[], torch.Tensor], device: torch.device) -> int:
    """The allocator's peak beyond the gradient, on a GPU (0 elsewhere: nothing to read)."""
    return measure_extra_bytes(run, device) if device.type == "cuda" else 0


GRAD_METHODS: dict[str, GradMethod] = {
    method.name: method
    for method in (
        GradMethod("im2win-grad", _im2win, im2win_backend),
        GradMethod(
            "torch-convolution-backward",
            _torch,
            lambda device: "cudnn" if device.type == "cuda" else "unsupported",
        ),
    )
}


def reference(x, w, dy, conv_kwargs: dict, direction: str) -> torch.Tensor:
    """The float64 gradient of `direction` for the (already rounded) operands."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False  # autotuning fp64 algorithms is slow and useless
    try:
        x64 = x.double().requires_grad_(direction == "dgrad")
        w64 = w.double().requires_grad_(direction == "wgrad")
        with torch.enable_grad():
            F.conv2d(x64, w64, None, **conv_kwargs).backward(dy.double())
        return x64.grad if direction == "dgrad" else w64.grad
    finally:
        torch.backends.cudnn.benchmark = saved
