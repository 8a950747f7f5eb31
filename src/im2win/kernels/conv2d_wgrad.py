"""Weight gradient of a convolution: one GEMM per group over its windows, the reduction split
across the batch and output positions with no atomics.

    dW[k, c, r, s] = sum_{n, p, q} dY[n, k, p, q] * X[n, c, p*sh + r*dh - top, q*sw + s*dw - left]

Per group, dW is [Kg, Cg*R*S] = dY^T [Kg, M] @ windows [M, Cg*R*S] with M = N*P*Q: row m of
the window matrix is output pixel m's window, read straight from the input (as the pointer
forward kernel reads its windows) with zeros where it covers the padding. The reduction over
M is long and the output small, so program (k tile, j tile, slice) sums its slice of M into a
partial of its own, and the partials are added in a fixed order after: the result does not
depend on scheduling, so it is bitwise reproducible. Depthwise layers, with no GEMM left
in them, have a kernel of their own (`conv2d_wgrad_depthwise`), reduced the same way.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..problem import ConvProblem
from .common import inside, output_pixel, window_corner
from .conv2d_wgrad_tma import conv2d_wgrad_tma, wgrad_tma_patches
from .conv2d_wgrad_ws import conv2d_wgrad_ws
from .launch import launch
from .sizes import cdiv, next_power_of_2


@triton.jit
def _conv2d_wgrad_kernel(
    x_ptr, dy_ptr, part_ptr, bias_part_ptr,
    M, KG, J, H, W, P, Q, S, RS, CG, SLICE,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dn, stride_dk, stride_dp, stride_dq,
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
    CHANNELS_LAST: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_J: tl.constexpr,
):  # fmt: skip
    """partial[slice, group, k, j] over output pixels [slice * SLICE, (slice + 1) * SLICE);
    with HAS_BIAS, the first column tile's programs also sum the output gradient into
    bias_partial[slice, group, k].

    Gradient column j = (c, r, s): channel-fastest (j = (r*S + s)*CG + c) for channels-last
    inputs, whose channels are contiguous, else tap-fastest (j = c*RS + r*S + s).
    """
    group = tl.program_id(0)
    k_tiles = tl.cdiv(KG, BLOCK_K)
    j_tile = tl.program_id(1) // k_tiles
    k = (tl.program_id(1) % k_tiles) * BLOCK_K + tl.arange(0, BLOCK_K)  # [BLOCK_K]
    j = j_tile * BLOCK_J + tl.arange(0, BLOCK_J)  # [BLOCK_J]
    split = tl.program_id(2)
    k_ok, j_ok = k < KG, j < J
    if CHANNELS_LAST:
        c, rs = j % CG, j // CG
    else:
        c, rs = j // RS, j % RS
    r, s = rs // S, rs % S
    x_channel = (group * CG + c).to(tl.int64) * stride_xc  # [BLOCK_J]
    dy_channel = (group * KG + k).to(tl.int64) * stride_dk  # [BLOCK_K]
    m_start = split.to(tl.int64) * SLICE
    m_end = tl.minimum(m_start + SLICE, M)
    acc = tl.zeros([BLOCK_K, BLOCK_J], tl.float32)
    bias = tl.zeros([BLOCK_K], tl.float32)
    for m0 in range(m_start, m_end, BLOCK_M):
        m = m0 + tl.arange(0, BLOCK_M)  # [BLOCK_M] output pixel
        m_ok = m < m_end
        n, p, q = output_pixel(m, P, Q)
        dy_pixel = n * stride_dn + p * stride_dp + q * stride_dq
        dy = tl.load(dy_ptr + dy_channel[:, None] + dy_pixel[None, :],
                     mask=k_ok[:, None] & m_ok[None, :], other=0.0)  # fmt: skip
        h0, w0 = window_corner(p, q, stride_h, stride_w, pad_top, pad_left)
        h = h0[:, None] + (r * dilation_h)[None, :]  # [BLOCK_M, BLOCK_J]
        w = w0[:, None] + (s * dilation_w)[None, :]
        x_ok = m_ok[:, None] & j_ok[None, :] & inside(h, w, H, W)
        x_off = (n * stride_xn)[:, None] + x_channel[None, :] + h * stride_xh + w * stride_xw
        x = tl.load(x_ptr + x_off, mask=x_ok, other=0.0)  # [BLOCK_M, BLOCK_J]
        if HAS_BIAS:
            bias += tl.sum(dy.to(tl.float32), axis=1)
        if UPCAST:  # the interpreter computes 16-bit dots wrongly; fp32 is exact there
            dy, x = dy.to(tl.float32), x.to(tl.float32)
        acc = tl.dot(dy, x, acc, input_precision=PRECISION)
    row = (split * tl.num_programs(0) + group) * KG + k  # [BLOCK_K]: (slice, group, k)
    tl.store(part_ptr + row.to(tl.int64)[:, None] * J + j[None, :], acc,
             mask=k_ok[:, None] & j_ok[None, :])  # fmt: skip
    if HAS_BIAS:  # one program per (slice, group, k tile) writes it: the first column tile's
        tl.store(bias_part_ptr + row, bias, mask=k_ok & (j_tile == 0))


def conv2d_wgrad(
    x: torch.Tensor,
    grad_output: torch.Tensor,
    weight_shape: tuple[int, int, int, int],
    problem: ConvProblem,
    *,
    config: dict,
    interpreted: bool,
    bias: bool = False,
    slots: dict | None = None,
    sms: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dW [K, C/groups, R, S] (contiguous, in x's dtype), and with `bias` the bias
    gradient [K] in the same pass, else None) of a call of `problem`'s signature from `x`
    [N, C, H, W] and `grad_output` [N, K, P, Q], any strides. `slots`: a dict the caller
    keeps for one call signature (x's and grad_output's shapes, strides, dtypes and
    alignments, the config), where the kernels keep their launches (`launch.py`).

    `config`: BLOCK_M output pixels a step, BLOCK_K x BLOCK_J the partial's tile, SLICES
    (how many parts the reduction is cut into), num_warps, num_stages; or the TMA kernel's
    (`conv2d_wgrad_tma.py`: BLOCK_P, BLOCK_Q, BLOCK_K, BLOCK_C and SLICES, inputs it
    supports); or, with CONSUMERS, the warp-specialized kernel's (`conv2d_wgrad_ws.py`, on
    at most `sms` persistent CTAs).
    """
    n, _, h, w = x.shape
    k, cg, r, s = weight_shape
    _, _, p, q = grad_output.shape
    g, params = problem.groups, problem.params
    kg, j, m = k // g, cg * r * s, n * p * q
    tma = "BLOCK_P" in config  # a TMA kernel's config: a patch of pixels a step
    steps = wgrad_tma_patches(problem, config) if tma else m
    slices, per_slice = _slices(steps, config["SLICES"], 1 if tma else config["BLOCK_M"])
    partial = torch.empty((slices, g, kg, j), dtype=torch.float32, device=x.device)
    bias_partial = torch.empty((slices, g, kg), dtype=torch.float32, device=x.device) if (
        bias) else None  # fmt: skip
    if "CONSUMERS" in config:  # the warp-specialized kernel
        conv2d_wgrad_ws(x, grad_output, partial, bias_partial, problem, config=config,
                        per_slice=per_slice, sms=sms, slot=_slot(slots, "main"))  # fmt: skip
    elif tma:
        conv2d_wgrad_tma(x, grad_output, partial, bias_partial, problem, config=config,
                         per_slice=per_slice, interpreted=interpreted,
                         slot=_slot(slots, "main"))  # fmt: skip
    else:
        grid = (g, cdiv(kg, config["BLOCK_K"]) * cdiv(j, config["BLOCK_J"]), slices)
        args = (
            x, grad_output, partial, bias_partial,
            m, kg, j, h, w, p, q, s, r * s, cg, per_slice,
            *x.stride(), *grad_output.stride(),
            *params.stride, *problem.pad_top_left, *params.dilation,
        )  # fmt: skip
        meta = dict(
            CHANNELS_LAST=problem.channels_last,
            HAS_BIAS=bias,
            PRECISION=problem.math.precision if problem.math.tensor_cores else "ieee",
            UPCAST=interpreted and x.dtype != torch.float32,
            BLOCK_M=config["BLOCK_M"], BLOCK_K=config["BLOCK_K"], BLOCK_J=config["BLOCK_J"],
            num_warps=config["num_warps"], num_stages=config["num_stages"],
        )  # fmt: skip
        launch(_conv2d_wgrad_kernel, grid, args, meta, _slot(slots, "main"))
    return _finish(partial, bias_partial, weight_shape, cg, problem.channels_last, x.dtype,
                   slot=_slot(slots, "finish"))  # fmt: skip


def _slot(slots: dict | None, kernel: str) -> dict | None:
    """`kernel`'s slot in a call signature's `slots`; None (dispatch each launch) without."""
    return None if slots is None else slots.setdefault(kernel, {})


@triton.jit
def _wgrad_finish_kernel(
    part_ptr, bias_part_ptr, grad_ptr, grad_bias_ptr,
    SLICES, ROWS, J, CG, RS, NB,
    TAPS_FIRST: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """dW (contiguous, in the gradient's dtype) as the sum of the slices' partials
    [SLICES, ROWS, J], slice after slice (reproducible). Column j of a partial is (tap, c)
    with TAPS_FIRST, else (c, tap), of CG channels and RS taps; dW holds row, c, tap in
    that order. With HAS_BIAS the first programs sum the bias partials [SLICES, NB] too."""
    pid = tl.program_id(0)
    e = pid * BLOCK + tl.arange(0, BLOCK)  # [BLOCK] element row*J + j of a partial
    ok = e < ROWS * J
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    parts = part_ptr + e  # the pointers step a slice at a time: no 32-bit product overflows
    for _slice in range(SLICES):
        acc += tl.load(parts, mask=ok, other=0.0)
        parts += ROWS * J
    if TAPS_FIRST:  # j = tap*CG + c lands at row*J + c*RS + tap
        row, j = e // J, e % J
        out = row * J + (j % CG) * RS + j // CG
    else:  # j = c*RS + tap: the same place
        out = e
    tl.store(grad_ptr + out, acc.to(grad_ptr.dtype.element_ty), mask=ok)
    if HAS_BIAS:  # noqa: SIM102 (compiled in or out; then a test at run time)
        if pid * BLOCK < NB:
            bias = tl.zeros([BLOCK], dtype=tl.float32)
            bias_parts = bias_part_ptr + e
            for _bias_slice in range(SLICES):
                bias += tl.load(bias_parts, mask=e < NB, other=0.0)
                bias_parts += NB
            tl.store(grad_bias_ptr + e, bias.to(grad_bias_ptr.dtype.element_ty), mask=e < NB)


FINISH_BLOCK = 1024  # elements of dW a finishing program writes


def _finish(partial: torch.Tensor, bias_partial: torch.Tensor | None, grad_shape, cg: int,
            taps_first: bool, dtype: torch.dtype, slot: dict | None):  # fmt: skip
    """(dW of `grad_shape`, contiguous, in `dtype`; the bias gradient or None) from the
    slices' partial sums [slices, ..., J] and [slices, NB], in one kernel: see
    `_wgrad_finish_kernel`; launched through `slot`."""
    slices, j = partial.shape[0], partial.shape[-1]
    rows = math.prod(partial.shape[1:-1])
    nb = 0 if bias_partial is None else math.prod(bias_partial.shape[1:])
    grad = torch.empty(grad_shape, dtype=dtype, device=partial.device)
    grad_bias = None if bias_partial is None else torch.empty(nb, dtype=dtype,
                                                              device=partial.device)  # fmt: skip
    if max(rows * j, nb) == 0:
        return grad, grad_bias
    args = (partial, bias_partial, grad, grad_bias, slices, rows, j, cg, j // cg if cg else 0, nb)
    meta = dict(TAPS_FIRST=taps_first, HAS_BIAS=bias_partial is not None, BLOCK=FINISH_BLOCK,
                num_warps=4)  # fmt: skip
    launch(_wgrad_finish_kernel, (cdiv(max(rows * j, nb), FINISH_BLOCK),), args, meta, slot)
    return grad, grad_bias


def _slices(m: int, wanted: int, block_m: int) -> tuple[int, int]:
    """(slices, pixels a slice) cutting M output pixels into at most `wanted` slices of whole
    BLOCK_M steps, none empty (no slice at all for no pixels)."""
    per_slice = max(1, cdiv(cdiv(m, max(1, min(wanted, cdiv(m, block_m)))), block_m)) * block_m
    return cdiv(m, per_slice), per_slice


@triton.jit
def _conv2d_wgrad_dw_kernel(
    x_ptr, dy_ptr, part_ptr, bias_part_ptr,
    M, C, H, W, P, Q, S, RS, SLICE,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dn, stride_dk, stride_dp, stride_dq,
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
    TAPS: tl.constexpr,
):  # fmt: skip
    """Depthwise (one input and one output channel a group): partial[slice, tap, c] over output
    pixels [slice * SLICE, (slice + 1) * SLICE) for BLOCK_C channels and every tap at once,
    so each output gradient element is read once; bias_partial[slice, c] likewise.

    No GEMM is left in a depthwise gradient (one product per tap, channel and pixel): a
    program multiplies a [BLOCK_M, TAPS, BLOCK_C] block of windows by the output gradient
    broadcast along the taps and sums over the pixels. Neighbouring taps and pixels read
    the same inputs, from the cache after the first. The output gradient is loaded in that
    block's shape (each thread the elements its windows meet), not as [BLOCK_M, BLOCK_C]:
    a tile of that shape takes another layout, and reaching the block's cost a shared-memory
    exchange and a barrier a step. The bias gradient is one more tap (TAPS > RS), its
    window all ones: the sum of the output gradient.
    """
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    split = tl.program_id(1)
    tap = tl.arange(0, TAPS)  # [TAPS], RS rounded up to a power of two
    r, s = tap // S, tap % S
    c_ok, tap_ok = c < C, tap < RS
    x_channel = c.to(tl.int64) * stride_xc
    dy_channel = c.to(tl.int64) * stride_dk
    m_start = split.to(tl.int64) * SLICE
    m_end = tl.minimum(m_start + SLICE, M)
    # Summed over the pixels once, after the loop: that sum crosses threads, the products
    # do not.
    acc = tl.zeros([BLOCK_M, TAPS, BLOCK_C], tl.float32)
    for m0 in range(m_start, m_end, BLOCK_M):
        m = m0 + tl.arange(0, BLOCK_M)  # [BLOCK_M]
        m_ok = m < m_end
        n, p, q = output_pixel(m, P, Q)
        dy_off = (n * stride_dn + p * stride_dp + q * stride_dq)[:, None] + dy_channel[None, :]
        dy_ok = m_ok[:, None] & c_ok[None, :]
        dy = tl.load(tl.broadcast_to((dy_ptr + dy_off)[:, None, :], acc.shape),
                     mask=dy_ok[:, None, :], other=0.0)  # fmt: skip
        h0, w0 = window_corner(p, q, stride_h, stride_w, pad_top, pad_left)
        h = h0[:, None] + (r * dilation_h)[None, :]  # [BLOCK_M, TAPS]
        w = w0[:, None] + (s * dilation_w)[None, :]
        pixel_ok = m_ok[:, None] & tap_ok[None, :] & inside(h, w, H, W)
        x_off = (n[:, None] * stride_xn + h * stride_xh + w * stride_xw)[:, :, None] + (
            x_channel[None, None, :])  # fmt: skip
        x = tl.load(x_ptr + x_off, mask=pixel_ok[:, :, None] & c_ok[None, None, :], other=0.0)
        x = x.to(tl.float32)
        if HAS_BIAS:  # tap RS: a window of ones
            x = tl.where((tap == RS)[None, :, None], 1.0, x)
        acc += x * dy.to(tl.float32)
    sums = tl.sum(acc, axis=0)  # [TAPS, BLOCK_C]
    row = split * RS + tap  # [TAPS]: (slice, tap), RS taps a slice
    tl.store(part_ptr + row.to(tl.int64)[:, None] * C + c[None, :], sums,
             mask=tap_ok[:, None] & c_ok[None, :])  # fmt: skip
    if HAS_BIAS:
        bias_row = bias_part_ptr + split * C + c  # [BLOCK_C]
        tl.store(tl.broadcast_to(bias_row[None, :], sums.shape), sums,
                 mask=(tap == RS)[:, None] & c_ok[None, :])  # fmt: skip


def conv2d_wgrad_depthwise(
    x: torch.Tensor,
    grad_output: torch.Tensor,
    weight_shape: tuple[int, int, int, int],
    problem: ConvProblem,
    *,
    config: dict,
    bias: bool = False,
    slots: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`conv2d_wgrad` of a depthwise convolution (groups = C = K): dW [C, 1, R, S].

    `config`: BLOCK_C channels a program, ELEMENTS (the window block's size: BLOCK_M pixels
    a step is ELEMENTS / (taps x BLOCK_C)), SLICES, num_warps.
    """
    n, c, h, w = x.shape
    _, _, r, s = weight_shape
    _, _, p, q = grad_output.shape
    params = problem.params
    taps = next_power_of_2(r * s + bias)  # the bias gradient: one tap more
    block_m = max(1, config["ELEMENTS"] // (taps * config["BLOCK_C"]))
    m = n * p * q
    slices, per_slice = _slices(m, config["SLICES"], block_m)
    partial = torch.empty((slices, r * s, c), dtype=torch.float32, device=x.device)
    bias_partial = torch.empty((slices, c), dtype=torch.float32, device=x.device) if (
        bias) else None  # fmt: skip
    grid = (cdiv(c, config["BLOCK_C"]), slices)
    args = (
        x, grad_output, partial, bias_partial,
        m, c, h, w, p, q, s, r * s, per_slice,
        *x.stride(), *grad_output.stride(),
        *params.stride, *problem.pad_top_left, *params.dilation,
    )  # fmt: skip
    meta = dict(HAS_BIAS=bias, BLOCK_M=block_m, BLOCK_C=config["BLOCK_C"], TAPS=taps,
                num_warps=config["num_warps"])  # fmt: skip
    launch(_conv2d_wgrad_dw_kernel, grid, args, meta, _slot(slots, "main"))
    # [slices, RS, C] seen as one row of (tap, c) columns: dW [C, 1, R, S]
    return _finish(partial.view(slices, 1, r * s * c), bias_partial, (c, 1, r, s), c, True,
                   x.dtype, slot=_slot(slots, "finish"))  # fmt: skip
