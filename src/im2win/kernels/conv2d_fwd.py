"""Forward convolution as an implicit GEMM over the im2win window tensor.

GEMM view, per group g:   Y[m, k] = sum_kk A[m, kk] * B[kk, k]
    m  = (n, p, q)  output pixel               (M = N*P*Q rows)
    k  = output channel inside the group       (KG columns)
    kk = (c, f, r) in NCHW, (f, r, c) in NHWC  (Cg*S*R, the filter's own order)
A is never built: A[m, kk] = Win[n][c][p][q*sw + f*dw][r], an address that splits into a
pixel part (n, p, q) and a reduction part (c, f, r), so each tile is one broadcast add.
With dw == 1 the reduction part walks each window as a contiguous run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.heuristics({"HAS_BIAS": lambda args: args["bias_ptr"] is not None})
@triton.jit
def _conv2d_fwd_kernel(
    win_ptr, filt_ptr, bias_ptr, y_ptr,
    N, CG, KG, R, S, P, Q,
    stride_wn, stride_wc, stride_wp, stride_ww, stride_wr,
    stride_fk,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_w, dilation_w,
    CHANNELS_LAST: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    # Program order: output-channel tiles fastest, so neighbours share a window tile in L2.
    pid = tl.program_id(0).to(tl.int64)
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    num_pid_m = tl.cdiv(N * P * Q, BLOCK_M)
    pid_n = pid % num_pid_n
    pid_m = pid // num_pid_n % num_pid_m
    group = pid // num_pid_n // num_pid_m

    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M] int64
    n, pq = m // (P * Q), m % (P * Q)
    p, q = pq // Q, pq % Q
    row_off = n * stride_wn + group * CG * stride_wc + p * stride_wp + q * stride_w * stride_ww
    kn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    filt_rows = (group * KG + kn) * stride_fk  # [BLOCK_N] int64
    m_ok = m < N * P * Q
    kn_ok = kn < KG

    k_red = CG * S * R
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, k_red, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
        if CHANNELS_LAST:
            c, fr = kk % CG, kk // CG
        else:
            c, fr = kk // (S * R), kk % (S * R)
        f, r = fr // R, fr % R
        col_off = c.to(tl.int64) * stride_wc + (f * dilation_w) * stride_ww + r * stride_wr
        kk_ok = kk < k_red
        a = tl.load(
            win_ptr + row_off[:, None] + col_off[None, :],
            mask=m_ok[:, None] & kk_ok[None, :],
            other=0.0,
        )  # [BLOCK_M, BLOCK_K]
        b = tl.load(
            filt_ptr + filt_rows[None, :] + kk[:, None],
            mask=kk_ok[:, None] & kn_ok[None, :],
            other=0.0,
        )  # [BLOCK_K, BLOCK_N]
        if UPCAST:  # the interpreter computes 16-bit dots wrongly; fp32 is exact there
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + group * KG + kn, mask=kn_ok, other=0.0).to(tl.float32)[None, :]
    y_off = (
        (n * stride_yn + p * stride_yp + q * stride_yq)[:, None]
        + ((group * KG + kn) * stride_yk)[None, :]
    )
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & kn_ok[None, :])


def conv2d_fwd(
    win: torch.Tensor,
    win_strides: tuple[int, int, int, int, int],
    filt: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    *,
    r: int,
    s: int,
    groups: int,
    stride_w: int,
    dilation_w: int,
    channels_last: bool,
    precision: str,
    config: dict,
    interpreted: bool,
) -> torch.Tensor:
    """Fill `y` [N, K, P, Q] (any strides) from the window tensor and the re-laid filter.

    `win_strides` are the window tensor's strides in (n, c, p, w, r) order; `filt` is
    [K, Cg*S*R] in the reduction order of the layout.
    """
    n, k, p, q = y.shape
    cg = filt.shape[1] // (r * s)
    kg = k // groups
    grid = (
        triton.cdiv(n * p * q, config["BLOCK_M"])
        * triton.cdiv(kg, config["BLOCK_N"])
        * groups,
    )
    _conv2d_fwd_kernel[grid](
        win, filt, bias, y,
        n, cg, kg, r, s, p, q,
        *win_strides,
        filt.stride(0),
        *y.stride(),
        stride_w, dilation_w,
        CHANNELS_LAST=channels_last,
        PRECISION=precision,
        UPCAST=interpreted and win.dtype != torch.float32,
        **config,
    )  # fmt: skip
    return y
