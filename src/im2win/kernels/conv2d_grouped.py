"""Grouped forward convolution with few channels a group, several groups to a tensor-core tile.

A group of Cg input and KG output channels is a GEMM too small for a tile: with Cg = 8 its
whole tap is 8 terms, and the implicit-GEMM kernels pad it to a block and run one group a
program. Here a program takes BLOCK_G groups at once: at each tap (r, f) the windows of
their BLOCK_G*Cg channels are one [BLOCK_M, BLOCK_G*Cg] tile of the input (contiguous
channels in NHWC), and the filter is the block-diagonal [BLOCK_G*Cg, BLOCK_G*KG] matrix
whose diagonal blocks are the groups' filters, zeros elsewhere, so that one `tl.dot` gives
every group its own outputs:

    Y[m, (g, j)] = sum_{r, f} sum_{(g', c)} X[m @ tap (r, f), (g', c)] * B_rf[(g', c), (g, j)]
    B_rf[(g', c), (g, j)] = W[g*KG + j, c, r, f] if g' == g else 0

The tensor cores do BLOCK_G times the useful work, which they can afford where CUDA-core
FMA on the same layer (a depthwise 3x3 reads 9 values per 9 products) is bound by loads.
Depthwise (Cg = KG = 1) is the case BLOCK_G = 16. Tensor-core tiers only (16-bit, tf32):
an fp32-IEEE result needs FMA (`conv2d_dw.py`, `conv2d_fwd.py`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import launch
from .sizes import cdiv, next_power_of_2

MAX_GROUP_CHANNELS = 16  # Cg and KG up to this pack; wider groups fill GEMM tiles themselves
DEPTHWISE_MAX_PIXELS = 56 * 56  # output pixels an image up to which depthwise packs (NCHW)


@triton.heuristics({"HAS_BIAS": lambda args: args["bias_ptr"] is not None})
@triton.jit
def _conv2d_fwd_grouped_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    N, G, CG, KG, H, W, P, Q, R, S,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wc, stride_wr, stride_ws, stride_b,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    DENSE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_CG: tl.constexpr,
    BLOCK_KG: tl.constexpr,
):  # fmt: skip
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] pixel
    g0 = tl.program_id(1) * BLOCK_G
    n, pq = m // (P * Q), m % (P * Q)
    p, q = pq // Q, pq % Q
    m_ok = m < N * P * Q
    h0 = p * stride_h - pad_top
    w0 = q * stride_w - pad_left
    x_pixel0 = n * stride_xn + h0 * stride_xh + w0 * stride_xw
    # Reduction lanes i = (group, input channel), output lanes o = (group, output channel).
    i = tl.arange(0, BLOCK_G * BLOCK_CG)
    gi, ci = g0 + i // BLOCK_CG, i % BLOCK_CG
    i_ok = (gi < G) & (ci < CG)
    o = tl.arange(0, BLOCK_G * BLOCK_KG)
    go, jo = g0 + o // BLOCK_KG, o % BLOCK_KG
    o_ok = (go < G) & (jo < KG)
    if DENSE:  # Cg, KG powers of two: a tile's channels are one run (loads can vectorize)
        x_channel = (g0 * CG + i).to(tl.int64) * stride_xc
        k = g0 * KG + o
    else:
        x_channel = (gi * CG + ci).to(tl.int64) * stride_xc
        k = go * KG + jo  # [BLOCK_G*BLOCK_KG] output channel
    block_diagonal = (gi[:, None] == go[None, :]) & i_ok[:, None] & o_ok[None, :]
    w_tile = w_ptr + ci[:, None] * stride_wc + k[None, :] * stride_wk
    acc = tl.zeros([BLOCK_M, BLOCK_G * BLOCK_KG], dtype=tl.float32)
    for t in range(0, R * S):  # one loop over the taps, so Triton pipelines its loads
        r, f = t // S, t % S
        h = h0 + r * dilation_h
        w = w0 + f * dilation_w
        pixel_in = m_ok & (h >= 0) & (h < H) & (w >= 0) & (w < W)
        x_pixel = x_pixel0 + (r * dilation_h * stride_xh + f * dilation_w * stride_xw)
        a = tl.load(x_ptr + x_pixel[:, None] + x_channel[None, :],
                    mask=pixel_in[:, None] & i_ok[None, :], other=0.0)  # fmt: skip
        b = tl.load(w_tile + r * stride_wr + f * stride_ws, mask=block_diagonal, other=0.0)
        if UPCAST:  # the interpreter computes 16-bit dots wrongly; fp32 is exact there
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + k * stride_b, mask=o_ok, other=0.0).to(tl.float32)[None, :]
    y_pixel = n * stride_yn + p * stride_yp + q * stride_yq
    y_off = y_pixel[:, None] + (k.to(tl.int64) * stride_yk)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & o_ok[None, :])


def grouped_supported(
    groups: int,
    channels_per_group: int,
    outputs_per_group: int,
    output_pixels: int,
    *,
    tensor_cores: bool,
    channels_last: bool,
) -> bool:
    """Where the library packs groups: a tensor-core tier, groups of at most 16 input and 16
    output channels; depthwise (one input channel a group) only in NCHW on outputs of at
    most 56x56 pixels an image.

    NOTE: measured on H100 (2026-11-27 session 9, results/h100-issue4/exploration/grouped,
    batch 128, kernel time, against the path each layer took before): groups of 4, 8 and 16
    channels 1.25-8.4x in bf16 and tf32, both layouts (grouped32 NCHW bf16 6.4 -> 17.8
    TFLOPS, cuDNN 18.3); depthwise NCHW 1.8-3.2x on outputs of 14x14 to 56x56 (dw7x7-56
    bf16 0.98 -> 3.15, cuDNN 2.86) but 0.71x (bf16) and 0.19x (tf32) on 112x112, and in
    NHWC 0.79-1.40x in bf16 (1.02-1.18x in tf32): there the FMA kernel (conv2d_dw.py) stays.
    """
    few = max(channels_per_group, outputs_per_group) <= MAX_GROUP_CHANNELS
    if not (tensor_cores and groups > 1 and few):
        return False
    if channels_per_group == 1:
        return not channels_last and output_pixels <= DEPTHWISE_MAX_PIXELS
    return True


def grouped_tiles(channels_per_group: int, outputs_per_group: int) -> dict:
    """The fewest groups to a tile whose input and output channels both fill the 16 a
    tensor-core step needs (the tile computes BLOCK_G times the useful products)."""
    block_cg, block_kg = next_power_of_2(channels_per_group), next_power_of_2(outputs_per_group)
    block_g = max(16 // block_cg, 16 // block_kg, 1)
    return dict(BLOCK_M=128, BLOCK_G=block_g, BLOCK_CG=block_cg, BLOCK_KG=block_kg,
                num_warps=4, num_stages=3)  # fmt: skip


def conv2d_fwd_grouped(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    *,
    groups: int,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pad_top_left: tuple[int, int],
    precision: str,
    interpreted: bool,
    config: dict | None = None,
    slot: dict | None = None,
) -> torch.Tensor:
    """Fill `y` [N, K, P, Q] (any strides) from `x` [N, C, H, W] (any strides) and weight
    [K, C/groups, R, S]. `config`: BLOCK_M, BLOCK_G, num_warps, num_stages (defaults:
    `grouped_tiles`). `slot`: see `launch.launch`."""
    n, c, h, w = x.shape
    k, cg, r, s = weight.shape
    _, _, p, q = y.shape
    kg = k // groups
    tiles = grouped_tiles(cg, kg) | (config or {})
    dense = tiles["BLOCK_CG"] == cg and tiles["BLOCK_KG"] == kg
    grid = (cdiv(n * p * q, tiles["BLOCK_M"]), cdiv(groups, tiles["BLOCK_G"]))
    args = (
        x, weight, bias, y,
        n, groups, cg, kg, h, w, p, q, r, s,
        *x.stride(), *weight.stride(),
        0 if bias is None else bias.stride(0),
        *y.stride(),
        *stride, *pad_top_left, *dilation,
    )  # fmt: skip
    meta = dict(PRECISION=precision, UPCAST=interpreted and x.dtype != torch.float32,
                DENSE=dense, **tiles)  # fmt: skip
    launch(_conv2d_fwd_grouped_kernel, grid, args, meta, slot)
    return y
