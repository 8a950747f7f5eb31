"""Window strips in shared memory: a persistent Gluon forward kernel whose taps share their
input rows on chip (exploration; channels-last, unit stride, 16-bit and tf32).

The deep layers' TMA kernels fetch every tap's window tile from L2 again: on conv8 a
128 x 128 tile moves 9 x 16 KB of input and 9 x 16 KB of filter for 9 k-steps, and its
L2 -> SM traffic (about 6 TB/s on the H200 at 394 TFLOPS) is what cuDNN, moving 0.7x as
much, beats. Here a tile is a BLOCK_P x BLOCK_Q patch of output pixels, and for each
filter column f and channel block the kernel loads one *strip*: the BLOCK_P + (R-1)*dh
input rows under the patch, shifted f*dw columns,

    strip_f[i, j, c] = X[n, p0 - pad_top + i, q0 - pad_left + f*dw + j, c0 + c]

(one 4-D TMA box, zero-filled outside the image). Tap (r, f) is then rows r*dh ..
r*dh + BLOCK_P - 1 of strip_f: BLOCK_Q whole pixels a row, so the tap's [BLOCK_M, BLOCK_K]
window tile is a slice of the strip's matrix view starting r*dh*BLOCK_Q rows in (a
multiple of 8 rows, so the 128-byte swizzle stays aligned). A strip feeds R wgmma steps:
the input crosses L2 S*(BLOCK_P + R - 1)/BLOCK_P times per tile instead of R*S.

Persistent CTAs walk their tiles in one flat step sequence, so the loads of the next tile
run during this one's last steps and its epilogue (a TMA store of the [BLOCK_P, BLOCK_Q,
BLOCK_N] output box). B (the filter [K, R*S*Cg] in (r, f, c) order) is one TMA box a step.

    PYTHONPATH=src python3 notes/mainloop/strips.py           # GPU: check, then time
    PYTHONPATH=src python3 notes/mainloop/strips.py compile   # CPU: compile for sm_90a only
"""

import itertools
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
import triton
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


@gluon.jit
def _issue(step, x_desc, halo_desc, filt_desc, a_bufs, b_bufs, a_bars, b_bars, pid, nprog,
           N, CG, KG, P, Q, pad_top, pad_left,
           R: gl.constexpr, S: gl.constexpr, DW: gl.constexpr, BLOCK_P: gl.constexpr,
           HALO: gl.constexpr, A_STAGES: gl.constexpr, B_STAGES: gl.constexpr):  # fmt: skip
    """The loads of flat step `step` of this program: the filter block, and the strip when
    the step is a strip's first tap."""
    BLOCK_Q: gl.constexpr = x_desc.block_type.shape[2]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = filt_desc.block_type.shape[0]
    ncb = CG // BLOCK_K
    total = S * ncb * R
    tile = pid + (step // total) * nprog
    t = step % total
    strip = t // R
    r = t % R
    f = strip // ncb
    c = (strip % ncb) * BLOCK_K
    n, p0, q0, k0 = _tile_origin(tile, N, KG, P, Q, BLOCK_P, BLOCK_Q, BLOCK_N)
    group = k0 // KG
    b_slot = step % B_STAGES
    mbarrier.expect(b_bars.index(b_slot), filt_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(filt_desc, [k0, (r * S + f) * CG + c], b_bars.index(b_slot),
                                    b_bufs.index(b_slot))  # fmt: skip
    if r == 0:
        a_index = (step // total) * (S * ncb) + strip  # this program's strip count
        a_slot = a_index % A_STAGES
        a_bar = a_bars.index(a_slot)
        h0 = p0 - pad_top
        w0 = q0 - pad_left + f * DW
        if HALO > 0:  # TMA boxes are powers of two: the strip's last (R-1)*dh rows apart
            mbarrier.expect(a_bar, x_desc.block_type.nbytes + halo_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(
                halo_desc,
                [n, h0 + BLOCK_P, w0, group * CG + c],
                a_bar,
                a_bufs.index(a_slot).slice(BLOCK_P, HALO, 1),
            )
        else:
            mbarrier.expect(a_bar, x_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(x_desc, [n, h0, w0, group * CG + c], a_bar,
                                        a_bufs.index(a_slot).slice(0, BLOCK_P, 1))  # fmt: skip


@gluon.jit
def _tile_origin(tile, N, KG, P, Q, BLOCK_P: gl.constexpr, BLOCK_Q: gl.constexpr,
                 BLOCK_N: gl.constexpr):  # fmt: skip
    """(n, p0, q0, k0) of `tile`; output-channel blocks fastest (neighbours share strips)."""
    num_n = gl.cdiv(KG, BLOCK_N)
    num_q = gl.cdiv(Q, BLOCK_Q)
    num_p = gl.cdiv(P, BLOCK_P)
    pid_n = tile % num_n
    rest = tile // num_n
    q0 = (rest % num_q) * BLOCK_Q
    p0 = (rest // num_q % num_p) * BLOCK_P
    n = rest // num_q // num_p % N
    group = rest // num_q // num_p // N
    return n, p0, q0, group * KG + pid_n * BLOCK_N


@gluon.jit
def _conv2d_fwd_strips_kernel(
    x_desc, halo_desc, filt_desc, y_desc, bias_ptr,
    N, CG, KG, P, Q, num_tiles, pad_top, pad_left,
    R: gl.constexpr, S: gl.constexpr, DH: gl.constexpr, DW: gl.constexpr, HALO: gl.constexpr,
    HAS_BIAS: gl.constexpr, A_STAGES: gl.constexpr, B_STAGES: gl.constexpr,
    num_warps: gl.constexpr,
):  # fmt: skip
    BLOCK_P: gl.constexpr = x_desc.block_type.shape[1]
    # rows of a strip: tap r reads BLOCK_P of them from r*dh (shared-memory shapes are powers
    # of two: rows past BLOCK_P + HALO are never read)
    STRIP: gl.constexpr = BLOCK_P if HALO == 0 else 2 * BLOCK_P
    gl.static_assert(BLOCK_P + HALO <= STRIP, "the halo fits the strip")
    BLOCK_Q: gl.constexpr = x_desc.block_type.shape[2]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = filt_desc.block_type.shape[0]
    BLOCK_M: gl.constexpr = BLOCK_P * BLOCK_Q
    dtype: gl.constexpr = x_desc.dtype

    a_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_K], dtype)
    a_bufs = gl.allocate_shared_memory(dtype, [A_STAGES, 1, STRIP, BLOCK_Q, BLOCK_K], x_desc.layout)
    b_bufs = gl.allocate_shared_memory(dtype, [B_STAGES, BLOCK_N, BLOCK_K], filt_desc.layout)
    c_buf = gl.allocate_shared_memory(y_desc.dtype, [1, BLOCK_P, BLOCK_Q, BLOCK_N], y_desc.layout)
    a_bars = gl.allocate_shared_memory(gl.int64, [A_STAGES, 1], mbarrier.MBarrierLayout())
    b_bars = gl.allocate_shared_memory(gl.int64, [B_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(A_STAGES):
        mbarrier.init(a_bars.index(i), count=1)
    for i in gl.static_range(B_STAGES):
        mbarrier.init(b_bars.index(i), count=1)

    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    my_tiles = gl.cdiv(num_tiles - pid, nprog)
    ncb = CG // BLOCK_K
    strips = S * ncb
    total = strips * R
    my_steps = my_tiles * total

    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1],
        instr_shape=[16, BLOCK_N, 256 // dtype.primitive_bitwidth])  # fmt: skip

    produced = pid * 0  # a tensor: carried through the loops
    for _load in gl.static_range(B_STAGES - 1):  # the first loads
        if produced < my_steps:
            _issue(produced, x_desc, halo_desc, filt_desc, a_bufs, b_bufs, a_bars, b_bars, pid,
                   nprog,
                   N, CG, KG, P, Q, pad_top, pad_left, R, S, DW, BLOCK_P, HALO, A_STAGES,
                   B_STAGES)  # fmt: skip
            produced += 1
    consumed = pid * 0
    strip_count = pid * 0
    for i in range(my_tiles):
        tile = pid + i * nprog
        acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.float32, layout=mma_layout)
        for _strip in range(strips):
            a_slot = strip_count % A_STAGES
            mbarrier.wait(a_bars.index(a_slot), (strip_count // A_STAGES) & 1)
            # [STRIP, BLOCK_Q, BLOCK_K]: each image row of the strip a whole number of swizzle
            # atoms (BLOCK_Q*128 bytes), so the matrix layout holds row by row
            rows = a_bufs.index(a_slot)._reinterpret(dtype, [STRIP, BLOCK_Q, BLOCK_K], a_layout)
            for r in gl.static_range(R):
                b_slot = consumed % B_STAGES
                mbarrier.wait(b_bars.index(b_slot), (consumed // B_STAGES) & 1)
                # tap (r, f): the BLOCK_M strip rows from r*dh, a view starting inside the
                # strip (subslices must start at a multiple of their size: not this one)
                a = rows.index(r * DH)._reinterpret(dtype, [BLOCK_M, BLOCK_K], a_layout)
                b = b_bufs.index(b_slot).permute((1, 0))  # [BLOCK_K, BLOCK_N]
                acc = warpgroup_mma(a, b, acc, is_async=True)
                # the step before this one is done: its B slot (and strip) may be refilled
                acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
                consumed += 1
                if produced < my_steps:
                    _issue(produced, x_desc, halo_desc, filt_desc, a_bufs, b_bufs, a_bars, b_bars,
                           pid,
                           nprog, N, CG, KG, P, Q, pad_top, pad_left, R, S, DW, BLOCK_P,
                           HALO, A_STAGES, B_STAGES)  # fmt: skip
                    produced += 1
            strip_count += 1
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))

        n, p0, q0, k0 = _tile_origin(tile, N, KG, P, Q, BLOCK_P, BLOCK_Q, BLOCK_N)
        if HAS_BIAS:
            kn = k0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma_layout))
            bias = gl.load(bias_ptr + kn, mask=kn < (k0 // KG + 1) * KG, other=0.0)
            acc = acc + bias.to(gl.float32)[None, :]
        tma.store_wait(pendings=0)  # the last tile's store has left c_buf
        c_buf.reshape([BLOCK_M, BLOCK_N]).store(acc.to(y_desc.dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(y_desc, [n, p0, q0, k0], c_buf)
    tma.store_wait(pendings=0)
    for i in gl.static_range(A_STAGES):
        mbarrier.invalidate(a_bars.index(i))
    for i in gl.static_range(B_STAGES):
        mbarrier.invalidate(b_bars.index(i))


@gluon.jit
def _strips_loader(x_desc, halo_desc, filt_desc, a_rows, b_bufs, a_ready, a_empty, b_ready,
                   b_empty, N, CG, KG, P, Q, num_tiles, pad_top, pad_left,
                   R: gl.constexpr, S: gl.constexpr, DW: gl.constexpr,
                   HALO: gl.constexpr, A_STAGES: gl.constexpr):  # fmt: skip
    """Producer warp: each strip, then its R filter blocks, into the rings as slots free."""
    BLOCK_P: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_Q: gl.constexpr = x_desc.block_type.shape[2]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = filt_desc.block_type.shape[0]
    B_STAGES: gl.constexpr = b_bufs.type.shape[0]
    dtype: gl.constexpr = x_desc.dtype
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    ncb = CG // BLOCK_K
    strip_count = 0
    step = 0
    for tile in range(pid, num_tiles, nprog):
        n, p0, q0, k0 = _tile_origin(tile, N, KG, P, Q, BLOCK_P, BLOCK_Q, BLOCK_N)
        channel0 = (k0 // KG) * CG
        h0 = p0 - pad_top
        for f in range(S):
            w0 = q0 - pad_left + f * DW
            for cb in range(ncb):
                c = channel0 + cb * BLOCK_K
                a_slot = strip_count % A_STAGES
                mbarrier.wait(a_empty.index(a_slot), (strip_count // A_STAGES) & 1 ^ 1)
                bar = a_ready.index(a_slot)
                first_row = a_slot * (BLOCK_P + HALO)
                if HALO > 0:
                    mbarrier.expect(bar, x_desc.block_type.nbytes + halo_desc.block_type.nbytes)
                    halo_rows = a_rows.index(first_row + BLOCK_P)._reinterpret(
                        dtype, halo_desc.block_type.shape, halo_desc.layout
                    )
                    tma.async_copy_global_to_shared(
                        halo_desc, [n, h0 + BLOCK_P, w0, c], bar, halo_rows
                    )
                else:
                    mbarrier.expect(bar, x_desc.block_type.nbytes)
                main_rows = a_rows.index(first_row)._reinterpret(
                    dtype, x_desc.block_type.shape, x_desc.layout
                )
                tma.async_copy_global_to_shared(x_desc, [n, h0, w0, c], bar, main_rows)
                strip_count += 1
                for r in gl.static_range(R):
                    b_slot = step % B_STAGES
                    mbarrier.wait(b_empty.index(b_slot), (step // B_STAGES) & 1 ^ 1)
                    mbarrier.expect(b_ready.index(b_slot), filt_desc.block_type.nbytes)
                    column = (r * S + f) * CG + cb * BLOCK_K
                    tma.async_copy_global_to_shared(
                        filt_desc, [k0, column], b_ready.index(b_slot), b_bufs.index(b_slot)
                    )
                    step += 1


@gluon.jit
def _strips_mma(y_desc, bias_ptr, a_rows, b_bufs, c_bufs, a_ready, a_empty, b_ready, b_empty,
                turn, N, CG, KG, P, Q, num_tiles,
                R: gl.constexpr, S: gl.constexpr, DH: gl.constexpr, BLOCK_P: gl.constexpr,
                BLOCK_K: gl.constexpr, STRIP: gl.constexpr, A_STAGES: gl.constexpr,
                HAS_BIAS: gl.constexpr, CONSUMER: gl.constexpr, CONSUMERS: gl.constexpr,
                num_warps: gl.constexpr):  # fmt: skip
    """A consumer warpgroup: R wgmma steps a strip, each ring slot released once the step
    after its last use has been issued and the one before it retired; then the epilogue.

    With two consumers (ping-pong) they take this program's tiles in turn: one's epilogue
    runs under the other's main loop. The ring is filled in tile order, so a consumer
    starts its main loop only when the other has waited for its last step (`turn`): an
    mbarrier's phase parity cannot tell a slot's fill from the one two fills earlier."""
    BLOCK_Q: gl.constexpr = c_bufs.type.shape[3]
    BLOCK_N: gl.constexpr = c_bufs.type.shape[4]
    BLOCK_M: gl.constexpr = BLOCK_P * BLOCK_Q
    B_STAGES: gl.constexpr = b_bufs.type.shape[0]
    dtype: gl.constexpr = a_rows.dtype
    a_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_K], dtype)
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1],
        instr_shape=[16, BLOCK_N, 256 // dtype.primitive_bitwidth])  # fmt: skip
    c_buf = c_bufs.index(CONSUMER)
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    strips = S * (CG // BLOCK_K)
    turns = 0
    for tile in range(pid + CONSUMER * nprog, num_tiles, CONSUMERS * nprog):
        ring_tile = (tile - pid) // nprog  # the tile's place in this program's ring order
        strip_count = ring_tile * strips
        step = ring_tile * strips * R
        if CONSUMERS > 1:
            mbarrier.wait(turn.index(CONSUMER), (turns & 1) ^ (1 - CONSUMER))
        acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.float32, layout=mma_layout)
        for j in range(strips):
            a_slot = strip_count % A_STAGES
            mbarrier.wait(a_ready.index(a_slot), (strip_count // A_STAGES) & 1)
            first_row = a_slot * STRIP
            for r in gl.static_range(R):
                b_slot = step % B_STAGES
                mbarrier.wait(b_ready.index(b_slot), (step // B_STAGES) & 1)
                # tap (r, f): BLOCK_P image rows of the strip from row r*dh
                a = a_rows.index(first_row + r * DH)._reinterpret(
                    dtype, [BLOCK_M, BLOCK_K], a_layout
                )
                acc = warpgroup_mma(a, b_bufs.index(b_slot).permute((1, 0)), acc, is_async=True)
                acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
                # the step before this one has retired: its slots may be refilled
                previous_b = b_empty.index((step + B_STAGES - 1) % B_STAGES)
                if r == 0:  # ... and it was the last tap of the previous strip
                    mbarrier.arrive(previous_b, pred=j > 0)
                    mbarrier.arrive(
                        a_empty.index((strip_count + A_STAGES - 1) % A_STAGES), pred=j > 0
                    )
                else:
                    mbarrier.arrive(previous_b)
                step += 1
            strip_count += 1
        if CONSUMERS > 1:
            mbarrier.arrive(turn.index(1 - CONSUMER))
        turns += 1  # noqa: SIM113 - a loop-carried counter of the kernel
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(b_empty.index((step + B_STAGES - 1) % B_STAGES))
        mbarrier.arrive(a_empty.index((strip_count + A_STAGES - 1) % A_STAGES))

        n, p0, q0, k0 = _tile_origin(tile, N, KG, P, Q, BLOCK_P, BLOCK_Q, BLOCK_N)
        if HAS_BIAS:
            kn = k0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma_layout))
            bias = gl.load(bias_ptr + kn, mask=kn < (k0 // KG + 1) * KG, other=0.0)
            acc = acc + bias.to(gl.float32)[None, :]
        tma.store_wait(pendings=0)  # this consumer's last store has left c_buf
        c_buf.reshape([BLOCK_M, BLOCK_N]).store(acc.to(y_desc.dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(y_desc, [n, p0, q0, k0], c_buf)
    tma.store_wait(pendings=0)


@gluon.jit
def _conv2d_fwd_strips_ws_kernel(
    x_desc, halo_desc, filt_desc, y_desc, bias_ptr,
    N, CG, KG, P, Q, num_tiles, pad_top, pad_left,
    R: gl.constexpr, S: gl.constexpr, DH: gl.constexpr, DW: gl.constexpr, HALO: gl.constexpr,
    HAS_BIAS: gl.constexpr, A_ROWS: gl.constexpr, B_STAGES: gl.constexpr,
    CONSUMERS: gl.constexpr, num_warps: gl.constexpr,
):  # fmt: skip
    """The strips kernel warp-specialized: a loader warp and one or two (ping-pong)
    consumers of `num_warps` warps.

    The strips' ring is A_ROWS image rows of BLOCK_Q pixels; a strip takes BLOCK_P + HALO of
    them, wherever it starts (a view at any row is a whole number of swizzle atoms), so the
    ring holds A_ROWS // (BLOCK_P + HALO) strips where power-of-two slots would hold fewer.
    """
    BLOCK_P: gl.constexpr = x_desc.block_type.shape[1]
    STRIP: gl.constexpr = BLOCK_P + HALO
    A_STAGES: gl.constexpr = A_ROWS // STRIP
    BLOCK_Q: gl.constexpr = x_desc.block_type.shape[2]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = filt_desc.block_type.shape[0]
    dtype: gl.constexpr = x_desc.dtype
    a_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for(
        [BLOCK_P * BLOCK_Q, BLOCK_K], dtype
    )
    a_rows = gl.allocate_shared_memory(dtype, [A_ROWS, BLOCK_Q, BLOCK_K], a_layout)
    b_bufs = gl.allocate_shared_memory(dtype, [B_STAGES, BLOCK_N, BLOCK_K], filt_desc.layout)
    c_bufs = gl.allocate_shared_memory(
        y_desc.dtype, [CONSUMERS, 1, BLOCK_P, BLOCK_Q, BLOCK_N], y_desc.layout
    )
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(turn.index(0), count=1)
    mbarrier.init(turn.index(1), count=1)
    gl.static_assert(A_STAGES <= 8, "at most 8 strips in the ring")
    a_ready = gl.allocate_shared_memory(gl.int64, [8, 1], mbarrier.MBarrierLayout())
    a_empty = gl.allocate_shared_memory(gl.int64, [8, 1], mbarrier.MBarrierLayout())
    b_ready = gl.allocate_shared_memory(gl.int64, [B_STAGES, 1], mbarrier.MBarrierLayout())
    b_empty = gl.allocate_shared_memory(gl.int64, [B_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(A_STAGES):
        mbarrier.init(a_ready.index(i), count=1)
        mbarrier.init(a_empty.index(i), count=1)
    for i in gl.static_range(B_STAGES):
        mbarrier.init(b_ready.index(i), count=1)
        mbarrier.init(b_empty.index(i), count=1)
    if CONSUMERS == 1:
        gl.warp_specialize([
            (_strips_mma, (y_desc, bias_ptr, a_rows, b_bufs, c_bufs, a_ready, a_empty, b_ready,
                           b_empty, turn, N, CG, KG, P, Q, num_tiles, R, S, DH, BLOCK_P, BLOCK_K,
                           STRIP, A_STAGES, HAS_BIAS, gl.constexpr(0), gl.constexpr(1), num_warps)),
            (_strips_loader, (x_desc, halo_desc, filt_desc, a_rows, b_bufs, a_ready, a_empty,
                              b_ready, b_empty, N, CG, KG, P, Q, num_tiles, pad_top, pad_left,
                              R, S, DW, HALO, A_STAGES)),
        ], [1], [40])  # fmt: skip
    else:  # the same consumer twice, as CONSUMER 0 and 1
        gl.warp_specialize([
            (_strips_mma, (y_desc, bias_ptr, a_rows, b_bufs, c_bufs, a_ready, a_empty, b_ready,
                           b_empty, turn, N, CG, KG, P, Q, num_tiles, R, S, DH, BLOCK_P, BLOCK_K,
                           STRIP, A_STAGES, HAS_BIAS, gl.constexpr(0), gl.constexpr(2), num_warps)),
            (_strips_mma, (y_desc, bias_ptr, a_rows, b_bufs, c_bufs, a_ready, a_empty, b_ready,
                           b_empty, turn, N, CG, KG, P, Q, num_tiles, R, S, DH, BLOCK_P, BLOCK_K,
                           STRIP, A_STAGES, HAS_BIAS, gl.constexpr(1), gl.constexpr(2), num_warps)),
            (_strips_loader, (x_desc, halo_desc, filt_desc, a_rows, b_bufs, a_ready, a_empty,
                              b_ready, b_empty, N, CG, KG, P, Q, num_tiles, pad_top, pad_left,
                              R, S, DW, HALO, A_STAGES)),
        ], [num_warps, 1], [232, 40])  # fmt: skip


GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}


def max_registers(warps: int, consumers: int) -> int:
    """Registers a thread at launch so that one CTA (consumers and the loader's warpgroup)
    fits the SM's 64K; the partitions then trade them (setmaxnreg)."""
    return 65536 // ((consumers * warps + 4) * 32) // 8 * 8


def a_stages(b_stages: int, r: int) -> int:
    """Strip slots so that a strip is refilled only after its last tap's step is done."""
    return 1 + -(-(b_stages - 1) // r)


def strips_conv(x, weight, bias, y, padding, config, num_sms):
    """y [N, K, P, Q] (channels_last) = conv2d(x, weight, bias, padding) for channels-last
    x and weight, unit stride and dilation, one group, KG a multiple of BLOCK_N."""
    block_p, block_q, block_n, b_stages, warps, a_rows, consumers = config
    n, c, h, w = x.shape
    k, cg, r, s = weight.shape
    p, q = y.shape[2:]
    block_k = 128 // x.element_size()
    while cg % block_k:
        block_k //= 2
    g = GL_DTYPES[x.dtype]
    filt = weight.permute(0, 2, 3, 1).reshape(k, -1)  # [K, R*S*Cg], no copy if channels_last
    halo = triton.next_power_of_2(r - 1) if r > 1 else 0
    x_box, halo_box = [1, block_p, block_q, block_k], [1, max(halo, 1), block_q, block_k]
    y_box = [1, block_p, block_q, block_n]
    x_nhwc = x.permute(0, 2, 3, 1)
    x_desc = TensorDescriptor.from_tensor(
        x_nhwc, x_box, gl.NVMMASharedLayout.get_default_for(x_box, g)
    )
    halo_desc = TensorDescriptor.from_tensor(
        x_nhwc, halo_box, gl.NVMMASharedLayout.get_default_for(halo_box, g)
    )
    f_desc = TensorDescriptor.from_tensor(
        filt, [block_n, block_k], gl.NVMMASharedLayout.get_default_for([block_n, block_k], g)
    )
    y_desc = TensorDescriptor.from_tensor(
        y.permute(0, 2, 3, 1), y_box, gl.NVMMASharedLayout.get_default_for(y_box, g)
    )
    tiles = n * triton.cdiv(p, block_p) * triton.cdiv(q, block_q) * triton.cdiv(k, block_n)
    grid = (min(tiles, num_sms),)
    if a_rows:  # the loader's warpgroup beside the consumers'; registers for one CTA an SM
        _conv2d_fwd_strips_ws_kernel[grid](
            x_desc, halo_desc, f_desc, y_desc, bias, n, cg, k, p, q, tiles, *padding,
            R=r, S=s, DH=1, DW=1, HALO=halo, HAS_BIAS=bias is not None, A_ROWS=a_rows,
            B_STAGES=b_stages, CONSUMERS=consumers, num_warps=warps,
            maxnreg=max_registers(warps, consumers))  # fmt: skip
    else:
        _conv2d_fwd_strips_kernel[grid](
            x_desc, halo_desc, f_desc, y_desc, bias, n, cg, k, p, q, tiles, *padding,
            R=r, S=s, DH=1, DW=1, HALO=halo, HAS_BIAS=bias is not None,
            A_STAGES=a_stages(b_stages, r), B_STAGES=b_stages, num_warps=warps)  # fmt: skip
    return y


def compile_check():
    """Compile every config for sm_90a without a GPU (3x3 and 1x1, bf16; 3x3 tf32): shared
    memory, and whether A reaches the wgmma from shared memory."""
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415
    from triton.experimental.gluon._runtime import GluonASTSource  # noqa: PLC0415

    cases = [(torch.bfloat16, 3), (torch.bfloat16, 1), (torch.float32, 3)]
    for (dtype, r), config in itertools.product(cases, CONFIGS):
        if not valid(config, r, 256 if config[2] > 64 else 64, dtype):
            continue
        bp, bq, bn, stages, warps, a_rows, consumers = config
        fn = _conv2d_fwd_strips_ws_kernel if a_rows else _conv2d_fwd_strips_kernel
        dt, ptr = GL_DTYPES[dtype], {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
        bk = 128 // dtype.itemsize
        halo = triton.next_power_of_2(r - 1) if r > 1 else 0
        boxes = dict(x_desc=[1, bp, bq, bk], halo_desc=[1, max(halo, 1), bq, bk],
                     filt_desc=[bn, bk], y_desc=[1, bp, bq, bn])  # fmt: skip
        sig = {a: "i32" for a in fn.arg_names}
        for name, box in boxes.items():
            layout = gl.NVMMASharedLayout.get_default_for(box, dt)
            sig[name] = f"tensordesc<{ptr}[{','.join(map(str, box))}],{layout!r}>"
        sig["bias_ptr"] = f"*{ptr}"
        const = dict(R=r, S=r, DH=1, DW=1, HALO=halo, HAS_BIAS=True, B_STAGES=stages,
                     num_warps=warps)  # fmt: skip
        const.update(dict(A_ROWS=a_rows, CONSUMERS=consumers) if a_rows
                     else dict(A_STAGES=a_stages(stages, r)))  # fmt: skip
        sig.update({k: "constexpr" for k in const})
        src = GluonASTSource(
            fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()}
        )
        options = dict(num_warps=warps)
        if a_rows:
            options["maxnreg"] = max_registers(warps, consumers)
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
        ttgir = kernel.asm["ttgir"]
        print(
            f"{str(dtype)[6:]} {r}x{r} {config}: shared {kernel.metadata.shared} bytes, "
            f"A from registers: {'dot_op<{opIdx = 0' in ttgir}",
            flush=True,
        )


# (BLOCK_P, BLOCK_Q, BLOCK_N, B_STAGES, warps, A_ROWS, CONSUMERS): A_ROWS image rows of
# strips in the warp-specialized kernel's ring and its consumers (2: ping-pong); 0 and 0 for
# the single-partition kernel (2*BLOCK_P-row slots)
CONFIGS = [(8, 16, 128, 4, 4, 0, 0),
           (8, 16, 128, 6, 4, 32, 1), (8, 16, 64, 6, 4, 32, 1), (8, 16, 256, 3, 8, 32, 1),
           (8, 8, 256, 4, 4, 32, 1), (4, 16, 128, 6, 4, 32, 1), (4, 16, 256, 4, 4, 32, 1),
           (8, 16, 128, 4, 4, 32, 2), (8, 16, 64, 6, 4, 32, 2), (8, 8, 128, 4, 4, 64, 2),
           (4, 16, 128, 4, 4, 32, 2)]  # fmt: skip
ODD = [  # N, C, H, W, K, R, S, padding, bias
    (1, 16, 13, 11, 40, 3, 3, (1, 1), True),
    (3, 64, 17, 9, 136, 3, 3, (0, 2), False),  # K: the TMA store wants 16-byte rows
    (2, 64, 10, 21, 64, 1, 1, (0, 0), True),
    (2, 128, 7, 7, 72, 3, 3, (1, 1), True),
    (1, 32, 30, 5, 24, 5, 3, (2, 1), False),
    (2, 96, 12, 13, 256, 5, 5, (0, 0), True),
    (1, 48, 9, 19, 8, 7, 7, (3, 3), True),
]
LAYERS = [  # name, C, H=W, K, R=S, padding (unit stride, batch 128)
    ("conv5", 96, 24, 256, 5, 0), ("conv6", 256, 12, 512, 3, 0), ("conv8", 64, 112, 128, 3, 0),
    ("conv9", 64, 56, 64, 3, 0), ("conv10", 128, 28, 128, 3, 0), ("conv11", 256, 14, 256, 3, 0),
    ("conv12", 512, 7, 512, 3, 0), ("r50-l1-3x3", 64, 56, 64, 3, 1),
    ("r50-l2-3x3", 128, 28, 128, 3, 1), ("r50-l3-3x3", 256, 14, 256, 3, 1),
    ("r50-l4-3x3", 512, 7, 512, 3, 1), ("r50-l1-1x1-256", 64, 56, 256, 1, 0),
    ("r50-l3-1x1-reduce", 1024, 14, 256, 1, 0),
]  # fmt: skip


def valid(config, r, k, dtype):
    """The config fits sm90's shared memory, holds two strips, and suits K."""
    block_p, block_q, block_n, stages, warps, a_rows, consumers = config
    halo = triton.next_power_of_2(r - 1) if r > 1 else 0
    bk = 128 // dtype.itemsize
    if a_rows:
        strips_rows = a_rows if a_rows // (block_p + halo) >= 2 else 0
    else:
        strips_rows = a_stages(stages, r) * (2 * block_p if halo else block_p)
    shared = (strips_rows * block_q * bk + stages * block_n * bk
              + max(consumers, 1) * block_p * block_q * block_n) * dtype.itemsize  # fmt: skip
    return (strips_rows > 0 and halo <= block_p and shared <= 227 * 1024
            and (block_n <= 128 or k >= 256) and (block_n >= 128 or k <= 64))  # fmt: skip


def check(dtypes, num_sms, say):
    """Every config on the odd shapes, outputs poisoned, against a float64 reference."""
    runs = bad = 0
    for dtype, (n, c, h, w, k, r, s, pad, has_bias) in itertools.product(dtypes, ODD):
        x = torch.randn(n, c, h, w, device="cuda").to(
            dtype=dtype, memory_format=torch.channels_last
        )
        wt = torch.randn(k, c, r, s, device="cuda").to(
            dtype=dtype, memory_format=torch.channels_last
        )
        b = torch.randn(k, device="cuda", dtype=dtype) if has_bias else None
        ref = F.conv2d(x.double(), wt.double(), None if b is None else b.double(), 1, pad)
        for config in CONFIGS:
            if not valid(config, r, min(k, 256), dtype):
                continue
            y = torch.full(ref.shape, float("nan"), device="cuda", dtype=dtype)
            y = y.to(memory_format=torch.channels_last)
            strips_conv(x, wt, b, y, pad, config, num_sms)
            err = ((y.double() - ref).norm() / ref.norm()).item()
            runs += 1
            if not err < (1e-2 if dtype != torch.float32 else 2e-3):
                bad += 1
                say(f"WRONG {dtype} {(n, c, h, w, k, r, s, pad, has_bias)} {config}: {err:.3g}")
    say(f"odd shapes: {runs} runs, {bad} wrong")
    return bad


def main():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
    from kernel_time import gpu_ms  # noqa: PLC0415

    import im2win  # noqa: PLC0415
    from im2win.baselines.common import set_fp32_precision  # noqa: PLC0415
    from im2win.bench.env import provenance  # noqa: PLC0415
    from im2win.bench.timing import FLUSH_BYTES  # noqa: PLC0415

    out = os.environ.get("OUT", ".")
    log = open(os.path.join(out, "strips.log"), "w")  # noqa: SIM115

    def say(text):
        print(text, flush=True)
        log.write(text + "\n")

    tiers = {"bf16": torch.bfloat16, "tf32": torch.float32}
    chosen = [tiers[t] for t in (sys.argv[1].split(",") if sys.argv[1:] else ["bf16"])]
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    torch.backends.cudnn.benchmark = True
    meta = provenance(torch.device("cuda"), " ".join(["python3", *sys.argv]))
    say(json.dumps(meta))
    start = time.time()
    if check(chosen, num_sms, say):
        return
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    rows = []
    for dtype, (name, c, hw, k, rs, pd) in itertools.product(chosen, LAYERS):
        if time.time() - start > float(os.environ.get("STRIPS_BUDGET_S", 400)):
            say(f"time guard: stopped before {name} {dtype}")
            break
        set_fp32_precision(dtype == torch.float32)
        n, pad = 128, (pd, pd)
        x = torch.randn(n, c, hw, hw, device="cuda").to(
            dtype=dtype, memory_format=torch.channels_last
        )
        wt = torch.randn(k, c, rs, rs, device="cuda").to(
            dtype=dtype, memory_format=torch.channels_last
        )
        p = hw + 2 * pd - rs + 1
        tflops = 2 * n * k * c * rs * rs * p * p / 1e9  # / ms
        ref = F.conv2d(x, wt, None, 1, pad)
        row = dict(meta, layer=name, dtype=str(dtype)[6:], batch=n, layout="NHWC", ms={})
        # (each lambda is timed before the loop moves on)
        row["ms"]["cudnn"] = gpu_ms(lambda: F.conv2d(x, wt, None, 1, pad), flush)  # noqa: B023
        row["ms"]["im2win"] = gpu_ms(lambda: im2win.conv2d(x, wt, None, 1, pad), flush)  # noqa: B023
        y = torch.empty_like(ref)
        for config in CONFIGS:
            if not valid(config, rs, k, dtype):
                continue
            y.fill_(float("nan"))
            strips_conv(x, wt, None, y, pad, config, num_sms)
            err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
            key = "strips" + "x".join(map(str, config[:5]))
            key += f"-ws{config[5]}" + ("-pingpong" if config[6] == 2 else "") if config[5] else ""
            if err < 2e-2:
                run = lambda: strips_conv(x, wt, None, y, pad, config, num_sms)  # noqa: B023, E731
                row["ms"][key] = gpu_ms(run, flush)
            else:
                row["ms"][key] = float("nan")
                say(f"WRONG on {name}: {config} {err:.3g}")
        rows.append(row)
        ms = row["ms"]
        best = min((v, key) for key, v in ms.items() if key.startswith("strips") and v == v)
        say(f"{name:18s} {row['dtype']:8s} TFLOPS cudnn {tflops / ms['cudnn']:4.0f} "
            f"im2win {tflops / ms['im2win']:4.0f} strips {tflops / best[0]:4.0f} ({best[1][6:]})"
            f"  vs cudnn {ms['cudnn'] / best[0]:.2f}x")  # fmt: skip
    with open(os.path.join(out, "strips.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    compile_check() if sys.argv[1:] == ["compile"] else main()
