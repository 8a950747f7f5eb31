"""Weight gradient with TMA: the forward's window tiles (`conv2d_fwd_tma.py`) as the B
operand, the output gradient's pixels as the A operand, both copied by the tensor-memory
accelerator.

Per tap (r, f), the windows of a BLOCK_P x BLOCK_Q patch of output pixels are a patch of
the input shifted by the tap (at a stride, one parity class of the forward's 5-D view), and
the output gradient over the same patch is a box of dY seen as [N, P, Q, K]. So

    dW[k0 + i, (r, f), c0 + j] += sum over the patch of dY[pixel, k0 + i] * X[window(pixel), c0 + j]

is one `tl.dot` of two boxes a step, with no address arithmetic and no masks: TMA fills
the padding with zeros, and the pixels of a patch past P or Q with zeros on dY's side, so
they add nothing. Program (group, k tile x column tile, slice) sums its slice of the patches
into a partial of its own; the partials are added in order after (`conv2d_wgrad.py`), so
the result is bitwise reproducible.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ..problem import ConvProblem
from .conv2d_fwd_tma import tma_block_k, tma_supported
from .launch import descriptor, launch
from .sizes import cdiv


@triton.jit
def _conv2d_wgrad_tma_kernel(
    x_desc, dy_desc, part_ptr, bias_part_ptr,
    C, KG, CG, J, P, Q, S, PATCHES, SLICE,
    pad_top, pad_left, dilation_h, dilation_w, stride_h, stride_w,
    STRIDED: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """partial[slice, group, k, j] over patches [slice * SLICE, (slice + 1) * SLICE) of
    every image; column j = (r*S + f)*CG + c (channel-fastest). With HAS_BIAS the programs
    of the first column tile also sum dY into bias_partial[slice, group, k]."""
    BLOCK_M: tl.constexpr = BLOCK_P * BLOCK_Q
    group = tl.program_id(0)
    k_tiles = tl.cdiv(KG, BLOCK_K)
    column = tl.program_id(1) // k_tiles  # (tap, channel block)
    k0 = (tl.program_id(1) % k_tiles) * BLOCK_K
    c_blocks = CG // BLOCK_C
    rf = column // c_blocks
    c0 = (column % c_blocks) * BLOCK_C
    r, f = rf // S, rf % S
    off_h = r * dilation_h - pad_top
    off_w = f * dilation_w - pad_left
    if STRIDED:  # the tap's offsets as whole strides and a parity class (the forward's view)
        ph = (off_h % stride_h + stride_h) % stride_h
        pw = (off_w % stride_w + stride_w) % stride_w
        off_h, off_w = (off_h - ph) // stride_h, (off_w - pw) // stride_w
    tiles_q = tl.cdiv(Q, BLOCK_Q)
    tiles_pq = tl.cdiv(P, BLOCK_P) * tiles_q
    split = tl.program_id(2)
    t_start = split * SLICE
    t_end = tl.minimum(t_start + SLICE, PATCHES)
    acc = tl.zeros([BLOCK_K, BLOCK_C], tl.float32)
    bias = tl.zeros([BLOCK_K], tl.float32)
    for t in range(t_start, t_end):
        n = t // tiles_pq
        p0 = (t % tiles_pq) // tiles_q * BLOCK_P
        q0 = (t % tiles_q) * BLOCK_Q
        dy = dy_desc.load([n, p0, q0, group * KG + k0]).reshape(BLOCK_M, BLOCK_K)
        if STRIDED:
            x = x_desc.load([n, p0 + off_h, ph, q0 + off_w, pw * C + group * CG + c0])
        else:
            x = x_desc.load([n, p0 + off_h, q0 + off_w, group * CG + c0])
        x = x.reshape(BLOCK_M, BLOCK_C)
        if HAS_BIAS:
            bias += tl.sum(dy.to(tl.float32), axis=0)
        if UPCAST:  # the interpreter computes 16-bit dots wrongly; fp32 is exact there
            dy, x = dy.to(tl.float32), x.to(tl.float32)
        acc = tl.dot(dy.T, x, acc, input_precision=PRECISION)
    k = k0 + tl.arange(0, BLOCK_K)
    k_ok = k < KG  # the box's rows past the group's channels are the next group's: dropped
    j = rf * CG + c0 + tl.arange(0, BLOCK_C)
    row = (split * tl.num_programs(0) + group) * KG + k  # [BLOCK_K]: (slice, group, k)
    tl.store(part_ptr + row.to(tl.int64)[:, None] * J + j[None, :], acc, mask=k_ok[:, None])
    if HAS_BIAS:  # one program per (slice, group, k tile) writes it: the first column's
        tl.store(bias_part_ptr + row, bias, mask=k_ok & (column == 0))


def wgrad_tma_supported(problem: ConvProblem, grad_output: torch.Tensor) -> bool:
    """True when both operands meet TMA's rules: the input as the forward's TMA kernel
    reads it (`tma_supported`), and the output gradient channels-last with 16-byte aligned
    strides, its groups' channels starting on 16-byte boundaries."""
    dy_strides = grad_output.stride()
    itemsize = grad_output.element_size()
    return (
        problem.channels_last
        and tma_supported(problem)
        and dy_strides[1] == 1
        and all(s * itemsize % 16 == 0 for s in (dy_strides[0], *dy_strides[2:]))
        and grad_output.data_ptr() % 16 == 0
        and (problem.groups == 1 or problem.kg * itemsize % 16 == 0)
    )


def wgrad_tma_columns(problem: ConvProblem, block_c: int) -> int:
    """Column tiles of the gradient: one per tap and block of BLOCK_C channels."""
    return problem.r * problem.s * (problem.cg // block_c)


def wgrad_tma_block_c(problem: ConvProblem, block_c: int) -> int:
    """BLOCK_C: at most `block_c`, a divisor of Cg (so a block never straddles two taps)."""
    return min(block_c, tma_block_k(problem.cg, problem.itemsize))


def conv2d_wgrad_tma(
    x: torch.Tensor,
    grad_output: torch.Tensor,
    partial: torch.Tensor,
    bias_partial: torch.Tensor | None,
    problem: ConvProblem,
    *,
    config: dict,
    per_slice: int,
    interpreted: bool,
    slot: dict | None = None,
) -> None:
    """Fill `partial` [slices, groups, Kg, Cg*R*S] (and `bias_partial` [slices, groups, Kg])
    from channels-last `x` and `grad_output` (`wgrad_tma_supported`), `per_slice` patches a
    slice; launched through `slot` (`launch.py`).

    `config`: BLOCK_P x BLOCK_Q output pixels a step, BLOCK_K output channels and BLOCK_C
    (`wgrad_tma_block_c`) input channels a tile, num_warps, num_stages.
    """
    n, c, h, w = problem.n, problem.c, problem.h, problem.w
    sn, sc, s_h, s_w = problem.x_strides
    bp, bq, bk, bc = (config[key] for key in ("BLOCK_P", "BLOCK_Q", "BLOCK_K", "BLOCK_C"))
    if problem.strided:  # [N, H/sh, sh, W/sw, sw*C]: parities as coordinates
        sh, sw = problem.params.stride
        shape, strides = [n, h // sh, sh, w // sw, sw * c], [sn, sh * s_h, s_h, sw * s_w, sc]
        x_desc = descriptor(TensorDescriptor, slot, x, shape, strides, [1, bp, 1, bq, bc])
    else:
        x_desc = descriptor(TensorDescriptor, slot, x, [n, h, w, c], [sn, s_h, s_w, sc],
                            [1, bp, bq, bc])  # fmt: skip
    dn, dk, dp, dq = grad_output.stride()
    dy_desc = descriptor(TensorDescriptor, slot, grad_output,
                         [n, problem.p, problem.q, problem.k], [dn, dp, dq, dk],
                         [1, bp, bq, bk])  # fmt: skip
    grid = (problem.groups, cdiv(problem.kg, bk) * wgrad_tma_columns(problem, bc),
            partial.shape[0])  # fmt: skip
    params = problem.params
    args = (
        x_desc, dy_desc, partial, bias_partial,
        c, problem.kg, problem.cg, partial.shape[-1], problem.p, problem.q, problem.s,
        wgrad_tma_patches(problem, config), per_slice,
        *problem.pad_top_left, *params.dilation, *params.stride,
    )  # fmt: skip
    meta = dict(
        STRIDED=problem.strided,
        HAS_BIAS=bias_partial is not None,
        PRECISION=problem.math.precision if problem.math.tensor_cores else "ieee",
        UPCAST=interpreted and x.dtype != torch.float32,
        BLOCK_P=bp, BLOCK_Q=bq, BLOCK_K=bk, BLOCK_C=bc,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )  # fmt: skip
    launch(_conv2d_wgrad_tma_kernel, grid, args, meta, slot)


def wgrad_tma_patches(problem: ConvProblem, config: dict) -> int:
    """Patches of BLOCK_P x BLOCK_Q output pixels over every image: the reduction's steps."""
    return problem.n * cdiv(problem.p, config["BLOCK_P"]) * cdiv(problem.q, config["BLOCK_Q"])
