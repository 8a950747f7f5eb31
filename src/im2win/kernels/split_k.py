"""Split-K: the reduction cut into slices, each slice's sums kept in fp32 and added after.

Slice s of S runs steps [s*ceil(T/S), (s+1)*ceil(T/S)) of the T-step reduction and writes
its partial output, bias-free, into images s*N .. s*N + N - 1 of a workspace [S*N, K, P, Q]
in fp32 and the output's memory format. `finish` sums the slices in a fixed order (no
atomics, so the result does not depend on scheduling), adds the bias, runs the fused
epilogue (`epilogue.py`) and casts into the output, in one launch. How many slices a
problem gets: `variants/splits.py`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..epilogue import NONE, Epilogue, apply
from ..params import memory_format_of
from .common import apply_epilogue, output_pixel
from .launch import launch
from .sizes import cdiv, strides_or_zeros


def workspace(splits: int, y: torch.Tensor) -> torch.Tensor:
    """The slices' fp32 outputs, [splits*N, K, P, Q], laid out as `y` (channels-last or not)."""
    n, k, p, q = y.shape
    layout = memory_format_of(y)
    return torch.empty((splits * n, k, p, q), dtype=torch.float32, device=y.device,
                       memory_format=layout)  # fmt: skip


@triton.jit
def _sum_slices_kernel(
    ws_ptr, bias_ptr, scale_ptr, res_ptr, y_ptr,
    E, K, P, Q, CHANNEL_STRIDE,
    stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
    SPLITS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr,
    ACTIVATION: tl.constexpr, RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
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
    channel = e // CHANNEL_STRIDE % K
    if RESIDUAL != "":  # e without its channel digit is the pixel (n*P + p)*Q + q
        m = (e // (CHANNEL_STRIDE * K) * CHANNEL_STRIDE + e % CHANNEL_STRIDE).to(tl.int64)
        n, p, q = output_pixel(m, P, Q)
        channel = channel.to(tl.int64)  # the residual's offsets may pass 2**31
    else:  # only the residual reads the pixel
        n = e
        p = e
        q = e
    total = apply_epilogue(
        total, n, p, q, channel, ok, ok, bias_ptr, scale_ptr, res_ptr,
        stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
        HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
    )  # fmt: skip
    tl.store(y_ptr + e, total.to(y_ptr.dtype.element_ty), mask=ok)


def finish(ws: torch.Tensor, splits: int, bias: torch.Tensor | None, y: torch.Tensor,
           scale: torch.Tensor | None = None, residual: torch.Tensor | None = None, *,
           epilogue: Epilogue = NONE, slot: dict | None = None) -> torch.Tensor:  # fmt: skip
    """y = the sum of the slices in `ws` (+ bias, then `epilogue` with `scale` and
    `residual`), cast to y's dtype; returns y. One kernel where y is dense in ws's layout
    (as `workspace` made it), PyTorch ops otherwise. `slot`: see `launch.launch` (the
    caller's, kept for one call signature)."""
    n, k, p, q = y.shape
    if ws[:n].stride() != y.stride():
        total = ws.view(splits, *y.shape).sum(0)
        if epilogue.empty:
            if bias is not None:
                total += bias.view(1, -1, 1, 1)
            return y.copy_(total)
        return y.copy_(apply(total, epilogue, scale=scale, bias=bias, residual=residual))
    elements, block = y.numel(), 1024
    channel_stride = 1 if y.stride(1) == 1 else p * q
    args = (
        ws, bias, scale, residual, y, elements, k, p, q, channel_stride,
        *strides_or_zeros(bias), *strides_or_zeros(scale), *strides_or_zeros(residual, 4),
    )  # fmt: skip
    meta = dict(SPLITS=splits, HAS_BIAS=bias is not None, HAS_SCALE=scale is not None,
                **epilogue.constexprs, BLOCK=block)  # fmt: skip
    launch(_sum_slices_kernel, (cdiv(elements, block),), args, meta, slot)
    return y
