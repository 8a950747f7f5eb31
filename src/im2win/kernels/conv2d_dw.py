"""Depthwise forward convolution (groups == C, one input channel per group) by direct FMA.

A depthwise window has no channel reduction: each output is R*S products of one channel,
so there is no GEMM for tensor cores or window tiles to feed, and the implicit-GEMM kernels
waste all but one column of every tile on it. Here each program owns a tile of output
pixels x output channels and walks the R*S taps, loading one input value per (pixel,
channel) and tap and accumulating in fp32 (so every tier is fp32-accurate arithmetic):

    Y[n, k, p, q] = sum_{r, f} X[n, k // M, p*sh + r*dh - top, q*sw + f*dw - left] * W[k, 0, r, f]

with M = K / C output channels per input channel. Threads run along the layout's contiguous
dimension: NCHW tiles take BLOCK_M flat output pixels, channels-last ones BLOCK_Q columns
of one output row, their taps' weights read taps-major (`taps_major`: a tap's channels one
vector load a thread). The fused epilogue (`epilogue.py`) runs on the tile before its one
store.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..problem import ConvProblem
from .common import apply_epilogue, inside, output_pixel, window_corner
from .launch import launch
from .sizes import cdiv, strides_or_zeros


@triton.heuristics({
    "HAS_BIAS": lambda args: args["bias_ptr"] is not None,
    "HAS_SCALE": lambda args: args["scale_ptr"] is not None,
})  # fmt: skip
@triton.jit
def _conv2d_fwd_dw_kernel(
    x_ptr, w_ptr, bias_ptr, scale_ptr, res_ptr, y_ptr,
    N, K, H, W, P, Q, R, S, MULT,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wr, stride_ws, stride_b, stride_s,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_rn, stride_rk, stride_rp, stride_rq,
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
    HAS_BIAS: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    ACTIVATION: tl.constexpr,
    RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """NCHW tiles [BLOCK_C channels, BLOCK_M flat output pixels]: threads run along the
    pixels, the layout's contiguous dimension."""
    pid_m = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] output pixel
    k = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C] output channel
    n, p, q = output_pixel(m, P, Q)
    m_ok, k_ok = m < N * P * Q, k < K
    h0, w0 = window_corner(p, q, stride_h, stride_w, pad_top, pad_left)
    x_pixel0 = n * stride_xn
    x_channel = (k // MULT) * stride_xc
    acc = tl.zeros([BLOCK_C, BLOCK_M], tl.float32)
    for r in range(0, R):
        h = h0 + r * dilation_h
        for f in range(0, S):
            w = w0 + f * dilation_w
            pixel_in = m_ok & inside(h, w, H, W)
            x_off = x_channel[:, None] + (x_pixel0 + h * stride_xh + w * stride_xw)[None, :]
            x = tl.load(x_ptr + x_off, mask=k_ok[:, None] & pixel_in[None, :], other=0.0)
            tap = tl.load(w_ptr + k * stride_wk + r * stride_wr + f * stride_ws, mask=k_ok)
            acc += x.to(tl.float32) * tap.to(tl.float32)[:, None]
    y_ok = k_ok[:, None] & m_ok[None, :]
    acc = apply_epilogue(
        acc, n[None, :], p[None, :], q[None, :], k[:, None], k_ok[:, None], y_ok,
        bias_ptr, scale_ptr, res_ptr, stride_b, stride_s,
        stride_rn, stride_rk, stride_rp, stride_rq,
        HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
    )  # fmt: skip
    y_off = (k * stride_yk)[:, None] + (n * stride_yn + p * stride_yp + q * stride_yq)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_ok)


@triton.jit
def _filter_row(
    acc, x_image, w_ptr, r, p, w0, q_ok, k, k_ok, x_channel, H, W,
    stride_xh, stride_xw, stride_wk, stride_wr, stride_ws,
    stride_h, pad_top, dilation_h, dilation_w, S: tl.constexpr,
):  # fmt: skip
    """acc [BLOCK_Q, BLOCK_C] plus the S taps of filter row r over output row p's tile (its
    loads unrolled, so they are in flight together and their overlapping windows meet in
    L1)."""
    h = p * stride_h - pad_top + r * dilation_h
    x_row = x_image + h.to(tl.int64) * stride_xh
    row_ok = (h >= 0) & (h < H)
    for f in tl.static_range(S):
        w = w0 + f * dilation_w
        pixel_ok = q_ok & (w >= 0) & (w < W) & row_ok
        x = tl.load(
            x_row + (w * stride_xw)[:, None] + x_channel[None, :],
            mask=pixel_ok[:, None] & k_ok[None, :], other=0.0,
        )  # fmt: skip
        # The tap's weights as a whole tile, so the load takes the input's layout (each
        # thread its own channels, one vector of a taps-major weight) where a [BLOCK_C]
        # vector's layout would differ and cost a shared-memory exchange and barriers a tap.
        tap_ptr = w_ptr + r * stride_wr + f * stride_ws + k * stride_wk
        tap = tl.load(tl.broadcast_to(tap_ptr[None, :], acc.shape), mask=k_ok[None, :])
        acc += x.to(tl.float32) * tap.to(tl.float32)
    return acc


@triton.heuristics({
    "HAS_BIAS": lambda args: args["bias_ptr"] is not None,
    "HAS_SCALE": lambda args: args["scale_ptr"] is not None,
})  # fmt: skip
@triton.jit
def _conv2d_fwd_dw_rows_kernel(
    x_ptr, w_ptr, bias_ptr, scale_ptr, res_ptr, y_ptr,
    K, H, W, P, Q, MULT,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wr, stride_ws, stride_b, stride_s,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_rn, stride_rk, stride_rp, stride_rq,
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
    R: tl.constexpr,
    S: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    ACTIVATION: tl.constexpr,
    RESIDUAL: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_C: tl.constexpr,
    UNROLL_ROWS: tl.constexpr,
):  # fmt: skip
    """Channels-last tiles along one output row: BLOCK_Q pixels of row p of image n x
    BLOCK_C channels. The image and row are one per program, so the taps' row tests and
    the tile's base address are scalars (int64) and the per-element offsets stay int32
    (one row of the layout: W * C elements). UNROLL_ROWS unrolls the filter's rows as well
    as its columns: more loads in flight, and every tap's weights in registers at once."""
    pid = tl.program_id(0)
    tiles_q = tl.cdiv(Q, BLOCK_Q)
    row, q_tile = pid // tiles_q, pid % tiles_q
    n, p = row // P, row % P
    q = q_tile * BLOCK_Q + tl.arange(0, BLOCK_Q)  # [BLOCK_Q] output column
    k = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C] output channel
    q_ok, k_ok = q < Q, k < K
    x_image = x_ptr + n.to(tl.int64) * stride_xn
    x_channel = (k // MULT) * stride_xc
    w0 = q * stride_w - pad_left
    acc = tl.zeros([BLOCK_Q, BLOCK_C], tl.float32)
    if UNROLL_ROWS:
        for r in tl.static_range(R):
            acc = _filter_row(acc, x_image, w_ptr, r, p, w0, q_ok, k, k_ok, x_channel, H, W,
                              stride_xh, stride_xw, stride_wk, stride_wr, stride_ws,
                              stride_h, pad_top, dilation_h, dilation_w, S)  # fmt: skip
    else:
        for r in range(R):
            acc = _filter_row(acc, x_image, w_ptr, r, p, w0, q_ok, k, k_ok, x_channel, H, W,
                              stride_xh, stride_xw, stride_wk, stride_wr, stride_ws,
                              stride_h, pad_top, dilation_h, dilation_w, S)  # fmt: skip
    y_ok = q_ok[:, None] & k_ok[None, :]
    acc = apply_epilogue(
        acc, n.to(tl.int64), p, q[:, None], k[None, :], k_ok[None, :], y_ok,
        bias_ptr, scale_ptr, res_ptr, stride_b, stride_s,
        stride_rn, stride_rk, stride_rp, stride_rq,
        HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
    )  # fmt: skip
    y_row = y_ptr + n.to(tl.int64) * stride_yn + p.to(tl.int64) * stride_yp
    y_off = (q * stride_yq)[:, None] + (k * stride_yk)[None, :]
    tl.store(y_row + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_ok)


def unrolls_rows(element_size: int) -> bool:
    """Whether the row kernel unrolls the filter's rows by default: for 4-byte elements. A
    16-byte load holds 8 channels of a 2-byte type, twice a 4-byte one's, so each thread
    keeps twice the taps' weights: unrolled, a bf16 3x3 tile of 32 x 32 took 100 registers
    a thread against fp32's 56 and ran at 20% occupancy against 51% (Nsight Compute, H200;
    notes/depthwise/). Measured with each channel's weight loaded alone; read taps-major,
    that tile takes 72 registers unrolled and 40 rolled (ptxas): the rule awaits a new
    timing."""
    return element_size >= 4


def taps_major(weight: torch.Tensor) -> torch.Tensor:
    """`weight` [K, 1, R, S] laid out with each tap's K channels consecutive (strides
    (1, R*S*K, S*K, K)), as the row kernel reads it: a tap's channels one vector load a
    thread. A copy (K*R*S elements) unless it is laid out so already."""
    if weight.stride(0) == 1 or weight.shape[0] == 1:
        return weight
    return weight.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)


def conv2d_fwd_dw(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    problem: ConvProblem,
    *,
    config: dict,
    slot: dict | None = None,
    scale: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill `y` [N, K, P, Q] (any strides) from `x` [N, C, H, W] and weight [K, 1, R, S] of a
    call of `problem`'s signature, its epilogue (`scale` [K], `residual` shaped as `y`, any
    strides) fused into the store.

    `config`: the row tiles of channels-last tensors (BLOCK_Q output columns x BLOCK_C
    channels, optionally UNROLL_ROWS, default `unrolls_rows`; the weight read from its
    `taps_major` layout) or the flat tiles of NCHW ones (BLOCK_M pixels x BLOCK_C
    channels); num_warps. `slot`: see `launch.launch`.
    """
    n, c, h, w = x.shape
    k, _, r, s = weight.shape
    _, _, p, q = y.shape
    params = problem.params
    meta = dict(**problem.epilogue.constexprs, **config)
    if "BLOCK_Q" in config:
        kernel = _conv2d_fwd_dw_rows_kernel
        weight = taps_major(weight)
        grid = (n * p * cdiv(q, config["BLOCK_Q"]), cdiv(k, config["BLOCK_C"]))
        sizes = (k, h, w, p, q, k // c)
        meta.update(R=r, S=s)
        meta.setdefault("UNROLL_ROWS", unrolls_rows(x.element_size()))
    else:
        kernel = _conv2d_fwd_dw_kernel
        grid = (cdiv(n * p * q, config["BLOCK_M"]), cdiv(k, config["BLOCK_C"]))
        sizes = (n, k, h, w, p, q, r, s, k // c)
    args = (
        x, weight, bias, scale, residual, y,
        *sizes,
        *x.stride(),
        weight.stride(0), weight.stride(2), weight.stride(3),
        *strides_or_zeros(bias), *strides_or_zeros(scale),
        *y.stride(),
        *strides_or_zeros(residual, 4),
        *params.stride, *problem.pad_top_left, *params.dilation,
    )  # fmt: skip
    launch(kernel, grid, args, meta, slot)
    return y
