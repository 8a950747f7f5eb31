"""The im2win transform on the GPU: input -> window tensor, padding and row dilation folded in.

The output is viewed as `rows x L`: one row ("strip") per (n, c, p) in NCHW, with
L = Wp*R values stored column by column; one row per (n, p) in NHWC, with L = Wp*R*C.
Each program copies a [BLOCK_ROWS, BLOCK_COLS] tile of that matrix: stores are
contiguous along a strip, loads gather the R input rows a strip is made of.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..params import ConvParams
from .common import inside
from .sizes import cdiv, next_power_of_2


@triton.jit
def _im2win_transform_kernel(
    x_ptr, win_ptr,
    N, C, H, W, P, WP, R,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_h, pad_top, pad_left, dilation_h,
    CHANNELS_LAST: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    if CHANNELS_LAST:
        num_rows = N * P
        strip_len = WP * R * C
        n, p = rows // P, rows % P
        row_off = n * stride_xn
        c = cols % C
        w = cols // C // R
        r = cols // C % R
        col_off = c.to(tl.int64) * stride_xc
    else:
        num_rows = N * C * P
        strip_len = WP * R
        p = rows % P
        c = rows // P % C
        n = rows // P // C
        row_off = n * stride_xn + c * stride_xc
        w = cols // R
        r = cols % R
        col_off = tl.zeros([BLOCK_COLS], dtype=tl.int64)
    h = (p * stride_h - pad_top)[:, None] + (r * dilation_h)[None, :]  # [BLOCK_ROWS, BLOCK_COLS]
    w = w - pad_left  # [BLOCK_COLS]
    in_image = inside(h, w[None, :], H, W)
    in_tile = (rows < num_rows)[:, None] & (cols < strip_len)[None, :]
    src = row_off[:, None] + h * stride_xh + (col_off + w.to(tl.int64) * stride_xw)[None, :]
    values = tl.load(x_ptr + src, mask=in_tile & in_image, other=0.0)
    dst = rows[:, None] * strip_len + cols[None, :]
    tl.store(win_ptr + dst, values, mask=in_tile)


def _tile(num_rows: int, strip_len: int, interpreted: bool) -> tuple[int, int]:
    if interpreted:  # few, large programs: the interpreter pays per program
        return 16, max(16, min(1024, next_power_of_2(strip_len)))
    cols = max(32, min(512, next_power_of_2(strip_len)))
    return max(1, 2048 // cols), cols


def im2win_transform(
    x: torch.Tensor, r: int, params: ConvParams, channels_last: bool, interpreted: bool
) -> torch.Tensor:
    """im2win tensor of a 4-D input of any strides: [N, C, P, Wp*R] or [N, P, Wp, R, C]."""
    n, c, h, w = x.shape
    p = params.output_height(h, r)
    wp = params.padded_width(w)
    shape = (n, p, wp, r, c) if channels_last else (n, c, p, wp * r)
    win = torch.empty(shape, dtype=x.dtype, device=x.device)
    if win.numel() == 0:
        return win
    num_rows = n * p if channels_last else n * c * p
    strip_len = win.numel() // num_rows
    block_rows, block_cols = _tile(num_rows, strip_len, interpreted)
    grid = (cdiv(num_rows, block_rows), cdiv(strip_len, block_cols))
    if grid[1] > 65535:
        raise ValueError(f"an im2win strip of {strip_len} elements is too long for one launch")
    _im2win_transform_kernel[grid](
        x, win,
        n, c, h, w, p, wp, r,
        *x.stride(),
        params.stride[0], params.padding[0], params.padding[2], params.dilation[0],
        CHANNELS_LAST=channels_last,
        BLOCK_ROWS=block_rows,
        BLOCK_COLS=block_cols,
    )  # fmt: skip
    return win
