"""Forward convolution as an implicit GEMM over im2win windows.

GEMM view, per group g:   Y[m, k] = sum_kk A[m, kk] * B[kk, k]
    m  = (n, p, q)  output pixel               (M = N*P*Q rows)
    k  = output channel inside the group       (KG columns)
    kk = (c, f, r) in NCHW, (f, r, c) in NHWC, (r, f, c) tap by tap  (the filter's order)
A is never built: A[m, kk] = Win[n][c][p][q*sw + f*dw][r], whose address splits into a
pixel part (n, p, q) and a reduction part (c, f, r), so each tile is one broadcast add:

    addr(m, kk) = pixel_off[m] + red_off[kk]

The windows come from one of two sources with the same formula and different strides:
  materialized  the im2win tensor written by the transform (padding is stored zeros);
  streamed      the input itself, viewed as windows (rows p*sh + r*dh, columns q*sw + f*dw),
                padding handled by masks: no window buffer at all.
Two reduction loops (LOOP):
  "flat"      kk runs over the whole window in BLOCK_K steps; its address part comes from a
              small host-built table (no divisions in the loop), or is kk itself when each
              window is one contiguous run (NHWC im2win windows with dw == 1: the loads then
              vectorize). Serves every case; best for few channels (the 3-channel stems).
  "channels"  one filter tap (r, f) at a time, BLOCK_K channels of it: scalar tap offsets,
              no table, padding masks per pixel. Best once Cg fills a block.
A third, "tma" (`conv2d_fwd_tma.py`), is the channels loop with each window tile copied
by the tensor-memory accelerator; it serves channels-last inputs at unit stride.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..epilogue import NONE
from ..problem import ConvProblem
from . import split_k
from .common import (
    apply_epilogue,
    dot_tf32x3,
    inside,
    output_pixel,
    store_output,
    window_corner,
)
from .launch import launch
from .sizes import cdiv, strides_or_zeros


@triton.heuristics({
    "HAS_BIAS": lambda args: args["bias_ptr"] is not None,
    "HAS_SCALE": lambda args: args["scale_ptr"] is not None,
})  # fmt: skip
@triton.jit
def _conv2d_fwd_kernel(
    win_ptr, filt_ptr, filt_lo_ptr, bias_ptr, scale_ptr, res_ptr, y_ptr, red_ptr,
    N, CG, KG, H, W, R, S, P, Q,
    stride_an, stride_ag, stride_ap, stride_aq,
    stride_ac, stride_af, stride_ar, origin,
    stride_fk, stride_b, stride_s,
    stride_yn, stride_yk, stride_yp, stride_yq,
    stride_rn, stride_rk, stride_rp, stride_rq,
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
    LOOP: tl.constexpr,
    CONTIGUOUS_K: tl.constexpr,
    MASKED: tl.constexpr,
    WIDE_INDEX: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    ACTIVATION: tl.constexpr,
    RESIDUAL: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    # 32-bit index arithmetic unless some offset needs more (`needs_wide_index`): its
    # divisions and products cost a fraction of 64-bit ones, which shows on short reductions.
    index = tl.int64 if WIDE_INDEX else tl.int32
    # Program order: output-channel tiles fastest, so neighbours share a window tile in L2.
    pid = tl.program_id(0).to(index)
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    num_pid_m = tl.cdiv(N * P * Q, BLOCK_M)
    pid_n = pid % num_pid_n
    pid_m = pid // num_pid_n % num_pid_m
    group = pid // num_pid_n // num_pid_m

    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # [BLOCK_M]
    n, p, q = output_pixel(m, P, Q)
    pixel_off = n * stride_an + group * stride_ag + p * stride_ap + q * stride_aq
    kn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    filt_rows = (group * KG + kn) * stride_fk  # [BLOCK_N]
    m_ok = m < N * P * Q
    kn_ok = kn < KG
    h0, w0 = window_corner(p, q, stride_h, stride_w, pad_top, pad_left)  # streamed windows

    k_red = CG * S * R
    num_c_blocks = tl.cdiv(CG, BLOCK_K)
    num_iters = S * R * num_c_blocks if LOOP == "channels" else tl.cdiv(k_red, BLOCK_K)
    it_begin, it_end = 0, num_iters
    if SPLIT_K > 1:  # this program's slice of the reduction (split_k.py)
        it_begin = tl.program_id(1) * tl.cdiv(num_iters, SPLIT_K)
        it_end = tl.minimum(it_begin + tl.cdiv(num_iters, SPLIT_K), num_iters)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # [BLOCK_M, BLOCK_N]
    for it in range(it_begin, it_end):
        if LOOP == "channels":
            # One filter tap (r, f) at a time, BLOCK_K channels of it: kk = (r*S + f)*CG + c.
            rf = it // num_c_blocks
            r, f = rf // S, rf % S
            c = (it % num_c_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)  # [BLOCK_K]
            kk_ok = c < CG
            kk = rf * CG + c
            tap_off = origin + f * stride_af + r * stride_ar
            red_off = tap_off + c.to(index) * stride_ac
            a_mask = m_ok[:, None] & kk_ok[None, :]
            if MASKED:
                h = h0 + r * dilation_h
                w = w0 + f * dilation_w
                a_mask = a_mask & inside(h, w, H, W)[:, None]
        else:
            kk = it * BLOCK_K + tl.arange(0, BLOCK_K)  # [BLOCK_K]
            kk_ok = kk < k_red
            if CONTIGUOUS_K:
                red_off = kk.to(index)
            else:  # row 0 of the table: each reduction index's offset (origin included)
                red_off = tl.load(red_ptr + kk, mask=kk_ok, other=0).to(index)
            a_mask = m_ok[:, None] & kk_ok[None, :]
            if MASKED:  # rows 1 and 2 of the table: r*dh and f*dw
                dh = tl.load(red_ptr + k_red + kk, mask=kk_ok, other=0)
                dw = tl.load(red_ptr + 2 * k_red + kk, mask=kk_ok, other=0)
                h = h0[:, None] + dh[None, :]
                w = w0[:, None] + dw[None, :]
                a_mask = a_mask & inside(h, w, H, W)
        a = tl.load(win_ptr + pixel_off[:, None] + red_off[None, :], mask=a_mask, other=0.0)
        # a: [BLOCK_M, BLOCK_K]
        b_off = filt_rows[None, :] + kk[:, None]  # [BLOCK_K, BLOCK_N]
        b_ok = kk_ok[:, None] & kn_ok[None, :]
        b = tl.load(filt_ptr + b_off, mask=b_ok, other=0.0)  # [BLOCK_K, BLOCK_N]
        if UPCAST:  # the interpreter computes 16-bit dots wrongly; fp32 is exact there
            a, b = a.to(tl.float32), b.to(tl.float32)
        if PRECISION == "tf32x3":  # b holds the filter's tf32 part (`split_tf32`)
            b_lo = tl.load(filt_lo_ptr + b_off, mask=b_ok, other=0.0)
            acc = dot_tf32x3(a, b, b_lo, acc)
        else:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)

    channel = group * KG + kn  # [BLOCK_N]
    # Bias and the fused epilogue (none under split-K: split_k.finish runs them on the sum).
    acc = apply_epilogue(
        acc, n[:, None], p[:, None], q[:, None], channel[None, :], kn_ok[None, :],
        m_ok[:, None] & kn_ok[None, :], bias_ptr, scale_ptr, res_ptr,
        stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
        HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
    )  # fmt: skip
    if SPLIT_K > 1:  # the slice's own images of the workspace
        n += tl.program_id(1) * N
    store_output(y_ptr, acc, n, p, q, channel, m_ok, kn_ok,
                 stride_yn, stride_yk, stride_yp, stride_yq)  # fmt: skip


@dataclass(frozen=True)
class WindowSource:
    """Where the kernel reads windows: a tensor plus the strides of Win[n][c][p][w][r].

    `pixel_strides` (n, group, p, q) give the pixel part of an address, `red_strides`
    (c, f, r) and `origin` (the offset of window (0, 0), negative under padding) the
    reduction part; `masked` asks for padding bounds checks against the input's H x W
    (streamed windows only).
    """

    tensor: torch.Tensor
    pixel_strides: tuple[int, int, int, int]
    red_strides: tuple[int, int, int]
    origin: int = 0
    masked: bool = False


def reduction_table(
    cg: int, r: int, s: int, src: WindowSource, dilation: tuple[int, int],
    channels_last: bool, device: torch.device,
) -> torch.Tensor:  # fmt: skip
    """int32 [3, Cg*S*R]: each reduction index's address offset, r*dh and f*dw."""
    kk = torch.arange(cg * s * r, device=device)
    if channels_last:  # kk = (f*R + r)*Cg + c
        c, fr = kk % cg, kk // cg
    else:  # kk = c*S*R + f*R + r
        c, fr = kk // (s * r), kk % (s * r)
    f, rr = fr // r, fr % r
    sc, sf, sr = src.red_strides
    offset = src.origin + c * sc + f * sf + rr * sr
    if offset.numel() and max(-int(offset.min()), int(offset.max())) >= 2**31:
        raise ValueError("one image's windows span more than 2**31 elements")
    return torch.stack([offset, rr * dilation[0], f * dilation[1]]).to(torch.int32)


def is_contiguous_reduction(cg: int, r: int, s: int, src: WindowSource, channels_last: bool):
    """True when every window is one run in the filter's order, i.e. offset(kk) == kk."""
    if channels_last:  # kk = (f*R + r)*Cg + c
        sizes, wanted = (cg, r, s), (1, cg, r * cg)
        strides = (src.red_strides[0], src.red_strides[2], src.red_strides[1])
    else:  # kk = c*S*R + f*R + r
        sizes, wanted = (r, s, cg), (1, r, s * r)
        strides = (src.red_strides[2], src.red_strides[1], src.red_strides[0])
    # A dimension of size 1 never moves, so its stride does not matter.
    return src.origin == 0 and all(
        n == 1 or a == b for n, a, b in zip(sizes, strides, wanted, strict=True)
    )


_TABLES: dict[tuple, torch.Tensor] = {}


def _cached_table(cg, r, s, src: WindowSource, dilation, channels_last, device) -> torch.Tensor:
    key = (cg, r, s, src.red_strides, src.origin, dilation, channels_last, device)
    if key not in _TABLES:
        if len(_TABLES) > 256:
            _TABLES.clear()
        _TABLES[key] = reduction_table(cg, r, s, src, dilation, channels_last, device)
    return _TABLES[key]


# Reduction orders of the filter's B matrix, as permutations of the weight's [K, Cg, R, S].
FILTER_ORDERS = {
    "cfr": (0, 1, 3, 2),  # the NCHW im2win window: Win[n][c][p][w][r]
    "frc": (0, 3, 2, 1),  # the NHWC im2win window: Win[n][p][w][r][c]
    "rfc": (0, 2, 3, 1),  # tap by tap, channels inner: a channels_last weight as it lies
}


def kernel_filter(weight: torch.Tensor, order: str) -> torch.Tensor:
    """The filter [K, Cg, R, S] as the B matrix [K, Cg*R*S] in `order` (FILTER_ORDERS).

    No copy when the weight already lies that way ("rfc" from a channels_last weight).
    """
    return weight.permute(*FILTER_ORDERS[order]).contiguous().view(weight.shape[0], -1)


def round_tf32_(t: torch.Tensor) -> torch.Tensor:
    """fp32 `t` rounded in place to the nearest tf32 value, as `common.round_tf32` rounds."""
    bits = t.view(torch.int32)
    bits.add_(0x1000).bitwise_and_(-0x2000)
    return t


def split_tf32(filt: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp32 filter matrix `filt` as hi + lo in tf32 values, hi the nearest to `filt` and lo
    the nearest to the rest. `filt` becomes hi in place unless it is `weight` itself."""
    lo = filt.clone()
    hi = round_tf32_(filt if filt.data_ptr() != weight.data_ptr() else filt.clone())
    return hi, round_tf32_(lo.sub_(hi))


def needs_wide_index(tensors, last_pixel: int, origin: int = 0) -> bool:
    """True when an index the kernel forms may not fit in 32 bits: an element offset into
    one of `tensors` (shifted by up to |origin|) or a pixel index up to `last_pixel`."""
    extent = max(sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True))
                 for t in tensors)  # fmt: skip
    return max(extent + abs(origin), last_pixel) >= 2**31


LOOPS = ("flat", "channels")


def pointer_launcher(
    problem: ConvProblem, *, loop: str, config: dict, interpreted: bool
) -> Callable[..., torch.Tensor]:  # fmt: skip
    """`launch(windows, weight, bias, y, source, scale=None, residual=None)` filling `y`
    [N, K, P, Q] (any strides) from the windows and the filter [K, Cg, R, S] of a call of
    `problem`'s signature: `windows` is the tensor they are read from (the input, or the
    im2win tensor), `source(windows)` their `WindowSource`; `scale` [K] and `residual`
    (y's shape, any strides) as `problem.epilogue` asks for them.

    What the signature fixes (the reduction table, grid, constexprs and every int argument)
    is worked out on the first call, from its tensors' geometry; later calls re-lay the
    filter and launch past Triton's dispatch (`launch.py`): host time.
    The flat loop walks each window in (f, r, c) order where the problem is channels-last,
    as NHWC windows lie, else (c, f, r). `config`: the tiles, and SPLIT_K slices of the
    reduction (default 1, none), summed by `split_k.finish` with the bias and epilogue.
    """
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    config = dict(config)
    splits = config.pop("SPLIT_K", 1)
    order = "rfc" if loop == "channels" else "frc" if problem.channels_last else "cfr"
    tf32x3 = problem.math.precision == "tf32x3"
    fixed = None  # (int arguments, table, grid, constexprs), from the first call
    slot, finish_slot = {}, {}  # the compiled kernels, once launched

    def launch_into(windows, weight, bias, y, source, scale=None, residual=None):
        nonlocal fixed
        filt = filt_lo = kernel_filter(weight, order)  # filt_lo: unused unless 3xTF32
        if tf32x3:
            filt, filt_lo = split_tf32(filt, weight)
        if splits > 1:  # the slices' plain sums: bias and epilogue come with their sum
            out, out_bias, out_scale, out_residual = split_k.workspace(splits, y), None, None, None
        else:
            out, out_bias, out_scale, out_residual = y, bias, scale, residual
        if fixed is None:
            fixed = _fixed_arguments(source(windows), filt, out, out_bias, out_scale,
                                     out_residual, problem, loop, config, splits,
                                     interpreted)  # fmt: skip
        ints, table, grid, meta = fixed
        args = (windows, filt, filt_lo, out_bias, out_scale, out_residual, out, table, *ints)
        launch(_conv2d_fwd_kernel, grid, args, meta, slot)
        if splits > 1:
            return split_k.finish(out, splits, bias, y, scale, residual,
                                  epilogue=problem.epilogue, slot=finish_slot)  # fmt: skip
        return y

    return launch_into


def _fixed_arguments(src: WindowSource, filt: torch.Tensor, out: torch.Tensor,
                     out_bias: torch.Tensor | None, out_scale: torch.Tensor | None,
                     out_residual: torch.Tensor | None, problem: ConvProblem, loop: str,
                     config: dict, splits: int, interpreted: bool) -> tuple:  # fmt: skip
    """`pointer_launcher`'s per-signature part: (int arguments, reduction table, grid,
    constexprs)."""
    n, p, q, cg, r, s = problem.n, problem.p, problem.q, problem.cg, problem.r, problem.s
    params, channels_last = problem.params, problem.channels_last
    contiguous = False
    table = filt  # an unused pointer for the loops that need no table
    if loop == "flat":
        table = _cached_table(cg, r, s, src, params.dilation, channels_last, out.device)
        contiguous = is_contiguous_reduction(cg, r, s, src, channels_last)
    programs = cdiv(n * p * q, config["BLOCK_M"]) * cdiv(problem.kg, config["BLOCK_N"])
    grid = (programs * problem.groups, splits) if splits > 1 else (programs * problem.groups,)
    ints = (
        n, cg, problem.kg, problem.h, problem.w, r, s, p, q,
        *src.pixel_strides,
        *src.red_strides, src.origin,
        filt.stride(0), *strides_or_zeros(out_bias), *strides_or_zeros(out_scale),
        *out.stride(),
        *strides_or_zeros(out_residual, 4),
        *params.stride, *problem.pad_top_left, *params.dilation,
    )  # fmt: skip
    epilogue = problem.epilogue if splits == 1 else NONE
    tensors = (src.tensor, filt, out) + (() if out_residual is None else (out_residual,))
    meta = dict(
        LOOP=loop,
        CONTIGUOUS_K=contiguous,
        MASKED=src.masked,
        WIDE_INDEX=needs_wide_index(tensors, n * p * q + config["BLOCK_M"], src.origin),
        **epilogue.constexprs,
        PRECISION=problem.math.precision,
        UPCAST=interpreted and src.tensor.dtype != torch.float32,
        SPLIT_K=splits,
        **config,
    )
    return ints, table, grid, meta
