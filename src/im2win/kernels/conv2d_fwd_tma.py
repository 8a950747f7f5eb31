"""Forward convolution with TMA: each window tile is one rectangle of the input.

With unit stride, the windows of a BLOCK_P x BLOCK_Q patch of output pixels at one filter
tap (r, f) are themselves a BLOCK_P x BLOCK_Q patch of the input, shifted by the tap:

    A[(i, j), c] = X[n, p0 + i + r*dh - pad_top, q0 + j + f*dw - pad_left, c0 + c]

so the Hopper tensor-memory accelerator (a `TensorDescriptor` over the 4-D input) copies
it to shared memory in one instruction, asynchronously, and zero-fills every coordinate
outside the image: padding costs nothing. The filter, a [K, R*S*Cg] matrix in (r, f, c)
order, is the B operand through a second descriptor. The reduction walks the taps and,
inside each, blocks of BLOCK_K channels (Cg must be a multiple of BLOCK_K so a block
never straddles two taps or two groups).

At stride (sh, sw) the window patch is every sh-th row and sw-th column of the input, so
the descriptor sees the input as [N, H/sh, sh, W/sw, sw*C]: a row's parity (h mod sh) and
a column's (w mod sw) become coordinates of their own, a column's parity folds into the
channel dimension, and tap (r, f) reads one parity class whole:

    A[(i, j), c] = X5[n, p0 + i + (r*dh - pad_top) // sh, (r*dh - pad_top) % sh,
                         q0 + j + (f*dw - pad_left) // sw, ((f*dw - pad_left) % sw)*C + c0 + c]

(floor division and modulus; padding is still zero fill, the view being exact when sh
divides H and sw divides W).

Unpadded convolutions may take raster tiles instead (`raster_supported`): BLOCK_M
consecutive pixels of the input grid, images one after another, are one 2-D box of the
input seen as a [N*H*W, C] matrix, and every tap shifts the whole run by r*dh*W + f*dw
rows. The box needs no reshape, so the dot reads A straight from shared memory; the grid
points that are not outputs (q >= Q or p >= P) are computed and dropped.

Channels-last inputs only: Triton asks that a box start 16-byte aligned in the innermost
dimension, which channel blocks are and NCHW's shifted rows are not. The pointer kernel in
`conv2d_fwd.py` serves every shape this one cannot (NCHW, unaligned rows, channel counts
that are not a multiple of 16, strides that do not divide the input).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ..epilogue import NONE
from ..problem import ConvProblem
from . import split_k
from .common import apply_epilogue, store_output
from .conv2d_fwd import kernel_filter
from .launch import descriptor, launch
from .sizes import cdiv, strides_or_zeros


@triton.heuristics({
    "HAS_BIAS": lambda args: args["bias_ptr"] is not None,
    "HAS_SCALE": lambda args: args["scale_ptr"] is not None,
})  # fmt: skip
@triton.jit
def _conv2d_fwd_tma_kernel(
    x_desc, filt_desc, bias_ptr, scale_ptr, res_ptr, y_ptr,
    N, C, CG, KG, R, S, P, Q, H, W,
    stride_b, stride_s, stride_yn, stride_yk, stride_yp, stride_yq,
    stride_rn, stride_rk, stride_rp, stride_rq,
    pad_top, pad_left, dilation_h, dilation_w, stride_h, stride_w,
    HAS_BIAS: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    ACTIVATION: tl.constexpr,
    RESIDUAL: tl.constexpr,
    RASTER: tl.constexpr,
    STRIDED: tl.constexpr,
    PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    BLOCK_M: tl.constexpr = BLOCK_P * BLOCK_Q
    # Program order: output-channel tiles fastest, so neighbours share a window tile in L2.
    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    pid_n = pid % num_pid_n
    tile = pid // num_pid_n
    if RASTER:  # BLOCK_M consecutive pixels of the input grid, images one after another
        num_tiles_m = tl.cdiv((N - 1) * H * W + (P - 1) * W + Q, BLOCK_M)
        m0 = (tile % num_tiles_m) * BLOCK_M
        group = tile // num_tiles_m
    else:
        num_tiles_q = tl.cdiv(Q, BLOCK_Q)
        num_tiles_p = tl.cdiv(P, BLOCK_P)
        q0 = (tile % num_tiles_q) * BLOCK_Q
        p0 = (tile // num_tiles_q % num_tiles_p) * BLOCK_P
        n = tile // num_tiles_q // num_tiles_p % N
        group = tile // num_tiles_q // num_tiles_p // N
    k0 = group * KG + pid_n * BLOCK_N

    num_c_blocks = CG // BLOCK_K
    it_begin, it_end = 0, S * R * num_c_blocks
    if SPLIT_K > 1:  # this program's slice of the reduction (split_k.py)
        it_begin = tl.program_id(1) * tl.cdiv(it_end, SPLIT_K)
        it_end = tl.minimum(it_begin + tl.cdiv(it_end, SPLIT_K), it_end)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)  # [BLOCK_M, BLOCK_N]
    for it in range(it_begin, it_end):
        rf = it // num_c_blocks  # tap (r, f), reduction index kk = (r*S + f)*CG + c
        r, f = rf // S, rf % S
        c = (it % num_c_blocks) * BLOCK_K
        # a: [BLOCK_M, BLOCK_K], the tap's window tile
        if RASTER:  # the tap shifts the whole run by r rows and f columns
            a = x_desc.load([m0 + r * dilation_h * W + f * dilation_w, group * CG + c])
        elif STRIDED:  # the tap's offsets split into whole strides and a parity class
            off_h = r * dilation_h - pad_top
            off_w = f * dilation_w - pad_left
            ph = (off_h % stride_h + stride_h) % stride_h  # floor modulus, however `%` rounds
            pw = (off_w % stride_w + stride_w) % stride_w
            h = p0 + (off_h - ph) // stride_h
            w = q0 + (off_w - pw) // stride_w
            a = x_desc.load([n, h, ph, w, pw * C + group * CG + c]).reshape(BLOCK_M, BLOCK_K)
        else:
            h = p0 + r * dilation_h - pad_top
            w = q0 + f * dilation_w - pad_left
            a = x_desc.load([n, h, w, group * CG + c]).reshape(BLOCK_M, BLOCK_K)
        b = filt_desc.load([k0, rf * CG + c]).T  # [BLOCK_K, BLOCK_N]
        if UPCAST:  # the interpreter computes 16-bit dots wrongly; fp32 is exact there
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    kn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] channel inside the group
    kn_ok = kn < KG
    channel = (group * KG + kn).to(tl.int64)
    m = tl.arange(0, BLOCK_M)
    if RASTER:  # pixels of the input grid whose windows would leave the image are not outputs
        n = (m0 + m) // (H * W)
        p = (m0 + m) // W % H
        q = (m0 + m) % W
        n_col = n.to(tl.int64)[:, None]
    else:
        p = p0 + m // BLOCK_Q
        q = q0 + m % BLOCK_Q
        n_col = n.to(tl.int64)  # one image a tile
    pixel_ok = (n < N) & (p < P) & (q < Q)
    # Bias and the fused epilogue (none under split-K: split_k.finish runs them on the sum).
    acc = apply_epilogue(
        acc, n_col, p.to(tl.int64)[:, None], q.to(tl.int64)[:, None], channel[None, :],
        kn_ok[None, :],
        pixel_ok[:, None] & kn_ok[None, :], bias_ptr, scale_ptr, res_ptr,
        stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
        HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
    )  # fmt: skip
    if SPLIT_K > 1:  # the slice's own images of the workspace
        n += tl.program_id(1) * N
    store_output(y_ptr, acc, n.to(tl.int64), p.to(tl.int64), q.to(tl.int64), channel, pixel_ok,
                 kn_ok, stride_yn, stride_yk, stride_yp, stride_yq)  # fmt: skip


def tma_block_k(cg: int, itemsize: int) -> int | None:
    """The channel block for Cg channels: the widest that divides Cg, from a 128-byte row of
    channels (TMA's widest swizzle) down to 16; None if none does."""
    block_k = 128 // itemsize
    while block_k >= 16:
        if cg % block_k == 0:
            return block_k
        block_k //= 2
    return None


def tma_supported(problem: ConvProblem) -> bool:
    """True when the input and the re-laid filter meet TMA's rules for this kernel: Cg a
    multiple of 16 (`tma_block_k`) and the input view TMA reads (`tma_view_supported`).
    (The filter matrix [K, R*S*Cg] is a fresh or channels_last tensor: aligned whenever Cg
    is.)
    """
    return tma_block_k(problem.cg, problem.itemsize) is not None and tma_view_supported(problem)


def tma_view_supported(problem: ConvProblem) -> bool:
    """True when TMA can read the input as this module's view (see its docstring): channels
    innermost (stride 1); the view's other strides and the base address 16-byte aligned. At
    a stride above 1 the view must be exact: sh divides H, sw divides W, and with sw > 1
    the pixels of a row lie C apart (a column's parity folds into the channel dimension).
    """
    sn, sc, s_h, s_w = problem.x_strides
    sh, sw = problem.params.stride
    exact = problem.h % sh == 0 and problem.w % sw == 0 and (sw == 1 or s_w == problem.c)
    aligned = all(s * problem.itemsize % 16 == 0 for s in (sn, sh * s_h, s_h, sw * s_w))
    return sc == 1 and exact and aligned and problem.aligned


def raster_supported(problem: ConvProblem) -> bool:
    """True when raster tiles can serve the convolution: unit stride, unpadded (its windows
    never leave the image, so any run of the input grid is read whole), over an input
    whose N, H and W fold into one dimension of pixels, as a dense channels-last tensor's
    do.

    A run of BLOCK_M input pixels is one 2-D TMA box [BLOCK_M, BLOCK_K] of the input as a
    [N*H*W, C] matrix; tap (r, f) shifts it by r*dh*W + f*dw rows. Outputs live at the grid
    points (p < P, q < Q); the others are computed and dropped (1 - P*Q/(H*W) of the work).
    """
    n, h, w = problem.n, problem.h, problem.w
    sn, _, sh, sw = problem.x_strides
    dh, dw = problem.params.dilation
    unpadded = (problem.p, problem.q) == (h - dh * (problem.r - 1), w - dw * (problem.s - 1))
    dense = sh == w * sw and (sn == h * sh or n == 1)
    # TMA coordinates are 32-bit; a tap's run reaches at most one image past the last one
    return not problem.strided and unpadded and dense and (n + 1) * h * w < 2**31


def tma_programs(problem: ConvProblem, block_m: int, block_n: int, block_q: int | None) -> int:
    """The grid over `problem` of raster tiles (`block_q` None) or window tiles of BLOCK_M
    pixels, `block_q` wide, each of BLOCK_N output channels."""
    n, h, w = problem.n, problem.h, problem.w
    if block_q is None:  # runs up to the last output pixel of the last image
        tiles = cdiv((n - 1) * h * w + (problem.p - 1) * w + problem.q, block_m) if n else 0
    else:
        tiles = n * cdiv(problem.p, block_m // block_q) * cdiv(problem.q, block_q)
    return problem.groups * tiles * cdiv(problem.kg, block_n)


def tma_launcher(
    problem: ConvProblem, config: dict, *, raster: bool, interpreted: bool,
    slot: dict | None = None,
) -> Callable[..., torch.Tensor]:  # fmt: skip
    """`launch(x, weight, bias, y, scale=None, residual=None)` filling `y` [N, K, P, Q] (any
    strides) from channels-last inputs of `problem`'s signature (`tma_supported`, and
    `raster_supported` for `raster`), the problem's epilogue fused into the store.

    Tiles, grid and descriptor geometry are worked out here once, so that a call builds only
    what depends on its tensors (the re-laid filter, two descriptors; with split-K the
    workspace and the sum after, split_k.py) and launches.
    `config` holds BLOCK_M pixels (a BLOCK_P x BLOCK_Q patch of window tiles, BLOCK_Q given;
    or a run of the input grid with `raster`), BLOCK_N, BLOCK_K (a divisor of Cg),
    num_warps, num_stages and SPLIT_K. `slot`: see `launch.launch`.
    """
    n, c, h, w = problem.n, problem.c, problem.h, problem.w
    sn, sc, s_h, s_w = problem.x_strides
    config = dict(config)
    config.pop("LOOP", None)
    splits = config.pop("SPLIT_K", 1)
    block_m, block_k = config.pop("BLOCK_M"), config["BLOCK_K"]
    programs = tma_programs(problem, block_m, config["BLOCK_N"],
                            None if raster else config["BLOCK_Q"])  # fmt: skip
    if raster:
        config["BLOCK_Q"] = block_m
        x_geometry = ([n * h * w, c], [s_w, sc], [block_m, block_k])
    else:
        tile = [block_m // config["BLOCK_Q"], config["BLOCK_Q"], block_k]
        if problem.strided:  # [N, H/sh, sh, W/sw, sw*C]: parities as coordinates (docstring)
            (sh, sw), x_box = problem.params.stride, [1, tile[0], 1, *tile[1:]]
            x_geometry = ([n, h // sh, sh, w // sw, sw * c], [sn, sh * s_h, s_h, sw * s_w, sc],
                          x_box)  # fmt: skip
        else:
            x_geometry = ([n, h, w, c], [sn, s_h, s_w, sc], [1, *tile])
    config["BLOCK_P"] = block_m // config["BLOCK_Q"]
    filt_box = [config["BLOCK_N"], block_k]
    grid = (programs, splits) if splits > 1 else (programs,)
    sizes = (n, c, problem.cg, problem.kg, problem.r, problem.s, problem.p, problem.q, h, w)
    params = problem.params
    geometry = (*problem.pad_top_left, *params.dilation, *params.stride)
    epilogue = problem.epilogue if splits == 1 else NONE  # the kernel's; finish runs the rest
    meta = dict(PRECISION=problem.math.precision, RASTER=raster, STRIDED=problem.strided,
                SPLIT_K=splits, UPCAST=interpreted and problem.dtype != torch.float32,
                **epilogue.constexprs, **config)  # fmt: skip
    finish_slot = None if slot is None else {}  # split_k.finish's kernel, as `slot`

    def launch_into(x, weight, bias, y, scale=None, residual=None):
        filt = kernel_filter(weight, "rfc")  # [K, R*S*Cg]
        if filt.data_ptr() % 16:  # a view of a channels_last weight may start anywhere
            filt = filt.clone()
        x_desc = descriptor(TensorDescriptor, slot, x, *x_geometry)
        filt_desc = descriptor(TensorDescriptor, slot, filt, list(filt.shape),
                               list(filt.stride()), filt_box)  # fmt: skip
        if splits > 1:  # the slices' plain sums: bias and epilogue come with their sum
            out, out_bias, out_scale, out_residual = split_k.workspace(splits, y), None, None, None
        else:
            out, out_bias, out_scale, out_residual = y, bias, scale, residual
        args = (
            x_desc, filt_desc, out_bias, out_scale, out_residual, out, *sizes,
            *strides_or_zeros(out_bias), *strides_or_zeros(out_scale), *out.stride(),
            *strides_or_zeros(out_residual, 4), *geometry,
        )  # fmt: skip
        launch(_conv2d_fwd_tma_kernel, grid, args, meta, slot)
        if splits > 1:
            return split_k.finish(out, splits, bias, y, scale, residual,
                                  epilogue=problem.epilogue, slot=finish_slot)  # fmt: skip
        return y

    return launch_into
