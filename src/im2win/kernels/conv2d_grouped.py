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

from ..problem import ConvProblem
from .common import apply_epilogue, inside, output_pixel, store_output, window_corner
from .launch import launch
from .sizes import cdiv, strides_or_zeros


@triton.heuristics({
    "HAS_BIAS": lambda args: args["bias_ptr"] is not None,
    "HAS_SCALE": lambda args: args["scale_ptr"] is not None,
})  # fmt: skip
@triton.jit
def _conv2d_fwd_grouped_kernel(
    x_ptr, w_ptr, bias_ptr, scale_ptr, res_ptr, y_ptr,
    N, G, CG, KG, H, W, P, Q, R, S,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wc, stride_wr, stride_ws, stride_b, stride_s,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_rn, stride_rk, stride_rp, stride_rq,
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    ACTIVATION: tl.constexpr,
    RESIDUAL: tl.constexpr,
    DENSE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_CG: tl.constexpr,
    BLOCK_KG: tl.constexpr,
):  # fmt: skip
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] pixel
    g0 = tl.program_id(1) * BLOCK_G
    n, p, q = output_pixel(m, P, Q)
    m_ok = m < N * P * Q
    h0, w0 = window_corner(p, q, stride_h, stride_w, pad_top, pad_left)
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
    acc = tl.zeros([BLOCK_M, BLOCK_G * BLOCK_KG], dtype=tl.float32)  # [BLOCK_M, BLOCK_G*BLOCK_KG]
    for t in range(0, R * S):  # one loop over the taps, so Triton pipelines its loads
        r, f = t // S, t % S
        h = h0 + r * dilation_h
        w = w0 + f * dilation_w
        pixel_in = m_ok & inside(h, w, H, W)
        x_pixel = x_pixel0 + (r * dilation_h * stride_xh + f * dilation_w * stride_xw)
        a = tl.load(x_ptr + x_pixel[:, None] + x_channel[None, :],
                    mask=pixel_in[:, None] & i_ok[None, :], other=0.0)  # fmt: skip
        b = tl.load(w_tile + r * stride_wr + f * stride_ws, mask=block_diagonal, other=0.0)
        # a: [BLOCK_M, BLOCK_G*BLOCK_CG], b: [BLOCK_G*BLOCK_CG, BLOCK_G*BLOCK_KG]
        if UPCAST:  # the interpreter computes 16-bit dots wrongly; fp32 is exact there
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    acc = apply_epilogue(
        acc, n[:, None], p[:, None], q[:, None], k[None, :], o_ok[None, :],
        m_ok[:, None] & o_ok[None, :], bias_ptr, scale_ptr, res_ptr,
        stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
        HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
    )  # fmt: skip
    store_output(y_ptr, acc, n, p, q, k.to(tl.int64), m_ok, o_ok,
                 stride_yn, stride_yk, stride_yp, stride_yq)  # fmt: skip


def conv2d_fwd_grouped(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    problem: ConvProblem,
    *,
    config: dict,
    interpreted: bool,
    slot: dict | None = None,
    scale: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill `y` [N, K, P, Q] (any strides) from `x` [N, C, H, W] (any strides) and weight
    [K, C/groups, R, S] of a call of `problem`'s signature, its epilogue (`scale` [K],
    `residual` shaped as `y`, any strides) fused into the store. `config`: BLOCK_M pixels,
    BLOCK_G groups a tile, BLOCK_CG and BLOCK_KG (Cg and KG rounded up to powers of two),
    num_warps, num_stages. `slot`: see `launch.launch`."""
    n, c, h, w = x.shape
    k, cg, r, s = weight.shape
    _, _, p, q = y.shape
    groups, params = problem.groups, problem.params
    kg = k // groups
    dense = config["BLOCK_CG"] == cg and config["BLOCK_KG"] == kg
    grid = (cdiv(n * p * q, config["BLOCK_M"]), cdiv(groups, config["BLOCK_G"]))
    args = (
        x, weight, bias, scale, residual, y,
        n, groups, cg, kg, h, w, p, q, r, s,
        *x.stride(), *weight.stride(),
        *strides_or_zeros(bias), *strides_or_zeros(scale),
        *y.stride(),
        *strides_or_zeros(residual, 4),
        *params.stride, *problem.pad_top_left, *params.dilation,
    )  # fmt: skip
    meta = dict(PRECISION=problem.math.precision, DENSE=dense,
                UPCAST=interpreted and x.dtype != torch.float32, **problem.epilogue.constexprs,
                **config)  # fmt: skip
    launch(_conv2d_fwd_grouped_kernel, grid, args, meta, slot)
    return y
