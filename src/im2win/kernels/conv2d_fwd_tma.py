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

import functools
from collections.abc import Callable

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from . import split_k
from .conv2d_fwd import kernel_filter
from .launch import launch
from .sizes import cdiv
from .tuning import tile_efficiency


@triton.heuristics({"HAS_BIAS": lambda args: args["bias_ptr"] is not None})
@triton.jit
def _conv2d_fwd_tma_kernel(
    x_desc, filt_desc, bias_ptr, y_ptr,
    N, C, CG, KG, R, S, P, Q, H, W,
    stride_b, stride_yn, stride_yk, stride_yp, stride_yq,
    pad_top, pad_left, dilation_h, dilation_w, stride_h, stride_w,
    HAS_BIAS: tl.constexpr,
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
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for it in range(it_begin, it_end):
        rf = it // num_c_blocks  # tap (r, f), reduction index kk = (r*S + f)*CG + c
        r, f = rf // S, rf % S
        c = (it % num_c_blocks) * BLOCK_K
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
    if HAS_BIAS:
        bias = tl.load(bias_ptr + (group * KG + kn) * stride_b, mask=kn_ok, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    m = tl.arange(0, BLOCK_M)
    if RASTER:  # pixels of the input grid whose windows would leave the image are not outputs
        n = (m0 + m) // (H * W)
        p = (m0 + m) // W % H
        q = (m0 + m) % W
    else:
        p = p0 + m // BLOCK_Q
        q = q0 + m % BLOCK_Q
    y_ok = ((n < N) & (p < P) & (q < Q))[:, None] & kn_ok[None, :]
    if SPLIT_K > 1:  # the slice's own images of the workspace
        n += tl.program_id(1) * N
    pixel = n.to(tl.int64) * stride_yn + p.to(tl.int64) * stride_yp + q.to(tl.int64) * stride_yq
    y_off = pixel[:, None] + ((group * KG + kn).to(tl.int64) * stride_yk)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_ok)


def tma_block_k(cg: int, dtype: torch.dtype) -> int | None:
    """The channel block this kernel would use for Cg channels, or None if none divides Cg."""
    largest = 64 if dtype.itemsize == 2 else 32
    for block_k in (largest, 32, 16):
        if block_k <= largest and cg % block_k == 0:
            return block_k
    return None


@functools.cache
def has_tma(device: torch.device) -> bool:
    """Hopper (compute capability 9.0) or newer: where the tiles were measured to pay."""
    return torch.cuda.get_device_capability(device)[0] >= 9


def tma_supported(x: torch.Tensor, cg: int, stride: tuple[int, int]) -> bool:
    """True when the input and the re-laid filter meet TMA's rules for this kernel.

    Cg a multiple of 16; channels innermost (stride 1); the other strides of the view the
    descriptor reads (see the module's docstring) and the base address 16-byte aligned. At
    a stride above 1 the view must be exact: sh divides H, sw divides W, and with sw > 1
    the pixels of a row lie C apart (a column's parity folds into the channel dimension).
    (The filter matrix [K, R*S*Cg] is a fresh or channels_last tensor: aligned whenever Cg
    is.)
    """
    if tma_block_k(cg, x.dtype) is None:
        return False
    _, c, h, w = x.shape
    sn, sc, s_h, s_w = x.stride()
    sh, sw = stride
    exact = h % sh == 0 and w % sw == 0 and (sw == 1 or s_w == c)
    aligned = all(s * x.element_size() % 16 == 0 for s in (sn, sh * s_h, s_h, sw * s_w))
    return sc == 1 and exact and aligned and x.data_ptr() % 16 == 0


def raster_supported(x: torch.Tensor, filter_hw, output_hw, stride, dilation) -> bool:
    """True when raster tiles can serve the convolution: unit stride, unpadded (its windows
    never leave the image, so any run of the input grid is read whole), over an input
    whose N, H and W fold into one dimension of pixels, as a dense channels-last tensor's
    do.

    A run of BLOCK_M input pixels is one 2-D TMA box [BLOCK_M, BLOCK_K] of the input as a
    [N*H*W, C] matrix; tap (r, f) shifts it by r*dh*W + f*dw rows. Outputs live at the grid
    points (p < P, q < Q); the others are computed and dropped (1 - P*Q/(H*W) of the work).
    """
    n, _, h, w = x.shape
    sn, _, sh, sw = x.stride()
    (r, s), (p, q), (dh, dw) = filter_hw, output_hw, dilation
    unpadded = (p, q) == (h - dh * (r - 1), w - dw * (s - 1))
    dense = sh == w * sw and (sn == h * sh or n == 1)
    # TMA coordinates are 32-bit; a tap's run reaches at most one image past the last one
    return tuple(stride) == (1, 1) and unpadded and dense and (n + 1) * h * w < 2**31


def tma_launcher(
    x: torch.Tensor,
    weight: torch.Tensor,
    output_hw: tuple[int, int],
    *,
    groups: int,
    dilation: tuple[int, int],
    pad_top_left: tuple[int, int],
    precision: str,
    config: dict,
    interpreted: bool,
    stride: tuple[int, int] = (1, 1),
    raster: bool = False,
    slot: dict | None = None,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]:
    """`launch(x, weight, bias, y)` filling `y` [N, K, P, Q] (any strides) from channels-last
    inputs shaped and strided as `x` and filters shaped as `weight` [K, Cg, R, S].

    Tiles, grid and descriptor geometry are worked out here once, so that a call builds only
    what depends on its tensors (the re-laid filter, two descriptors; with split-K the
    workspace and the sum after, split_k.py) and launches.
    `config` holds BLOCK_M pixels as a BLOCK_P x BLOCK_Q patch (BLOCK_Q given, or the width
    that wastes least), BLOCK_N, BLOCK_K (a divisor of Cg), num_warps, num_stages, and
    optionally SPLIT_K (else `split_k.default_splits`).
    `stride`: the convolution's (sh, sw); above 1, window tiles read the strided view of
    the module docstring (`tma_supported` must hold). `raster`: tiles of BLOCK_M
    consecutive pixels of the input grid instead (see `raster_supported`). `slot`: see
    `launch.launch`.
    """
    n, c, h, w = x.shape
    k, cg, r, s = weight.shape
    p, q = output_hw
    kg = k // groups
    sn, sc, s_h, s_w = x.stride()
    strided = tuple(stride) != (1, 1)
    if strided and not tma_supported(x, cg, stride):
        raise ValueError(
            f"the 'tma' loop at stride {tuple(stride)} needs the stride to divide the input's "
            f"H x W and, with a column stride, pixels C apart; got input {tuple(x.shape)} "
            f"strided {x.stride()}"
        )
    config = dict(config)
    block_m, block_k = config.pop("BLOCK_M"), config["BLOCK_K"]
    if cg % block_k:
        raise ValueError(f"the 'tma' loop needs BLOCK_K to divide Cg={cg}, got BLOCK_K={block_k}")
    if raster:
        if not raster_supported(x, (r, s), output_hw, stride, dilation):
            raise ValueError(
                f"raster tiles need an unpadded unit-stride convolution over a dense "
                f"channels-last input, got input {tuple(x.shape)} strided {x.stride()}, "
                f"stride {tuple(stride)}, filter {r}x{s}, output {p}x{q}"
            )
        config["BLOCK_Q"] = block_m
    elif "BLOCK_Q" not in config:  # the tested widths (8 and up) that waste least
        widths = [bq for bq in (8, 16, 32, 64, 128, 256) if bq <= block_m <= 256 * bq]
        config["BLOCK_Q"] = max(
            (tile_efficiency(p, q, block_m // bq, bq), bq) for bq in widths or [block_m]
        )[1]
    config["BLOCK_P"] = block_m // config["BLOCK_Q"]
    box = {key: config[key] for key in ("BLOCK_P", "BLOCK_Q", "BLOCK_N", "BLOCK_K")}
    if max(box.values()) > 256:  # a TMA box spans at most 256 elements a dimension
        raise ValueError(f"the 'tma' loop needs tiles of at most 256 a side, got {box}")
    filt_box = [config["BLOCK_N"], block_k]
    if raster:  # runs up to the last output pixel of the last image
        x_geometry = ([n * h * w, c], [s_w, sc], [block_m, block_k])
        tiles = cdiv((n - 1) * h * w + (p - 1) * w + q, block_m) if n else 0
    else:
        tile = [config["BLOCK_P"], config["BLOCK_Q"], block_k]
        if strided:  # [N, H/sh, sh, W/sw, sw*C]: parities as coordinates (module docstring)
            (sh, sw), x_box = stride, [1, tile[0], 1, *tile[1:]]
            x_geometry = ([n, h // sh, sh, w // sw, sw * c], [sn, sh * s_h, s_h, sw * s_w, sc],
                          x_box)  # fmt: skip
        else:
            x_geometry = ([n, h, w, c], [sn, s_h, s_w, sc], [1, *tile])
        tiles = n * cdiv(p, config["BLOCK_P"]) * cdiv(q, config["BLOCK_Q"])
    programs = groups * tiles * cdiv(kg, config["BLOCK_N"])
    splits = config.pop("SPLIT_K", None) or split_k.default_splits(
        programs, r * s * (cg // block_k), n * k * p * q, x.device, interpreted
    )
    grid = (programs, splits) if splits > 1 else (programs,)
    sizes, geometry = (n, c, cg, kg, r, s, p, q, h, w), (*pad_top_left, *dilation, *stride)
    meta = dict(PRECISION=precision, RASTER=raster, STRIDED=strided, SPLIT_K=splits,
                UPCAST=interpreted and x.dtype != torch.float32, **config)  # fmt: skip

    def launch_into(x, weight, bias, y):
        filt = kernel_filter(weight, "rfc")  # [K, R*S*Cg]
        if filt.data_ptr() % 16:  # a view of a channels_last weight may start anywhere
            filt = filt.clone()
        x_desc = TensorDescriptor(x, *x_geometry)
        filt_desc = TensorDescriptor(filt, list(filt.shape), list(filt.stride()), filt_box)
        out, out_bias = (split_k.workspace(splits, y), None) if splits > 1 else (y, bias)
        args = (
            x_desc, filt_desc, out_bias, out, *sizes,
            0 if out_bias is None else out_bias.stride(0), *out.stride(), *geometry,
        )  # fmt: skip
        launch(_conv2d_fwd_tma_kernel, grid, args, meta, slot)
        return split_k.finish(out, splits, bias, y) if splits > 1 else y

    return launch_into


def conv2d_fwd_tma(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """One call: fill `y` [N, K, P, Q] from channels-last `x` and the filter [K, Cg, R, S]
    (keyword arguments as for `tma_launcher`)."""
    return tma_launcher(x, weight, tuple(y.shape[2:]), **kwargs)(x, weight, bias, y)
