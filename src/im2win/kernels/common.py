"""Pieces every convolution kernel shares, written once as `@triton.jit` helpers.

Output pixels are numbered m = (n*P + p)*Q + q; the window of output (p, q) starts at input
pixel (p*sh - pad_top, q*sw - pad_left) and reaches tap (r, f) at (+ r*dh, + f*dw). Index
arithmetic runs in whatever integer width the caller's values have (32-bit where the
kernel proved it fits, 64-bit otherwise).
"""

import triton
import triton.language as tl


@triton.jit
def output_pixel(m, P, Q):
    """Image, row and column (n, p, q) of output pixels `m`."""
    n = m // (P * Q)
    pq = m % (P * Q)
    return n, pq // Q, pq % Q


@triton.jit
def window_corner(p, q, stride_h, stride_w, pad_top, pad_left):
    """Input row and column of each window's top-left tap (negative inside the padding)."""
    return p * stride_h - pad_top, q * stride_w - pad_left


@triton.jit
def inside(h, w, H, W):
    """True where input pixel (h, w) lies in the image, False in the padding."""
    return (h >= 0) & (h < H) & (w >= 0) & (w < W)


@triton.jit
def activation(x, ACTIVATION: tl.constexpr):
    """`ACTIVATION` ('' for none, or one of epilogue.ACTIVATIONS) of fp32 `x`, as PyTorch's
    (GELU exact: the erf form)."""
    if ACTIVATION == "relu":
        x = tl.maximum(x, 0.0)
    elif ACTIVATION == "relu6":
        x = tl.minimum(tl.maximum(x, 0.0), 6.0)
    elif ACTIVATION == "silu":
        x = x * tl.sigmoid(x)
    elif ACTIVATION == "gelu":
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))  # x / sqrt(2)
    elif ACTIVATION == "hardswish":
        x = x * (tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0)
    elif ACTIVATION == "sigmoid":
        x = tl.sigmoid(x)
    return x


@triton.jit
def apply_epilogue(
    acc, n, p, q, channel, channel_ok, mask,
    bias_ptr, scale_ptr, res_ptr,
    stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, ACTIVATION: tl.constexpr,
    RESIDUAL: tl.constexpr,
):  # fmt: skip
    """fp32 `acc` through the fused epilogue (`epilogue.py`): * scale[k] + bias[k], then the
    residual ('before' or 'after' the activation; '' for none), read with its own strides.

    Every index broadcasts against `acc`: a [BLOCK_M, BLOCK_N] tile takes pixels (n, p, q)
    as [BLOCK_M, 1] and `channel` as [1, BLOCK_N]; a flat block takes them all as [BLOCK].
    `mask` says which elements are outputs. With nothing but a bias it is just the bias.
    """
    if HAS_SCALE:
        acc = acc * tl.load(scale_ptr + channel * stride_s, mask=channel_ok, other=0.0).to(
            tl.float32
        )
    if HAS_BIAS:
        acc += tl.load(bias_ptr + channel * stride_b, mask=channel_ok, other=0.0).to(tl.float32)
    if RESIDUAL != "":
        res_off = (n * stride_rn + p * stride_rp + q * stride_rq) + channel * stride_rk
        residual = tl.load(res_ptr + res_off, mask=mask, other=0.0).to(tl.float32)
        if RESIDUAL == "before":
            acc += residual
        acc = activation(acc, ACTIVATION)
        if RESIDUAL == "after":
            acc += residual
    else:
        acc = activation(acc, ACTIVATION)
    return acc


@triton.jit
def store_output(
    y_ptr, acc, n, p, q, channel, pixel_ok, channel_ok,
    stride_yn, stride_yk, stride_yp, stride_yq,
):  # fmt: skip
    """acc [BLOCK_M, BLOCK_N] (pixels (n, p, q) x output channels), cast to y's dtype, stored."""
    pixel = n * stride_yn + p * stride_yp + q * stride_yq  # [BLOCK_M]
    offset = pixel[:, None] + (channel * stride_yk)[None, :]  # [BLOCK_M, BLOCK_N]
    mask = pixel_ok[:, None] & channel_ok[None, :]
    tl.store(y_ptr + offset, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def round_tf32(x):
    """fp32 `x` rounded to the nearest tf32 value (10 mantissa bits, ties away from zero), so
    a tf32 product takes it whole however the hardware converts its operands."""
    bits = x.to(tl.int32, bitcast=True)
    return ((bits + 0x1000) & -0x2000).to(tl.float32, bitcast=True)


@triton.jit
def dot_tf32x3(a, b_hi, b_lo, acc):
    """acc + a @ (b_hi + b_lo) to about fp32 accuracy in three tf32 products (a_lo @ b_lo,
    under 2**-22 of a @ b, is dropped); b_hi and b_lo tf32 values (`conv2d_fwd.split_tf32`).

    Only A is split here: splitting B in the loop too, as `tl.dot(...,
    input_precision="tf32x3")` does, sends it through registers on every step. The step's
    products start from zero and join `acc` in an fp32 add: a tensor core's accumulator
    rounds toward zero, which over a long reduction builds a bias."""
    a_hi = round_tf32(a)
    a_lo = round_tf32(a - a_hi)
    step = tl.dot(a_lo, b_hi, input_precision="tf32")
    step = tl.dot(a_hi, b_lo, step, input_precision="tf32")
    return acc + tl.dot(a_hi, b_hi, step, input_precision="tf32")
