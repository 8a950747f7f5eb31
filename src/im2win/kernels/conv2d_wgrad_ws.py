"""Weight gradient on a main loop of its own: a persistent, warp-specialized Gluon kernel for
Hopper (sm_90a), 16-bit channels-last tensors.

The operands are the TMA kernel's (`conv2d_wgrad_tma.py`): per tap (r, f), the windows of a
BLOCK_P x BLOCK_Q patch of output pixels are a box of the input (the forward's parity view
[N, H/sh, sh, W/sw, sw*C], zero-filled in the padding), and the output gradient over the
same patch is a box of dY seen as [N, P, Q, K] (zero-filled past P and Q, so those pixels
add nothing):

    dW[k0 + i, (r, f), c0 + j] += sum over the patch of dY[pixel, k0 + i] * X[window(pixel), c0 + j]

What differs is the loop around it, the structure cuDNN's weight-gradient kernels have and
Triton's `tl.dot` loop does not (notes/backward: the TMA kernel at 42% SM throughput on
conv8, cuDNN's `sm90_xmma_wgrad` at 84% with the same tile):

- a loader warp keeps a ring of STAGES (dY, X) box pairs full (TMA, mbarriers);
- CONSUMERS warpgroups issue asynchronous wgmma on them, each for BLOCK_K output channels
  of the unit's tile (cooperative: a ring slot is free once every consumer has released it);
  the wgmma reads both operands from shared memory transposed (the reduction runs over
  pixels, which neither box has innermost), which it does for 16-bit types only;
- CTAs are persistent, one an SM, over work units (slice, group, gradient column, output
  channel tile): the loader fills the next unit's first slots during a unit's epilogue.

A unit sums its slice of the patches into a partial of its own (fp32); the partials are
added in order after (`conv2d_wgrad.py`), so the result is bitwise reproducible. With a bias,
the units of the first gradient column also sum dY over the pixels: dY^T times a block of
ones, one more (narrow) wgmma a step.
Gluon cannot run in Triton's interpreter: this kernel runs on Hopper GPUs only.
"""

from __future__ import annotations

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
from .conv2d_fwd_strips import GL_DTYPES
from .conv2d_wgrad_tma import wgrad_tma_columns, wgrad_tma_patches, wgrad_tma_supported
from .launch import descriptor, launch
from .sizes import cdiv

BIAS_N = gl.constexpr(8)  # columns of the ones block: the narrowest wgmma


# The index helpers are plain arithmetic on non-negative ints (or floor-safe), so that the
# CPU suite runs them as Python (`.fn`) in its emulation of the kernel's addressing.
@gluon.jit
def _unit_origin(unit, K_TILES, COLUMNS, GROUPS):
    """(slice, group, gradient column, output-channel tile) of `unit`: channel tiles
    fastest, slices slowest, so that the CTAs at work at once read the same patches."""
    k_tile = unit % K_TILES
    rest = unit // K_TILES
    column = rest % COLUMNS
    rest = rest // COLUMNS
    return rest // GROUPS, rest % GROUPS, column, k_tile


@gluon.jit
def _patch_origin(t, P, Q, BLOCK_P: gl.constexpr, BLOCK_Q: gl.constexpr):
    """(n, p0, q0) of patch `t` of BLOCK_P x BLOCK_Q output pixels, rows of patches fastest."""
    tiles_q = (Q + BLOCK_Q - 1) // BLOCK_Q
    tiles_pq = (P + BLOCK_P - 1) // BLOCK_P * tiles_q
    return t // tiles_pq, (t % tiles_pq) // tiles_q * BLOCK_P, (t % tiles_q) * BLOCK_Q


@gluon.jit
def _column_origin(column, CG, BLOCK_C: gl.constexpr):
    """(tap r*S + f, first channel c0) of gradient column `column`: taps of Cg // BLOCK_C
    channel blocks each; the gradient's row holds it from tap * Cg + c0 (channel-fastest)."""
    return column // (CG // BLOCK_C), column % (CG // BLOCK_C) * BLOCK_C


@gluon.jit
def _tap_offsets(tap, S, pad_top, pad_left, dilation_h, dilation_w, stride_h, stride_w):
    """The input offsets of tap r*S + f as the parity view takes them: (rows in whole
    strides, row parity, columns in whole strides, column parity)."""
    off_h = (tap // S) * dilation_h - pad_top
    off_w = (tap % S) * dilation_w - pad_left
    ph = (off_h % stride_h + stride_h) % stride_h  # floor modulo, for negative offsets too
    pw = (off_w % stride_w + stride_w) % stride_w
    return (off_h - ph) // stride_h, ph, (off_w - pw) // stride_w, pw


@gluon.jit
def _wgrad_ws_loader(
    x_desc, dy_desc, dy_bufs, x_bufs, ready, empty,
    C, KG, CG, P, Q, S, PATCHES, SLICE, GROUPS, COLUMNS, K_TILES, num_units,
    pad_top, pad_left, dilation_h, dilation_w, stride_h, stride_w,
):  # fmt: skip
    """The loader warp: each step's dY boxes (one a consumer) and X box into the ring as
    slots free."""
    BLOCK_P: gl.constexpr = dy_desc.block_type.shape[1]
    BLOCK_Q: gl.constexpr = dy_desc.block_type.shape[2]
    BLOCK_K: gl.constexpr = dy_desc.block_type.shape[3]
    BLOCK_C: gl.constexpr = x_desc.block_type.shape[4]
    STAGES: gl.constexpr = x_bufs.type.shape[0]
    CONSUMERS: gl.constexpr = dy_bufs.type.shape[0] // STAGES
    BYTES: gl.constexpr = CONSUMERS * dy_desc.block_type.nbytes + x_desc.block_type.nbytes
    dtype: gl.constexpr = x_desc.dtype
    step = 0
    for unit in range(gl.program_id(0), num_units, gl.num_programs(0)):
        slice, group, column, k_tile = _unit_origin(unit, K_TILES, COLUMNS, GROUPS)
        tap, c0 = _column_origin(column, CG, BLOCK_C)
        rows, ph, cols, pw = _tap_offsets(tap, S, pad_top, pad_left, dilation_h, dilation_w,
                                          stride_h, stride_w)  # fmt: skip
        k0 = group * KG + k_tile * (CONSUMERS * BLOCK_K)
        channel = pw * C + group * CG + c0  # the column parity class's channels come first
        t0 = slice * SLICE
        for t in range(t0, gl.minimum(t0 + SLICE, PATCHES)):
            n, p0, q0 = _patch_origin(t, P, Q, BLOCK_P, BLOCK_Q)
            slot = step % STAGES
            # A fresh mbarrier counts as having finished the phase before its first.
            mbarrier.wait(empty.index(slot), (step // STAGES) & 1 ^ 1)
            filled = ready.index(slot)
            mbarrier.expect(filled, BYTES)
            for i in gl.static_range(CONSUMERS):
                box = dy_bufs.index(slot * CONSUMERS + i)._reinterpret(
                    dtype, dy_desc.block_type.shape, dy_desc.layout)  # fmt: skip
                tma.async_copy_global_to_shared(dy_desc, [n, p0, q0, k0 + i * BLOCK_K], filled,
                                                box)  # fmt: skip
            box = x_bufs.index(slot)._reinterpret(dtype, x_desc.block_type.shape, x_desc.layout)
            tma.async_copy_global_to_shared(x_desc, [n, p0 + rows, ph, q0 + cols, channel],
                                            filled, box)  # fmt: skip
            step += 1


@gluon.jit
def _wgrad_ws_unit(
    dy_bufs, x_bufs, ones, ready, empty, part_ptr, bias_part_ptr,
    step, steps, row0, k_start, j0, KG, J,
    CONSUMER: gl.constexpr, WITH_BIAS: gl.constexpr, num_warps: gl.constexpr,
):  # fmt: skip
    """One unit of a consumer: `steps` ring slots from `step`, a wgmma each (and one with
    the ones block `WITH_BIAS`), each slot released once the step after it is issued and
    it has retired; then its rows k_start.. of the partial (rows row0 + k, columns j0..)."""
    STAGES: gl.constexpr = x_bufs.type.shape[0]
    CONSUMERS: gl.constexpr = dy_bufs.type.shape[0] // STAGES
    BLOCK_K: gl.constexpr = dy_bufs.type.shape[2]
    BLOCK_C: gl.constexpr = x_bufs.type.shape[2]
    ONES_N: gl.constexpr = ones.type.shape[0]
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BLOCK_C, 16]
    )
    bias_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, ONES_N, 16]
    )
    acc = gl.zeros((BLOCK_K, BLOCK_C), dtype=gl.float32, layout=acc_layout)
    bias = gl.zeros((BLOCK_K, ONES_N), dtype=gl.float32, layout=bias_layout)
    for i in range(steps):
        slot = (step + i) % STAGES
        mbarrier.wait(ready.index(slot), ((step + i) // STAGES) & 1)
        dy = dy_bufs.index(slot * CONSUMERS + CONSUMER).permute((1, 0))  # [BLOCK_K, BLOCK_M]
        acc = warpgroup_mma(dy, x_bufs.index(slot), acc, is_async=True)
        if WITH_BIAS:
            bias = warpgroup_mma(dy, ones.permute((1, 0)), bias, is_async=True)
            acc, bias = warpgroup_mma_wait(num_outstanding=2, deps=(acc, bias))
        else:
            acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
        # The step before has retired: its slot may be refilled (a unit's first step follows
        # the last unit's, whose slot was released after it).
        mbarrier.arrive(empty.index((step + i + STAGES - 1) % STAGES), pred=i > 0)
    if WITH_BIAS:
        acc, bias = warpgroup_mma_wait(num_outstanding=0, deps=(acc, bias))
    else:
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    mbarrier.arrive(empty.index((step + steps - 1) % STAGES))

    k = k_start + gl.arange(0, BLOCK_K, layout=gl.SliceLayout(1, acc_layout))  # [BLOCK_K]
    j = j0 + gl.arange(0, BLOCK_C, layout=gl.SliceLayout(0, acc_layout))  # [BLOCK_C]
    rows = (row0 + k).to(gl.int64)
    # rows past the group's channels are the next group's (or zeros): dropped
    mask = (k < KG)[:, None] & (j < J)[None, :]
    gl.store(part_ptr + rows[:, None] * J + j[None, :], acc, mask=mask)
    if WITH_BIAS:  # every column of dY^T @ ones is the sum: the first one stored
        k = k_start + gl.arange(0, BLOCK_K, layout=gl.SliceLayout(1, bias_layout))
        first = gl.arange(0, ONES_N, layout=gl.SliceLayout(0, bias_layout)) == 0
        offsets = (row0 + k)[:, None] + gl.zeros((1, ONES_N), gl.int32, bias_layout)
        gl.store(bias_part_ptr + offsets, bias, mask=(k < KG)[:, None] & first[None, :])


@gluon.jit
def _wgrad_ws_consumer(
    dy_bufs, x_bufs, ones, ready, empty, part_ptr, bias_part_ptr,
    KG, CG, J, PATCHES, SLICE, GROUPS, COLUMNS, K_TILES, num_units,
    HAS_BIAS: gl.constexpr, CONSUMER: gl.constexpr, num_warps: gl.constexpr,
):  # fmt: skip
    """A consumer warpgroup: its BLOCK_K output channels of every unit of this program; with
    HAS_BIAS, the bias sum in the units of the first gradient column."""
    STAGES: gl.constexpr = x_bufs.type.shape[0]
    CONSUMERS: gl.constexpr = dy_bufs.type.shape[0] // STAGES
    BLOCK_K: gl.constexpr = dy_bufs.type.shape[2]
    BLOCK_C: gl.constexpr = x_bufs.type.shape[2]
    step = 0
    for unit in range(gl.program_id(0), num_units, gl.num_programs(0)):
        slice, group, column, k_tile = _unit_origin(unit, K_TILES, COLUMNS, GROUPS)
        t0 = slice * SLICE
        steps = gl.minimum(SLICE, PATCHES - t0)
        row0 = (slice * GROUPS + group) * KG  # the partial's rows [slices, groups, Kg]
        k_start = (k_tile * CONSUMERS + CONSUMER) * BLOCK_K
        tap, c0 = _column_origin(column, CG, BLOCK_C)
        j0 = tap * CG + c0
        if HAS_BIAS:
            if column == 0:
                _wgrad_ws_unit(dy_bufs, x_bufs, ones, ready, empty, part_ptr, bias_part_ptr,
                               step, steps, row0, k_start, j0, KG, J, CONSUMER, True,
                               num_warps)  # fmt: skip
            else:
                _wgrad_ws_unit(dy_bufs, x_bufs, ones, ready, empty, part_ptr, bias_part_ptr,
                               step, steps, row0, k_start, j0, KG, J, CONSUMER, False,
                               num_warps)  # fmt: skip
        else:
            _wgrad_ws_unit(dy_bufs, x_bufs, ones, ready, empty, part_ptr, bias_part_ptr,
                           step, steps, row0, k_start, j0, KG, J, CONSUMER, False,
                           num_warps)  # fmt: skip
        step += steps


@gluon.jit
def _conv2d_wgrad_ws_kernel(
    x_desc, dy_desc, part_ptr, bias_part_ptr,
    C, KG, CG, J, P, Q, S, PATCHES, SLICE, GROUPS, COLUMNS, K_TILES, num_units,
    pad_top, pad_left, dilation_h, dilation_w, stride_h, stride_w,
    HAS_BIAS: gl.constexpr, STAGES: gl.constexpr, CONSUMERS: gl.constexpr,
    num_warps: gl.constexpr,
):  # fmt: skip
    """partial[slice, group, k, j] (and with HAS_BIAS bias_partial[slice, group, k]) of
    every unit; column j = (r*S + f)*CG + c (channel-fastest). The rings, their barriers
    and the ones block, then the loader and the consumers."""
    BLOCK_P: gl.constexpr = dy_desc.block_type.shape[1]
    BLOCK_Q: gl.constexpr = dy_desc.block_type.shape[2]
    BLOCK_K: gl.constexpr = dy_desc.block_type.shape[3]
    BLOCK_C: gl.constexpr = x_desc.block_type.shape[4]
    BLOCK_M: gl.constexpr = BLOCK_P * BLOCK_Q
    dtype: gl.constexpr = x_desc.dtype
    dy_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_K], dtype)
    x_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, BLOCK_C], dtype)
    # pixels innermost (K-major): laid [BLOCK_M, 8] with its 16-byte rows innermost, the
    # wgmma read past the block (compute-sanitizer on the H200)
    ones_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BIAS_N, BLOCK_M], dtype)
    dy_bufs = gl.allocate_shared_memory(dtype, [STAGES * CONSUMERS, BLOCK_M, BLOCK_K],
                                        dy_layout)  # fmt: skip
    x_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_M, BLOCK_C], x_layout)
    ones = gl.allocate_shared_memory(dtype, [BIAS_N, BLOCK_M], ones_layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=CONSUMERS)  # every consumer reads every slot
    if HAS_BIAS:
        fill: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [1, num_warps], [1, 0])
        ones.store(gl.full([BIAS_N, BLOCK_M], 1.0, dtype, fill))
        fence_async_shared()  # the wgmma reads it through the async proxy
    # Partition arguments are written out whole: a tuple built here would turn constexprs
    # into tensors.
    if CONSUMERS == 1:
        gl.warp_specialize([
            (_wgrad_ws_consumer, (
                dy_bufs, x_bufs, ones, ready, empty, part_ptr, bias_part_ptr,
                KG, CG, J, PATCHES, SLICE, GROUPS, COLUMNS, K_TILES, num_units,
                HAS_BIAS, gl.constexpr(0), num_warps)),
            (_wgrad_ws_loader, (
                x_desc, dy_desc, dy_bufs, x_bufs, ready, empty,
                C, KG, CG, P, Q, S, PATCHES, SLICE, GROUPS, COLUMNS, K_TILES, num_units,
                pad_top, pad_left, dilation_h, dilation_w, stride_h, stride_w)),
        ], [1], [40])  # fmt: skip
    else:
        gl.warp_specialize([
            (_wgrad_ws_consumer, (
                dy_bufs, x_bufs, ones, ready, empty, part_ptr, bias_part_ptr,
                KG, CG, J, PATCHES, SLICE, GROUPS, COLUMNS, K_TILES, num_units,
                HAS_BIAS, gl.constexpr(0), num_warps)),
            (_wgrad_ws_consumer, (
                dy_bufs, x_bufs, ones, ready, empty, part_ptr, bias_part_ptr,
                KG, CG, J, PATCHES, SLICE, GROUPS, COLUMNS, K_TILES, num_units,
                HAS_BIAS, gl.constexpr(1), num_warps)),
            (_wgrad_ws_loader, (
                x_desc, dy_desc, dy_bufs, x_bufs, ready, empty,
                C, KG, CG, P, Q, S, PATCHES, SLICE, GROUPS, COLUMNS, K_TILES, num_units,
                pad_top, pad_left, dilation_h, dilation_w, stride_h, stride_w)),
        ], [num_warps, 1], [232, 40])  # fmt: skip


def wgrad_ws_supported(problem: ConvProblem, grad_output: torch.Tensor) -> bool:
    """True when the kernel serves the layer: 16-bit (the wgmma reads both operands
    transposed, which it does for 16-bit types only) and both operands as the TMA weight
    gradient reads them (`wgrad_tma_supported`)."""
    return problem.itemsize == 2 and wgrad_tma_supported(problem, grad_output)


def wgrad_ws_boxes(config: dict) -> dict[str, list[int]]:
    """The TMA boxes of the kernel's descriptors, by parameter name."""
    bp, bq, bk, bc = (config[key] for key in ("BLOCK_P", "BLOCK_Q", "BLOCK_K", "BLOCK_C"))
    return dict(x_desc=[1, bp, 1, bq, bc], dy_desc=[1, bp, bq, bk])


def wgrad_ws_shared_bytes(config: dict, itemsize: int) -> int:
    """Shared memory `config` takes (the ring and the ones block; barriers aside)."""
    pixels = config["BLOCK_P"] * config["BLOCK_Q"]
    per_stage = pixels * (config["CONSUMERS"] * config["BLOCK_K"] + config["BLOCK_C"])
    return (config["num_stages"] * per_stage + pixels * BIAS_N.value) * itemsize


def wgrad_ws_registers(config: dict) -> int:
    """Registers a thread at launch so that one CTA (the consumers and the loader's
    warpgroup) fits an SM's 64K; the partitions then trade them (setmaxnreg)."""
    warps = config["CONSUMERS"] * 4 + 4
    return 65536 // (warps * 32) // 8 * 8


def conv2d_wgrad_ws(
    x: torch.Tensor,
    grad_output: torch.Tensor,
    partial: torch.Tensor,
    bias_partial: torch.Tensor | None,
    problem: ConvProblem,
    *,
    config: dict,
    per_slice: int,
    sms: int,
    slot: dict | None = None,
) -> None:
    """Fill `partial` [slices, groups, Kg, Cg*R*S] (and `bias_partial` [slices, groups, Kg])
    from channels-last `x` and `grad_output` (`wgrad_ws_supported`), `per_slice` patches a
    slice, on at most `sms` persistent CTAs; launched through `slot` (`launch.py`).

    `config`: BLOCK_P x BLOCK_Q output pixels a step, BLOCK_K output channels a consumer,
    BLOCK_C input channels (`wgrad_tma_block_c`), CONSUMERS (1 or 2), num_stages (ring slots).
    """
    n, c, h, w = problem.n, problem.c, problem.h, problem.w
    sn, _, s_h, s_w = problem.x_strides
    (sh, sw), params = problem.params.stride, problem.params
    consumers, bk, bc = config["CONSUMERS"], config["BLOCK_K"], config["BLOCK_C"]
    k_tiles = cdiv(problem.kg, consumers * bk)
    columns = wgrad_tma_columns(problem, bc)
    units = partial.shape[0] * problem.groups * columns * k_tiles
    if units == 0:
        return
    boxes = wgrad_ws_boxes(config)
    layouts = {name: gl.NVMMASharedLayout.get_default_for(box, GL_DTYPES[x.dtype])
               for name, box in boxes.items()}  # fmt: skip
    # [N, H/sh, sh, W/sw, sw*C]: parities as coordinates (at unit stride, [N, H, 1, W, C])
    x_desc = descriptor(TensorDescriptor, slot, x, [n, h // sh, sh, w // sw, sw * c],
                        [sn, sh * s_h, s_h, sw * s_w, 1], boxes["x_desc"],
                        layouts["x_desc"])  # fmt: skip
    dn, dk, dp, dq = grad_output.stride()
    dy_desc = descriptor(TensorDescriptor, slot, grad_output,
                         [n, problem.p, problem.q, problem.k], [dn, dp, dq, dk],
                         boxes["dy_desc"], layouts["dy_desc"])  # fmt: skip
    args = (
        x_desc, dy_desc, partial, bias_partial,
        c, problem.kg, problem.cg, partial.shape[-1], problem.p, problem.q, problem.s,
        wgrad_tma_patches(problem, config), per_slice, problem.groups, columns, k_tiles, units,
        *problem.pad_top_left, *params.dilation, *params.stride,
    )  # fmt: skip
    meta = dict(HAS_BIAS=bias_partial is not None, STAGES=config["num_stages"],
                CONSUMERS=consumers, num_warps=4, maxnreg=wgrad_ws_registers(config))  # fmt: skip
    launch(_conv2d_wgrad_ws_kernel, (min(units, sms),), args, meta, slot)
