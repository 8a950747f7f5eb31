"""Forward ops on validated arguments: pick a backend, transform, launch. No autograd here.

Backends:
  "triton"    the im2win Triton kernels (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1)
  "reference" the plain-PyTorch definition in `reference.py` (any device; fp32 accumulation)
  "auto"      "triton" where it can run, else "reference"
"""

from __future__ import annotations

import torch

from . import kernels
from .params import ConvParams
from .reference import conv2d_reference, filter_reference, transform_reference

BACKENDS = ("auto", "triton", "reference")


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    triton_ok = device.type == "cuda" or (device.type == "cpu" and kernels.interpreted())
    if backend == "auto":
        return "triton" if triton_ok else "reference"
    if backend == "triton" and not triton_ok:
        raise ValueError(
            f"backend='triton' needs a CUDA tensor, or TRITON_INTERPRET=1 set before import "
            f"for CPU tensors; got a tensor on {device}"
        )
    return backend


def window_transform(x, r: int, params: ConvParams, channels_last: bool, backend: str):
    """The im2win tensor of a 4-D input: [N, C, P, Wp*R] or [N, P, Wp, R, C]."""
    if backend == "reference":
        return transform_reference(x, r, params, channels_last)
    return kernels.im2win_transform(x, r, params, channels_last, kernels.interpreted())


def conv2d_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    params: ConvParams,
    *,
    channels_last: bool,
    precision: str,
    backend: str,
    config: dict | None = None,
) -> torch.Tensor:
    """Convolution of a non-empty 4-D input; the output takes the input's memory format."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if backend == "reference":
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        up = [t if t is None else t.to(compute) for t in (x, weight, bias)]
        y = conv2d_reference(*up, params)
        return y.to(dtype=x.dtype, memory_format=memory_format)

    n, _, h, w = x.shape
    k, cg, r, s = weight.shape
    p, q = params.output_size(h, w, r, s)
    interpreted = kernels.interpreted()
    win = kernels.im2win_transform(x, r, params, channels_last, interpreted)
    if channels_last:  # [N, P, Wp, R, C]
        sn, sp, sw, sr, sc = win.stride()
    else:  # [N, C, P, Wp*R]
        sn, sc, sp, _ = win.stride()
        sw, sr = r, 1
    filt = filter_reference(weight, channels_last).view(k, cg * s * r)
    y = torch.empty((n, k, p, q), dtype=x.dtype, device=x.device, memory_format=memory_format)
    if config is None:
        config = kernels.conv2d_fwd_config(n * p * q, k // params.groups, cg * r * s, x.dtype,
                                           interpreted)  # fmt: skip
    return kernels.conv2d_fwd(
        win, (sn, sc, sp, sw, sr), filt, bias, y,
        r=r, s=s, groups=params.groups,
        stride_w=params.stride[1], dilation_w=params.dilation[1],
        channels_last=channels_last, precision=precision,
        config=config, interpreted=interpreted,
    )  # fmt: skip
