"""NCHW -> channels-last copy: the staging step of `variants/staged.py`.

Each program moves a [BLOCK_C, BLOCK_HW] tile of one image: loads run along pixels (NCHW's
contiguous axis), stores along channels (channels-last's), and Triton transposes the tile
through shared memory in between. Twice as fast as PyTorch's `copy_` between the layouts in
16-bit (notes/tuning.md, staging NCHW inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import launch
from .sizes import cdiv, next_power_of_2

MAX_COPY_IMAGES = 65535  # one grid row an image: CUDA's limit on grid.z


@triton.jit
def _to_channels_last_kernel(
    x_ptr, y_ptr,
    C, W, HW,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn,
    FLAT_HW: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(2).to(tl.int64)
    hw = tl.program_id(0) * BLOCK_HW + tl.arange(0, BLOCK_HW)  # [BLOCK_HW] pixel h*W + w
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    if FLAT_HW:  # rows of the image back to back: the pixel index is the offset
        pixel = hw.to(tl.int64) * stride_xw
    else:
        pixel = (hw // W).to(tl.int64) * stride_xh + (hw % W).to(tl.int64) * stride_xw
    ok = (c < C)[:, None] & (hw < HW)[None, :]
    src = n * stride_xn + (c.to(tl.int64) * stride_xc)[:, None] + pixel[None, :]
    tile = tl.load(x_ptr + src, mask=ok)  # [BLOCK_C, BLOCK_HW]
    dst = n * stride_yn + hw.to(tl.int64)[:, None] * C + c[None, :]  # channels-last: (h*W+w)*C+c
    tl.store(y_ptr + dst, tl.trans(tile), mask=tl.trans(ok))


def copy_to_channels_last(
    x: torch.Tensor, out: torch.Tensor, *, interpreted: bool, slot: dict | None = None
) -> torch.Tensor:
    """Copy `x` [N, C, H, W] (any strides) into `out`, a channels-last tensor of its shape
    and dtype, dense per image (torch.empty(..., memory_format=torch.channels_last) or a
    batch slice of one). `slot`: see `launch.launch`."""
    n, c, h, w = x.shape
    if out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(f"out must match x: got {tuple(out.shape)} {out.dtype} for "
                         f"{tuple(x.shape)} {x.dtype}")  # fmt: skip
    if out.stride()[1:] != (1, w * c, c):
        raise ValueError(
            f"out must be channels-last and dense per image, got strides {out.stride()}"
        )
    if x.numel() == 0:
        return out
    if n > MAX_COPY_IMAGES:
        raise ValueError(f"copy_to_channels_last copies at most {MAX_COPY_IMAGES} images, got {n}")
    block_c = max(16, min(64, next_power_of_2(c)))
    block_hw = 256 if interpreted else 64  # the interpreter pays per program
    sn, sc, sh, sw = x.stride()
    grid = (cdiv(h * w, block_hw), cdiv(c, block_c), n)
    args = (x, out, c, w, h * w, sn, sc, sh, sw, out.stride(0))
    meta = dict(FLAT_HW=sh == w * sw, BLOCK_C=block_c, BLOCK_HW=block_hw, num_warps=4)
    launch(_to_channels_last_kernel, grid, args, meta, slot)
    return out
