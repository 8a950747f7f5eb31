"""Forward convolution from window strips in shared memory: a persistent, warp-specialized
Gluon kernel for Hopper (sm_90a), channels-last, tensor-core tiers.

A tile is a BLOCK_P x BLOCK_Q patch of output pixels of one image by BLOCK_N output
channels. For each filter column f and block of BLOCK_K channels one TMA box brings the
tile's *strip*: the BLOCK_P + (R-1)*dh input rows under the patch, shifted f*dw columns
(zero-filled outside the image, so padding costs nothing):

    strip_f[i, j, c] = X[n, p0 - pad_top + i, q0 - pad_left + f*dw + j, c0 + c]

              input rows of the strip          tap (r, f) = rows r*dh .. r*dh + BLOCK_P - 1
            +-------------------------+ 0      +-------------------------+
            |  BLOCK_Q pixels x C     | 1 ---> |  [BLOCK_P*BLOCK_Q, BLOCK_K]
            |                         | ...    |  window tile of tap (1, f)
            +-------------------------+ BLOCK_P + (R-1)*dh - 1

Tap (r, f) is the view of strip_f that starts r*dh rows in: each image row is
BLOCK_Q*BLOCK_K elements, a whole number of 128-byte swizzle atoms, so the view is itself
a [BLOCK_M, BLOCK_K] operand the wgmma reads from shared memory. A strip feeds R steps:
the input crosses L2 about S*(BLOCK_P + R - 1)/BLOCK_P times a tile where one box a tap
(`conv2d_fwd_tma.py`) moves it R*S times. The filter, [K, R*S, C] in (r, f, c) order, is
one [BLOCK_N, 1, BLOCK_K] box a step. C need not fill the channel blocks: TMA zero-fills
both operands' boxes past C, so a last, partial block adds nothing (at unit column stride;
above it a column's parity classes share the channel dimension of the input's view).

At stride (sh, sw) the boxes read the input as `conv2d_fwd_tma.py` does, the parity view
[N, H/sh, sh, W/sw, sw*C]: output column q at filter column f reads input column
sw*q + f*dw - pad_left, a whole number of strides and a column parity class, so strip_f
is again one box. The taps of a filter column fall into row parity classes (input row mod
sh); each class read is a strip of its own, its taps row views of it (`strip_plan`): a 3x3
filter at stride 2 reads a strip of BLOCK_P rows for its middle tap and one of BLOCK_P + 1
for the outer two, 2*BLOCK_P + 1 rows for three taps.

Roles (`gl.warp_specialize`): a loader warp keeps a ring of strips and a ring of filter
blocks full (TMA, mbarriers); one or two consumer warpgroups issue asynchronous wgmma
and run the epilogue. With two they take tiles in turn (ping-pong): one's epilogue runs
under the other's main loop. CTAs are persistent, one an SM. The output leaves through a
TMA store: y is a dense channels-last tensor whose rows TMA can write (16-byte multiples).

Triton asks power-of-two shapes of every shared-memory buffer and TMA box; a strip of
BLOCK_P + (R-1)*dh rows is loaded as two boxes (BLOCK_P rows, then HALO rows: the longest
strip's extra rows up to a power of two) into a ring of A_ROWS image rows, each strip
wherever the last one ended.
Gluon cannot run in Triton's interpreter: this kernel runs on Hopper GPUs only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ..problem import ConvProblem
from .conv2d_fwd import kernel_filter
from .conv2d_fwd_tma import tma_view_supported
from .launch import descriptor, launch
from .sizes import cdiv, next_power_of_2, strides_or_zeros

GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}
MAX_STRIPS = 8  # strips a ring holds at most (its barriers are allocated for that many)
BOX_MAX = 256  # TMA boxes span at most 256 elements a dimension


@gluon.constexpr_function  # (the kernel's constexpr functions below may call it)
def strip_plan(r: int, dh: int, sh: int, pad_top: int) -> list[tuple[int, int, dict[int, int]]]:
    """The strips of one filter column at row stride `sh`: one per row parity class (input
    row mod sh) some tap reads, as (parity, origin, {tap: row}). Tap t reads input rows
    sh*p + t*dh - pad_top, which are rows p + (t*dh - pad_top) // sh of its class; a strip
    starts at its first tap's offset (`origin`, added to the tile's p0) and each of its taps
    views BLOCK_P rows from `row`. At unit stride: one strip from -pad_top, tap t at t*dh."""
    classes: dict[int, dict[int, int]] = {}
    for tap in range(r):
        offset = tap * dh - pad_top
        classes.setdefault(offset % sh, {})[tap] = offset // sh
    plan = []
    for parity, taps in sorted(classes.items()):
        origin = min(taps.values())
        plan.append((parity, origin, {tap: offset - origin for tap, offset in taps.items()}))
    return plan


@gluon.constexpr_function
def _strip_of(tap: int, plan: list) -> int:
    return next(i for i, (_, _, taps) in enumerate(plan) if tap in taps)


# The plan's entries as compile-time constants of the kernel (R, DH, SH, PAD_TOP given).
@gluon.constexpr_function
def _strips_per_column(r, dh, sh, pad_top):
    return len(strip_plan(r, dh, sh, pad_top))


@gluon.constexpr_function
def _strip_parity(i, r, dh, sh, pad_top):
    return strip_plan(r, dh, sh, pad_top)[i][0]


@gluon.constexpr_function
def _strip_origin(i, r, dh, sh, pad_top):
    return strip_plan(r, dh, sh, pad_top)[i][1]


@gluon.constexpr_function
def _strip_span(i, r, dh, sh, pad_top):
    """Rows strip i's last tap starts past its first (rows beyond BLOCK_P it needs)."""
    return max(strip_plan(r, dh, sh, pad_top)[i][2].values())


@gluon.constexpr_function
def _tap_strip(tap, r, dh, sh, pad_top):
    return _strip_of(tap, strip_plan(r, dh, sh, pad_top))


@gluon.constexpr_function
def _tap_row(tap, r, dh, sh, pad_top):
    plan = strip_plan(r, dh, sh, pad_top)
    return plan[_strip_of(tap, plan)][2][tap]


@gluon.constexpr_function
def _tap_leads(tap, r, dh, sh, pad_top):
    """Whether `tap` is its strip's first."""
    plan = strip_plan(r, dh, sh, pad_top)
    return min(plan[_strip_of(tap, plan)][2]) == tap


@gluon.constexpr_function
def _floor_div(a, b):
    return a // b


@gluon.constexpr_function
def _floor_mod(a, b):
    return a % b


@gluon.jit
def _tile_origin(tile, N, K, P, Q, BLOCK_P: gl.constexpr, BLOCK_Q: gl.constexpr,
                 BLOCK_N: gl.constexpr):  # fmt: skip
    """(n, p0, q0, k0) of `tile`; output-channel blocks fastest, so that neighbouring CTAs
    read the same strips from L2."""
    num_n = gl.cdiv(K, BLOCK_N)
    num_q = gl.cdiv(Q, BLOCK_Q)
    rest = tile // num_n
    p0 = (rest // num_q % gl.cdiv(P, BLOCK_P)) * BLOCK_P
    n = rest // num_q // gl.cdiv(P, BLOCK_P)
    return n, p0, (rest % num_q) * BLOCK_Q, (tile % num_n) * BLOCK_N


@gluon.jit
def _activation(x, ACTIVATION: gl.constexpr):
    """`ACTIVATION` of fp32 `x`, as `kernels/common.py`'s `activation` (PyTorch's math)."""
    if ACTIVATION == "relu":
        x = gl.maximum(x, 0.0)
    elif ACTIVATION == "relu6":
        x = gl.minimum(gl.maximum(x, 0.0), 6.0)
    elif ACTIVATION == "silu":
        x = x / (1.0 + gl.exp(-x))
    elif ACTIVATION == "gelu":
        x = 0.5 * x * (1.0 + gl.erf(x * 0.7071067811865476))  # x / sqrt(2)
    elif ACTIVATION == "hardswish":
        x = x * (gl.minimum(gl.maximum(x + 3.0, 0.0), 6.0) / 6.0)
    elif ACTIVATION == "sigmoid":
        x = 1.0 / (1.0 + gl.exp(-x))
    return x


@gluon.jit
def _strips_loader(x_desc, halo_desc, filt_desc, a_rows, b_bufs, a_ready, a_empty, b_ready,
                   b_empty, N, C, K, P, Q, num_tiles,
                   R: gl.constexpr, S: gl.constexpr, DH: gl.constexpr, DW: gl.constexpr,
                   SH: gl.constexpr, SW: gl.constexpr, PAD_TOP: gl.constexpr,
                   PAD_LEFT: gl.constexpr, HALO: gl.constexpr, A_STAGES: gl.constexpr,
                   BLOCK_N: gl.constexpr):  # fmt: skip
    """The loader warp: each strip, then the filter blocks of its taps, into the rings as
    slots free."""
    BLOCK_P: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_Q: gl.constexpr = x_desc.block_type.shape[3]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[4]
    B_STAGES: gl.constexpr = b_bufs.type.shape[0]
    STRIPS: gl.constexpr = _strips_per_column(R, DH, SH, PAD_TOP)
    STRIP_BYTES: gl.constexpr = x_desc.block_type.nbytes
    dtype: gl.constexpr = x_desc.dtype
    strip_count = 0
    step = 0
    for tile in range(gl.program_id(0), num_tiles, gl.num_programs(0)):
        n, p0, q0, k0 = _tile_origin(tile, N, K, P, Q, BLOCK_P, BLOCK_Q, BLOCK_N)
        for f in gl.static_range(S):
            # column q0*sw + f*dw - pad_left: a whole number of strides and a parity class
            w0 = q0 + _floor_div(f * DW - PAD_LEFT, SW)
            c0 = _floor_mod(f * DW - PAD_LEFT, SW) * C
            for c in range(0, C, BLOCK_K):
                for i in gl.static_range(STRIPS):
                    slot = strip_count % A_STAGES
                    # A fresh mbarrier counts as having finished the phase before its first.
                    mbarrier.wait(a_empty.index(slot), (strip_count // A_STAGES) & 1 ^ 1)
                    ready = a_ready.index(slot)
                    first_row = slot * (BLOCK_P + HALO)
                    h0 = p0 + _strip_origin(i, R, DH, SH, PAD_TOP)
                    parity = _strip_parity(i, R, DH, SH, PAD_TOP)
                    if _strip_span(i, R, DH, SH, PAD_TOP) > 0:
                        mbarrier.expect(ready, STRIP_BYTES + halo_desc.block_type.nbytes)
                        halo = a_rows.index(first_row + BLOCK_P)._reinterpret(
                            dtype, halo_desc.block_type.shape, halo_desc.layout)  # fmt: skip
                        tma.async_copy_global_to_shared(halo_desc,
                                                        [n, h0 + BLOCK_P, parity, w0, c0 + c],
                                                        ready, halo)  # fmt: skip
                    else:
                        mbarrier.expect(ready, STRIP_BYTES)
                    rows = a_rows.index(first_row)._reinterpret(dtype, x_desc.block_type.shape,
                                                                x_desc.layout)  # fmt: skip
                    tma.async_copy_global_to_shared(x_desc, [n, h0, parity, w0, c0 + c], ready,
                                                    rows)  # fmt: skip
                    strip_count += 1
                    for r in gl.static_range(R):
                        if _tap_strip(r, R, DH, SH, PAD_TOP) == i:
                            slot = step % B_STAGES
                            mbarrier.wait(b_empty.index(slot), (step // B_STAGES) & 1 ^ 1)
                            mbarrier.expect(b_ready.index(slot), filt_desc.block_type.nbytes)
                            block = b_bufs.index(slot)._reinterpret(
                                dtype, filt_desc.block_type.shape, filt_desc.layout)  # fmt: skip
                            tma.async_copy_global_to_shared(filt_desc, [k0, r * S + f, c],
                                                            b_ready.index(slot), block)  # fmt: skip
                            step += 1


@gluon.jit
def _strips_consumer(
    y_desc, bias_ptr, scale_ptr, res_ptr, a_rows, b_bufs, c_bufs,
    a_ready, a_empty, b_ready, b_empty, turn,
    N, C, K, P, Q, num_tiles, stride_b, stride_s,
    stride_rn, stride_rk, stride_rp, stride_rq,
    R: gl.constexpr, S: gl.constexpr, DH: gl.constexpr, SH: gl.constexpr,
    PAD_TOP: gl.constexpr, BLOCK_P: gl.constexpr, BLOCK_K: gl.constexpr, STRIP: gl.constexpr,
    A_STAGES: gl.constexpr, HAS_BIAS: gl.constexpr, HAS_SCALE: gl.constexpr,
    ACTIVATION: gl.constexpr, RESIDUAL: gl.constexpr, CONSUMER: gl.constexpr,
    CONSUMERS: gl.constexpr, num_warps: gl.constexpr,
):  # fmt: skip
    """A consumer warpgroup: a wgmma step a tap, each ring slot released once the step
    after its last use is issued and the one before has retired; then the epilogue.

    Two consumers take this program's tiles in turn. The rings fill in tile order, so a
    consumer starts its main loop only when the other has waited for its last step
    (`turn`): an mbarrier's phase parity cannot tell a fill from the one two fills before.
    """
    BLOCK_Q: gl.constexpr = c_bufs.type.shape[3]
    BLOCK_N: gl.constexpr = c_bufs.type.shape[4]
    BLOCK_M: gl.constexpr = BLOCK_P * BLOCK_Q
    B_STAGES: gl.constexpr = b_bufs.type.shape[0]
    STRIPS: gl.constexpr = _strips_per_column(R, DH, SH, PAD_TOP)
    dtype: gl.constexpr = a_rows.dtype
    a_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_K], dtype)
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1],
        instr_shape=[16, BLOCK_N, 256 // dtype.primitive_bitwidth])  # fmt: skip
    c_buf = c_bufs.index(CONSUMER)
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    blocks = S * gl.cdiv(C, BLOCK_K)  # (filter column, channel block) pairs a tile
    for tile in range(pid + CONSUMER * nprog, num_tiles, CONSUMERS * nprog):
        ring_tile = (tile - pid) // nprog  # the tile's place in the rings' order
        strip_count = ring_tile * blocks * STRIPS
        step = ring_tile * blocks * R
        if CONSUMERS > 1:
            turns = ring_tile // CONSUMERS  # this consumer's tiles so far
            mbarrier.wait(turn.index(CONSUMER), (turns & 1) ^ (1 - CONSUMER))
        acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.float32, layout=acc_layout)
        for j in range(blocks):
            for i in gl.static_range(STRIPS):
                a_slot = strip_count % A_STAGES
                mbarrier.wait(a_ready.index(a_slot), (strip_count // A_STAGES) & 1)
                for r in gl.static_range(R):
                    if _tap_strip(r, R, DH, SH, PAD_TOP) == i:
                        b_slot = step % B_STAGES
                        mbarrier.wait(b_ready.index(b_slot), (step // B_STAGES) & 1)
                        # tap (r, f): BLOCK_P rows of the strip from the tap's first
                        row = a_slot * STRIP + _tap_row(r, R, DH, SH, PAD_TOP)
                        a = a_rows.index(row)._reinterpret(
                            dtype, [BLOCK_M, BLOCK_K], a_layout)  # fmt: skip
                        # fp32 operands multiply in TF32, warpgroup_mma's default
                        acc = warpgroup_mma(a, b_bufs.index(b_slot).permute((1, 0)), acc,
                                            is_async=True)  # fmt: skip
                        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
                        # The step before this one has retired: its slots may be refilled.
                        before = b_empty.index((step + B_STAGES - 1) % B_STAGES)
                        if _tap_leads(r, R, DH, SH, PAD_TOP):  # ... the last strip's last tap
                            last = a_empty.index((strip_count + A_STAGES - 1) % A_STAGES)
                            if i == 0:  # (the tile's first strip follows the last tile's)
                                mbarrier.arrive(before, pred=j > 0)
                                mbarrier.arrive(last, pred=j > 0)
                            else:
                                mbarrier.arrive(before)
                                mbarrier.arrive(last)
                        else:
                            mbarrier.arrive(before)
                        step += 1
                strip_count += 1
        if CONSUMERS > 1:
            mbarrier.arrive(turn.index(1 - CONSUMER))
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(b_empty.index((step + B_STAGES - 1) % B_STAGES))
        mbarrier.arrive(a_empty.index((strip_count + A_STAGES - 1) % A_STAGES))

        n, p0, q0, k0 = _tile_origin(tile, N, K, P, Q, BLOCK_P, BLOCK_Q, BLOCK_N)
        k = k0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, acc_layout))  # [BLOCK_N]
        k_ok = k < K
        if HAS_SCALE:
            scale = gl.load(scale_ptr + k * stride_s, mask=k_ok, other=0.0)
            acc = acc * scale.to(gl.float32)[None, :]
        if HAS_BIAS:
            bias = gl.load(bias_ptr + k * stride_b, mask=k_ok, other=0.0)
            acc = acc + bias.to(gl.float32)[None, :]
        if RESIDUAL != "":
            m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, acc_layout))  # [BLOCK_M]
            p = p0 + m // BLOCK_Q
            q = q0 + m % BLOCK_Q
            pixel_ok = (p < P) & (q < Q)
            pixel = n.to(gl.int64) * stride_rn + p.to(gl.int64) * stride_rp + q * stride_rq
            offset = pixel[:, None] + (k.to(gl.int64) * stride_rk)[None, :]
            mask = pixel_ok[:, None] & k_ok[None, :]
            residual = gl.load(res_ptr + offset, mask=mask, other=0.0).to(gl.float32)
            if RESIDUAL == "before":
                acc = acc + residual
            acc = _activation(acc, ACTIVATION)
            if RESIDUAL == "after":
                acc = acc + residual
        else:
            acc = _activation(acc, ACTIVATION)
        # TMA clips the box at the tensor's edges
        tma.store_wait(pendings=0)  # this consumer's last store has left c_buf
        c_buf.reshape([BLOCK_M, BLOCK_N]).store(acc.to(y_desc.dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(y_desc, [n, p0, q0, k0], c_buf)
    tma.store_wait(pendings=0)


@gluon.jit
def _conv2d_fwd_strips_kernel(
    x_desc, halo_desc, filt_desc, y_desc, bias_ptr, scale_ptr, res_ptr,
    N, C, K, P, Q, num_tiles, stride_b, stride_s,
    stride_rn, stride_rk, stride_rp, stride_rq,
    R: gl.constexpr, S: gl.constexpr, DH: gl.constexpr, DW: gl.constexpr, SH: gl.constexpr,
    SW: gl.constexpr, PAD_TOP: gl.constexpr, PAD_LEFT: gl.constexpr, HALO: gl.constexpr,
    HAS_BIAS: gl.constexpr, HAS_SCALE: gl.constexpr, ACTIVATION: gl.constexpr,
    RESIDUAL: gl.constexpr, BLOCK_N: gl.constexpr, A_ROWS: gl.constexpr, B_STAGES: gl.constexpr,
    CONSUMERS: gl.constexpr, num_warps: gl.constexpr,
):  # fmt: skip
    """The rings, their barriers and the output tiles, then the loader and the consumers."""
    BLOCK_P: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_Q: gl.constexpr = x_desc.block_type.shape[3]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[4]
    STRIP: gl.constexpr = BLOCK_P + HALO
    A_STAGES: gl.constexpr = A_ROWS // STRIP
    gl.static_assert(A_STAGES >= 2 and A_STAGES <= 8, "the ring holds 2 to 8 strips")
    dtype: gl.constexpr = x_desc.dtype
    a_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_P * BLOCK_Q, BLOCK_K],
                                                                  dtype)  # fmt: skip
    a_rows = gl.allocate_shared_memory(dtype, [A_ROWS, BLOCK_Q, BLOCK_K], a_layout)
    b_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_K], dtype)
    b_bufs = gl.allocate_shared_memory(dtype, [B_STAGES, BLOCK_N, BLOCK_K], b_layout)
    c_bufs = gl.allocate_shared_memory(dtype, [CONSUMERS, 1, BLOCK_P,
                                               BLOCK_Q, BLOCK_N], y_desc.layout)  # fmt: skip
    # barriers for MAX_STRIPS strips (a power of two; A_STAGES need not be)
    a_ready = gl.allocate_shared_memory(gl.int64, [8, 1], mbarrier.MBarrierLayout())
    a_empty = gl.allocate_shared_memory(gl.int64, [8, 1], mbarrier.MBarrierLayout())
    b_ready = gl.allocate_shared_memory(gl.int64, [B_STAGES, 1], mbarrier.MBarrierLayout())
    b_empty = gl.allocate_shared_memory(gl.int64, [B_STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(A_STAGES):
        mbarrier.init(a_ready.index(i), count=1)
        mbarrier.init(a_empty.index(i), count=1)
    for i in gl.static_range(B_STAGES):
        mbarrier.init(b_ready.index(i), count=1)
        mbarrier.init(b_empty.index(i), count=1)
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)
    # Partition arguments are written out whole: a tuple built here would turn constexprs
    # into tensors.
    if CONSUMERS == 1:
        gl.warp_specialize([
            (_strips_consumer, (
                y_desc, bias_ptr, scale_ptr, res_ptr, a_rows, b_bufs, c_bufs, a_ready,
                a_empty, b_ready, b_empty, turn, N, C, K, P, Q, num_tiles, stride_b, stride_s,
                stride_rn, stride_rk, stride_rp, stride_rq, R, S, DH, SH, PAD_TOP, BLOCK_P,
                BLOCK_K, STRIP, A_STAGES, HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
                gl.constexpr(0), gl.constexpr(1),
                num_warps)),
            (_strips_loader, (
                x_desc, halo_desc, filt_desc, a_rows, b_bufs, a_ready, a_empty, b_ready, b_empty,
                N, C, K, P, Q, num_tiles, R, S, DH, DW, SH, SW, PAD_TOP, PAD_LEFT, HALO,
                A_STAGES, BLOCK_N)),
        ], [1], [40])  # fmt: skip
    else:  # the same consumer twice, tiles in turn
        gl.warp_specialize([
            (_strips_consumer, (
                y_desc, bias_ptr, scale_ptr, res_ptr, a_rows, b_bufs, c_bufs, a_ready,
                a_empty, b_ready, b_empty, turn, N, C, K, P, Q, num_tiles, stride_b, stride_s,
                stride_rn, stride_rk, stride_rp, stride_rq, R, S, DH, SH, PAD_TOP, BLOCK_P,
                BLOCK_K, STRIP, A_STAGES, HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
                gl.constexpr(0), gl.constexpr(2),
                num_warps)),
            (_strips_consumer, (
                y_desc, bias_ptr, scale_ptr, res_ptr, a_rows, b_bufs, c_bufs, a_ready,
                a_empty, b_ready, b_empty, turn, N, C, K, P, Q, num_tiles, stride_b, stride_s,
                stride_rn, stride_rk, stride_rp, stride_rq, R, S, DH, SH, PAD_TOP, BLOCK_P,
                BLOCK_K, STRIP, A_STAGES, HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
                gl.constexpr(1), gl.constexpr(2),
                num_warps)),
            (_strips_loader, (
                x_desc, halo_desc, filt_desc, a_rows, b_bufs, a_ready, a_empty, b_ready, b_empty,
                N, C, K, P, Q, num_tiles, R, S, DH, DW, SH, SW, PAD_TOP, PAD_LEFT, HALO,
                A_STAGES, BLOCK_N)),
        ], [num_warps, 1], [232, 40])  # fmt: skip


def halo_rows(problem: ConvProblem) -> int:
    """Rows a strip holds past its BLOCK_P: the longest span of a strip's taps
    (`strip_plan`; (R-1)*dh at unit stride), up to a power of two (a TMA box)."""
    params = problem.params
    plan = strip_plan(problem.r, params.dilation[0], params.stride[0], problem.pad_top_left[0])
    extra = max(max(rows.values()) for _, _, rows in plan)
    return next_power_of_2(extra) if extra else 0


def strips_supported(problem: ConvProblem) -> bool:
    """True when the kernel serves `problem`: one group, a tensor-core tier, a channels-last
    input TMA reads as the parity view [N, H/sh, sh, W/sw, sw*C] (`tma_view_supported`:
    exact, 16-byte aligned) with C a multiple of 16 bytes (of 128-byte channel blocks at a
    column stride above 1: `ragged_channels`), a strip's extra rows within a TMA box, and
    an output TMA stores: channels-last (`output_channels_last`; a call's output is dense)
    with rows of K elements a multiple of 16 bytes."""
    channels = problem.c * problem.itemsize % 16 == 0
    return (
        problem.groups == 1 and problem.math.tensor_cores and tma_view_supported(problem)
        and channels and (problem.params.stride[1] == 1 or not ragged_channels(problem))
        and halo_rows(problem) <= BOX_MAX
        and problem.output_channels_last and problem.k * problem.itemsize % 16 == 0
    )  # fmt: skip


def ragged_channels(problem: ConvProblem) -> bool:
    """Whether C leaves the last 128-byte channel block partly empty (TMA fills it with
    zeros)."""
    return problem.c * problem.itemsize % 128 != 0


def strips_fits(problem: ConvProblem, config: dict) -> bool:
    """Whether `config`'s ring holds at least two strips of `problem` and the halo fits."""
    rows = config["BLOCK_P"] + halo_rows(problem)
    return 2 <= config["A_ROWS"] // rows <= MAX_STRIPS


def strips_shared_bytes(config: dict, itemsize: int) -> int:
    """Shared memory `config` takes for elements of `itemsize` bytes (the rings and the
    output tiles; barriers aside)."""
    block_k = 128 // itemsize
    tiles = config["CONSUMERS"] * config["BLOCK_P"] * config["BLOCK_Q"] * config["BLOCK_N"]
    rows = config["A_ROWS"] * config["BLOCK_Q"] + config["num_stages"] * config["BLOCK_N"]
    return (rows * block_k + tiles) * itemsize


def strips_tiles(problem: ConvProblem, config: dict) -> int:
    """The tiles of `problem` under `config`: BLOCK_P x BLOCK_Q pixels x BLOCK_N channels."""
    pixels = cdiv(problem.p, config["BLOCK_P"]) * cdiv(problem.q, config["BLOCK_Q"])
    return problem.n * pixels * cdiv(problem.k, config["BLOCK_N"])


def max_registers(config: dict) -> int:
    """Registers a thread at launch so that one CTA (the consumers and the loader's
    warpgroup) fits an SM's 64K; the partitions then trade them (setmaxnreg)."""
    warps = config["CONSUMERS"] * config["num_warps"] + 4
    return 65536 // (warps * 32) // 8 * 8


def strips_boxes(config: dict, block_k: int, halo: int) -> dict[str, list[int]]:
    """The TMA boxes of the kernel's descriptors, by parameter name."""
    block_p, block_q, block_n = config["BLOCK_P"], config["BLOCK_Q"], config["BLOCK_N"]
    return dict(x_desc=[1, block_p, 1, block_q, block_k],
                halo_desc=[1, max(halo, 1), 1, block_q, block_k],
                filt_desc=[block_n, 1, block_k], y_desc=[1, block_p, block_q, block_n])  # fmt: skip


def _tma_storable(y: torch.Tensor) -> bool:
    """Whether y [N, K, P, Q] is a dense channels-last tensor a TMA store can write."""
    n, k, p, q = y.shape
    return y.stride() == (p * q * k, 1, q * k, k) and (k * y.element_size()) % 16 == 0 and (
        y.data_ptr() % 16 == 0
    )  # fmt: skip


def strips_launcher(problem: ConvProblem, config: dict, sms: int,
                    slot: dict | None = None) -> Callable[..., torch.Tensor]:  # fmt: skip
    """`launch(x, weight, bias, y, scale=None, residual=None)` filling `y` [N, K, P, Q], a
    dense channels-last tensor (`_tma_storable`), from inputs of `problem`'s signature
    (`strips_supported`), the problem's epilogue fused. `config`: BLOCK_P,
    BLOCK_Q, BLOCK_N, num_stages (filter blocks in the ring), num_warps (a consumer's),
    A_ROWS (image rows of the strips' ring), CONSUMERS (1, or 2 for ping-pong)."""
    n, c, h, w = problem.n, problem.c, problem.h, problem.w
    block_n = config["BLOCK_N"]
    halo = halo_rows(problem)
    boxes = strips_boxes(config, 128 // problem.itemsize, halo)
    x_box, halo_box, filt_box, y_box = boxes.values()
    layouts = {tuple(box): gl.NVMMASharedLayout.get_default_for(box, GL_DTYPES[problem.dtype])
               for box in boxes.values()}  # fmt: skip
    sn, _, s_h, s_w = problem.x_strides
    (sh, sw), (dh, dw) = problem.params.stride, problem.params.dilation
    pad_top, pad_left = problem.pad_top_left
    # [N, H/sh, sh, W/sw, sw*C]: parities as coordinates, as in conv2d_fwd_tma.py
    x_geometry = ([n, h // sh, sh, w // sw, sw * c], [sn, sh * s_h, s_h, sw * s_w, 1])
    taps = problem.r * problem.s
    filt_geometry = ([problem.k, taps, c], [taps * c, c, 1])  # [K, R*S, C]: zeros past C
    tiles = strips_tiles(problem, config)
    grid = (min(tiles, sms),)
    sizes = (n, c, problem.k, problem.p, problem.q, tiles)
    epilogue = problem.epilogue
    meta = dict(R=problem.r, S=problem.s, DH=dh, DW=dw, SH=sh, SW=sw, PAD_TOP=pad_top,
                PAD_LEFT=pad_left, HALO=halo, **epilogue.constexprs,
                BLOCK_N=block_n, A_ROWS=config["A_ROWS"],
                B_STAGES=config["num_stages"], CONSUMERS=config["CONSUMERS"],
                num_warps=config["num_warps"], maxnreg=max_registers(config))  # fmt: skip

    def tma(t, shape, strides, box):
        return descriptor(TensorDescriptor, slot, t, shape, strides, box, layouts[tuple(box)])

    def launch_into(x, weight, bias, y, scale=None, residual=None):
        if tiles == 0:
            return y
        if not _tma_storable(y):
            raise ValueError(
                f"y: the strips kernel writes a dense channels-last output with 16-byte "
                f"aligned rows, got shape {tuple(y.shape)}, strides {y.stride()}, "
                f"{y.dtype}, address {y.data_ptr()}"
            )
        filt = kernel_filter(weight, "rfc")  # [K, R*S*C]
        if filt.data_ptr() % 16:  # a view of a channels_last weight may start anywhere
            filt = filt.clone()
        x_desc = tma(x, *x_geometry, x_box)
        halo_desc = tma(x, *x_geometry, halo_box)
        filt_desc = tma(filt, filt_geometry[0], filt_geometry[1], filt_box)
        y_view = y.permute(0, 2, 3, 1)  # [N, P, Q, K]
        y_desc = tma(y_view, list(y_view.shape), list(y_view.stride()), y_box)
        args = (
            x_desc, halo_desc, filt_desc, y_desc, bias, scale, residual, *sizes,
            *strides_or_zeros(bias), *strides_or_zeros(scale), *strides_or_zeros(residual, 4),
        )  # fmt: skip
        flags = dict(HAS_BIAS=bias is not None, HAS_SCALE=scale is not None)
        launch(_conv2d_fwd_strips_kernel, grid, args, dict(meta, **flags), slot)
        return y

    return launch_into
