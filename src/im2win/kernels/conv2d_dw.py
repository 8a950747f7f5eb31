"""Depthwise forward convolution (groups == C, one input channel per group) by direct FMA.

A depthwise window has no channel reduction: each output is R*S products of one channel,
so there is no GEMM for tensor cores or window tiles to feed, and the implicit-GEMM kernels
waste all but one column of every tile on it. Here each program owns BLOCK_M output pixels
x BLOCK_C output channels and walks the R*S taps, loading one input value per (pixel,
channel) and tap and accumulating in fp32 (so every tier is fp32-accurate arithmetic):

    Y[n, k, p, q] = sum_{r, f} X[n, k // M, p*sh + r*dh - top, q*sw + f*dw - left] * W[k, 0, r, f]

with M = K / C output channels per input channel. The tile is laid pixel-major or
channel-major (CHANNELS_LAST) so that the contiguous dimension of the layout is the one
threads walk. The fused epilogue (`epilogue.py`) runs on the tile before its one store.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..problem import ConvProblem
from .common import apply_epilogue, inside, output_pixel, window_corner
from .launch import launch
from .sizes import cdiv, strides_or_zeros


@triton.jit
def _tile(pixel, channel, CHANNELS_LAST: tl.constexpr):
    """Offsets [pixels, channels] (NHWC: channels innermost) or [channels, pixels] (NCHW)."""
    if CHANNELS_LAST:
        return pixel[:, None] + channel[None, :]
    return channel[:, None] + pixel[None, :]


@triton.jit
def _tile_mask(pixel_ok, channel_ok, CHANNELS_LAST: tl.constexpr):
    if CHANNELS_LAST:
        return pixel_ok[:, None] & channel_ok[None, :]
    return channel_ok[:, None] & pixel_ok[None, :]


@triton.jit
def _pixels(v, CHANNELS_LAST: tl.constexpr):
    """A per-pixel vector broadcast along the tile's pixel axis."""
    if CHANNELS_LAST:
        return v[:, None]
    return v[None, :]


@triton.jit
def _channels(v, CHANNELS_LAST: tl.constexpr):
    """A per-channel vector broadcast along the tile's channel axis."""
    if CHANNELS_LAST:
        return v[None, :]
    return v[:, None]


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
    CHANNELS_LAST: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    ACTIVATION: tl.constexpr,
    RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0).to(tl.int64)
    pid_c = tl.program_id(1).to(tl.int64)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] output pixel
    k = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C] output channel
    n, p, q = output_pixel(m, P, Q)
    m_ok, k_ok = m < N * P * Q, k < K
    h0, w0 = window_corner(p, q, stride_h, stride_w, pad_top, pad_left)
    x_pixel0 = n * stride_xn
    x_channel = (k // MULT) * stride_xc
    acc = tl.zeros([BLOCK_M, BLOCK_C] if CHANNELS_LAST else [BLOCK_C, BLOCK_M], tl.float32)
    for r in range(0, R):
        h = h0 + r * dilation_h
        for f in range(0, S):
            w = w0 + f * dilation_w
            pixel_in = m_ok & inside(h, w, H, W)
            x_off = _tile(x_pixel0 + h * stride_xh + w * stride_xw, x_channel, CHANNELS_LAST)
            mask = _tile_mask(pixel_in, k_ok, CHANNELS_LAST)
            x = tl.load(x_ptr + x_off, mask=mask, other=0.0)  # shaped as acc
            w_tap = w_ptr + k * stride_wk + r * stride_wr + f * stride_ws  # [BLOCK_C]
            tap = tl.load(w_tap, mask=k_ok)
            if CHANNELS_LAST:
                acc += x.to(tl.float32) * tap.to(tl.float32)[None, :]
            else:
                acc += x.to(tl.float32) * tap.to(tl.float32)[:, None]
    y_ok = _tile_mask(m_ok, k_ok, CHANNELS_LAST)
    acc = apply_epilogue(
        acc, _pixels(n, CHANNELS_LAST), _pixels(p, CHANNELS_LAST), _pixels(q, CHANNELS_LAST),
        _channels(k, CHANNELS_LAST), _channels(k_ok, CHANNELS_LAST), y_ok,
        bias_ptr, scale_ptr, res_ptr, stride_b, stride_s,
        stride_rn, stride_rk, stride_rp, stride_rq,
        HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
    )  # fmt: skip
    y_off = _tile(n * stride_yn + p * stride_yp + q * stride_yq, k * stride_yk, CHANNELS_LAST)
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_ok)


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

    `config`: BLOCK_M pixels x BLOCK_C channels a program (threads run along the layout's
    contiguous dimension), num_warps. `slot`: see `launch.launch`.
    """
    n, c, h, w = x.shape
    k, _, r, s = weight.shape
    _, _, p, q = y.shape
    params = problem.params
    grid = (cdiv(n * p * q, config["BLOCK_M"]), cdiv(k, config["BLOCK_C"]))
    args = (
        x, weight, bias, scale, residual, y,
        n, k, h, w, p, q, r, s, k // c,
        *x.stride(),
        weight.stride(0), weight.stride(2), weight.stride(3),
        *strides_or_zeros(bias), *strides_or_zeros(scale),
        *y.stride(),
        *strides_or_zeros(residual, 4),
        *params.stride, *problem.pad_top_left, *params.dilation,
    )  # fmt: skip
    meta = dict(CHANNELS_LAST=problem.channels_last, **problem.epilogue.constexprs, **config)
    launch(_conv2d_fwd_dw_kernel, grid, args, meta, slot)
    return y
