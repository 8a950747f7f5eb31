"""Split-K: the reduction cut into slices, each slice's sums kept in fp32 and added after.

Slice s of S runs steps [s*ceil(T/S), (s+1)*ceil(T/S)) of the T-step reduction and writes
its partial output, bias-free, into images s*N .. s*N + N - 1 of a workspace [S*N, K, P, Q]
in fp32 and the output's memory format. `finish` sums the slices in a fixed order (no
atomics, so the result does not depend on scheduling), adds the bias and casts into the
output, in one launch. How many slices a problem gets: `variants/splits.py`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..params import is_channels_last
from .common import channel_bias
from .sizes import cdiv


def workspace(splits: int, y: torch.Tensor) -> torch.Tensor:
    """The slices' fp32 outputs, [splits*N, K, P, Q], laid out as `y` (channels-last or not)."""
    n, k, p, q = y.shape
    layout = torch.channels_last if is_channels_last(y) else torch.contiguous_format
    return torch.empty((splits * n, k, p, q), dtype=torch.float32, device=y.device,
                       memory_format=layout)  # fmt: skip


@triton.jit
def _sum_slices_kernel(
    ws_ptr, bias_ptr, y_ptr, E, K, CHANNEL_STRIDE, stride_b,
    SPLITS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # Element e of every slice and of y in storage order (both laid out alike); its channel
    # is (e // CHANNEL_STRIDE) % K: CHANNEL_STRIDE is P*Q in NCHW, 1 in channels-last.
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    ok = e < E
    total = tl.zeros([BLOCK], dtype=tl.float32)
    slice_ptr = ws_ptr + e
    for _ in tl.static_range(SPLITS):  # pointers step by E in 64 bits: SPLITS * E may not fit 32
        total += tl.load(slice_ptr, mask=ok, other=0.0)
        slice_ptr += E
    if HAS_BIAS:
        total += channel_bias(bias_ptr, e // CHANNEL_STRIDE % K, ok, stride_b)
    tl.store(y_ptr + e, total.to(y_ptr.dtype.element_ty), mask=ok)


def finish(ws: torch.Tensor, splits: int, bias: torch.Tensor | None, y: torch.Tensor):
    """y = the sum of the slices in `ws` (+ bias), cast to y's dtype; returns y. One kernel
    where y is dense in ws's layout (as `workspace` made it), PyTorch ops otherwise."""
    n, k, p, q = y.shape
    if ws[:n].stride() != y.stride():
        total = ws.view(splits, *y.shape).sum(0)
        if bias is not None:
            total += bias.view(1, -1, 1, 1)
        return y.copy_(total)
    elements, block = y.numel(), 1024
    channel_stride = 1 if y.stride(1) == 1 else p * q
    _sum_slices_kernel[(cdiv(elements, block),)](
        ws, bias, y, elements, k, channel_stride, 0 if bias is None else bias.stride(0),
        SPLITS=splits, HAS_BIAS=bias is not None, BLOCK=block,
    )  # fmt: skip
    return y
