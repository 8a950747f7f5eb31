"""Forward ops on validated arguments: pick a backend, transform, launch. No autograd here.

Backends:
  "triton"    the im2win Triton kernels (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1)
  "reference" the plain-PyTorch definition in `reference.py` (any device; fp32 accumulation)
  "paper"     the paper's CUDA kernel (`im2win.paper`): fp32 IEEE, groups 1, CUDA only
  "auto"      "triton" where it can run, else "reference"

Triton kernels the library picks (a pinned `config`, through its LOOP key, or `windows`
overrides the pick):
  grouped, at most 16 channels a group, in a    kernels/conv2d_grouped.py, groups packed
    tensor-core tier (`grouped_supported`)        into block-diagonal tensor-core tiles
  NCHW where `staged_images` measured a win     copied a chunk of images at a time to a
    (>= 512 flops a byte, K <= 3C, N >= 32)     channels-last buffer, then as below
  depthwise (groups == C) otherwise             kernels/conv2d_dw.py, direct FMA
  channels-last, Cg % 16 == 0, 16-bit or tf32,  kernels/conv2d_fwd_tma.py (window or, if
    a Hopper (or newer) GPU, a stride that        unpadded at unit stride, raster tiles),
    divides H x W (`tma_supported`)               where `tuning.tma_config` expects it to win
                                                  (tf32: `tuning.wide_pointer_tiles` may
                                                  keep wide pointer tiles instead)
  everything else                               kernels/conv2d_fwd.py: `default_loop`
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from . import kernels, paper
from .kernels.conv2d_fwd import WindowSource
from .params import ConvParams
from .reference import conv2d_reference, transform_reference

BACKENDS = ("auto", "triton", "reference", "paper")
WINDOWS = ("materialized", "streamed")
TMA_LOOPS = ("tma", "tma_raster")


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    triton_ok = device.type == "cuda" or (device.type == "cpu" and kernels.interpreted())
    if backend == "auto":
        return "triton" if triton_ok else "reference"
    if backend == "triton" and not triton_ok:
        raise ValueError(
            f"backend='triton' needs a CUDA tensor, or TRITON_INTERPRET=1 set before import "
            f"for CPU tensors; got a tensor on {device}"
        )
    if backend == "paper" and device.type != "cuda":
        raise ValueError(f"backend='paper' is CUDA C++: needs a CUDA tensor, got one on {device}")
    return backend


def window_transform(x, r: int, params: ConvParams, channels_last: bool, backend: str):
    """The im2win tensor of a 4-D input: [N, C, P, Wp*R] or [N, P, Wp, R, C]."""
    if backend == "reference":
        return transform_reference(x, r, params, channels_last)
    return kernels.im2win_transform(x, r, params, channels_last, kernels.interpreted())


def materialized_windows(win: torch.Tensor, params: ConvParams, r: int, cg: int,
                         channels_last: bool) -> WindowSource:  # fmt: skip
    """Windows read from the im2win tensor: [N, C, P, Wp*R] or [N, P, Wp, R, C]."""
    (sw, dw) = params.stride[1], params.dilation[1]
    if channels_last:
        sn, sp, s_w, s_r, sc = win.stride()
    else:
        sn, sc, sp, _ = win.stride()
        s_w, s_r = r, 1
    return WindowSource(win, (sn, cg * sc, sp, sw * s_w), (sc, dw * s_w, s_r))


def streamed_windows(x: torch.Tensor, params: ConvParams, cg: int) -> WindowSource:
    """Windows read straight from the input: no buffer, padding becomes masked loads."""
    sn, sc, s_h, s_w = x.stride()
    (sh, sw), (dh, dw) = params.stride, params.dilation
    top, _, left, _ = params.padding
    return WindowSource(
        x, (sn, cg * sc, sh * s_h, sw * s_w), (sc, dw * s_w, dh * s_h),
        origin=-(top * s_h + left * s_w), masked=any(params.padding),
    )  # fmt: skip


def default_loop(cg: int, windows: str, channels_last: bool) -> str:
    """The reduction loop that won on the H100 for this case (notes/performance.md)."""
    # Tap by tap over channel blocks pays once Cg fills a block; not on the materialized
    # NCHW window, whose channels lie whole planes apart.
    if cg >= 16 and (windows == "streamed" or channels_last):
        return "channels"
    return "flat"


Launch = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
Into = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", torch.Tensor], torch.Tensor]

# NCHW inputs worth it are convolved from channels-last copies of at most this many bytes
# (or one image) at a time (see `staged_images` and `plan_nhwc_chunks`).
CHUNK_BYTES = 32 << 20
STAGE_MIN_BATCH = 32
STAGE_MIN_FLOP_PER_BYTE = 512
STAGE_MAX_WIDENING = 3  # output channels per input channel


def plan_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    params: ConvParams,
    *,
    channels_last: bool,
    precision: str,
    backend: str,
    windows: str | None = None,
    config: dict | None = None,
) -> Launch:
    """Every choice for tensors shaped, strided and aligned as these, made once (autotuning
    included): the returned `launch(x, weight, bias)` only allocates the output and runs
    the kernels, for any tensors of the same signature."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if backend == "reference":
        return functools.partial(_reference_forward, params=params, memory_format=memory_format)
    n, _, h, w = x.shape
    k, _, r, s = weight.shape
    out = dict(size=(n, k, *params.output_size(h, w, r, s)), dtype=x.dtype, device=x.device,
               memory_format=memory_format)  # fmt: skip
    if backend == "paper":
        check_paper_args(x, params, precision)
        return lambda x, weight, bias: paper.paper_forward(
            x, weight, bias, params, torch.empty(**out)
        )  # fmt: skip
    into = plan_into(x, weight, bias, params, channels_last=channels_last, precision=precision,
                     windows=windows, config=config)  # fmt: skip
    return lambda x, weight, bias: into(x, weight, bias, torch.empty(**out))


def staged_images(x: torch.Tensor, weight_shape, params: ConvParams, channels_last: bool) -> int:
    """Images per channels-last chunk where the library stages an NCHW input, else 0.

    NOTE: measured on H100 (every NCHW layer of the paper and ResNet-50 with Cg >= 16, staged
    and not, batch 128 in bf16 and tf32 and batch 32 in bf16, results/h100-issue4/
    staging-v5, 2026-11-26): with the chunks copied by `kernels.copy_to_channels_last`,
    staging paid wherever a convolution does >= 512 flops per input byte copied
    (2*K*R*S*P*Q / (H*W*itemsize)), strided and 1x1 layers included, at batch 32 and 128.
    Below that it lost (1x1 layers of 64-256 output channels at 56x56: up to 4x), and in the
    bench runs (v5-11cc779) it lost or broke the memory target on ResNet-50's 1x1 expansions
    (K = 4C), whose output, written in NCHW from channels-last tiles, is 4x the input: kept
    to K <= 3C. Batch 1 lost with PyTorch's copy (staging-trial-9bc0182), not measured again.
    """
    n, c, h, w = x.shape
    k, cg, r, s = weight_shape
    if channels_last or cg < 16 or params.groups == c or n < STAGE_MIN_BATCH or not x[0].numel():
        return 0
    if k > STAGE_MAX_WIDENING * c:
        return 0
    p, q = params.output_size(h, w, r, s)
    if 2 * k * r * s * p * q < STAGE_MIN_FLOP_PER_BYTE * h * w * x.element_size():
        return 0
    images = CHUNK_BYTES // (x[0].numel() * x.element_size())
    return max(1, min(x.shape[0], kernels.MAX_COPY_IMAGES, images))


def plan_nhwc_chunks(x, weight, bias, params: ConvParams, *, precision: str) -> Into:
    """An NCHW input convolved a chunk of images at a time from a channels-last copy.

    cuDNN's fastest NCHW engines on the paper layers take workspaces of about input plus
    output (14-577 MiB there); here one buffer of at most CHUNK_BYTES (or one image) is
    reused and the output is written in place, in NCHW.
    """
    n, chunk = x.shape[0], staged_images(x, weight.shape, params, False)
    buffer = dict(size=(chunk, *x.shape[1:]), dtype=x.dtype, device=x.device,
                  memory_format=torch.channels_last)  # fmt: skip
    example = torch.empty(**buffer)  # for planning only: fresh buffers align alike
    starts = range(0, n, chunk)
    # One plan per chunk: each output slice starts at its own offset (and alignment).
    intos = [
        plan_into(
            example[: min(chunk, n - i)],
            weight,
            bias,
            params,
            channels_last=True,
            precision=precision,
            windows=None,
            config=None,
        )
        for i in starts
    ]
    del example
    interpreted = kernels.interpreted()
    copy_slots = [{} for _ in starts]  # the copy kernel, once launched, per chunk

    def into(x, weight, bias, y):
        staged = torch.empty(**buffer)
        # Re-laid once: each chunk's kernel then reads the filter in place (kernel_filter).
        weight = weight.contiguous(memory_format=torch.channels_last)
        for i, into_chunk, slot in zip(starts, intos, copy_slots, strict=True):
            x_chunk = staged[: min(chunk, n - i)]
            kernels.copy_to_channels_last(x[i : i + chunk], x_chunk, interpreted=interpreted,
                                          slot=slot)  # fmt: skip
            into_chunk(x_chunk, weight, bias, y[i : i + chunk])
        return y

    return into


def plan_into(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    params: ConvParams,
    *,
    channels_last: bool,
    precision: str,
    windows: str | None,
    config: dict | None,
) -> Into:
    """The Triton kernels' plan: `into(x, weight, bias, y)` fills `y` [N, K, P, Q] (any
    strides, aligned as a fresh tensor or as this plan's own chunk of one) and returns it."""
    n, c, h, w = x.shape
    k, cg, r, s = weight.shape
    p, q = params.output_size(h, w, r, s)
    pad_top_left = (params.padding[0], params.padding[2])
    interpreted = kernels.interpreted()
    slot = {}  # the compiled kernel, once launched (kernels/launch.py)
    chosen = config is None and windows is None
    tensor_cores = x.dtype.itemsize == 2 or precision == "tf32"
    packed = kernels.grouped_supported(params.groups, cg, k // params.groups, p * q,
                                       tensor_cores=tensor_cores,
                                       channels_last=channels_last)  # fmt: skip
    if chosen and packed:
        # Groups too narrow for a GEMM tile each: several to a tile (kernels/conv2d_grouped.py).
        return lambda x, weight, bias, y: kernels.conv2d_fwd_grouped(
            x, weight, bias, y,
            groups=params.groups, stride=params.stride, dilation=params.dilation,
            pad_top_left=pad_top_left, precision=precision, interpreted=interpreted, slot=slot,
        )  # fmt: skip
    if chosen and staged_images(x, weight.shape, params, channels_last):
        return plan_nhwc_chunks(x, weight, bias, params, precision=precision)
    if chosen and params.groups == c:
        # No channel reduction to turn into a GEMM: direct FMA (kernels/conv2d_dw.py).
        return lambda x, weight, bias, y: kernels.conv2d_fwd_dw(
            x, weight, bias, y,
            stride=params.stride, dilation=params.dilation,
            pad_top_left=pad_top_left, channels_last=channels_last, slot=slot,
        )  # fmt: skip
    tune = config is None and kernels.autotune_enabled() and x.is_cuda
    windows = windows or "streamed"
    kg = k // params.groups
    pointer_loop = default_loop(cg, windows, channels_last)
    tma_block_k = kernels.tma_block_k(cg, x.dtype)
    masked = windows == "streamed" and any(params.padding)
    tma_ok = (
        windows == "streamed"
        and kernels.tma_supported(x, cg, params.stride)
        and (interpreted or kernels.has_tma(x.device))
    )
    raster_ok = tma_ok and kernels.raster_supported(x, (r, s), (p, q), params.stride,
                                                    params.dilation)  # fmt: skip
    if config is None:
        stem = pointer_loop == "flat" and windows == "streamed"
        config = dict(LOOP=pointer_loop, **kernels.conv2d_fwd_config(
            n * p * q, kg, cg * r * s, x.dtype, interpreted, precision,
            stem_layout=("NHWC" if channels_last else "NCHW") if stem else None))  # fmt: skip
        if tma_ok:
            raster_hw = (h, w) if raster_ok else None
            tiles = kernels.tma_config(p, q, kg, tma_block_k, x.dtype, precision, masked,
                                       r * s, interpreted, raster_hw,
                                       strided=params.stride != (1, 1))  # fmt: skip
            if tiles is not None and not interpreted:
                efficiency = kernels.tma_efficiency(tiles, p, q, raster_hw)
                tiles = kernels.wide_pointer_tiles(
                    n * p * q, kg, efficiency, x.dtype, precision, kernels.sm_count(x.device)
                ) or tiles  # fmt: skip
            config = config if tiles is None else tiles
    config = dict(config)
    config.setdefault("LOOP", pointer_loop)
    if config["LOOP"] in TMA_LOOPS and not tma_ok:
        raise ValueError(
            f"config LOOP {config['LOOP']!r} needs a Hopper-or-newer GPU and streamed windows "
            "over a channels-last input with Cg a multiple of 16, 16-byte aligned strides and "
            "a stride that divides its H x W (a column stride: pixels C apart); got "
            f"windows={windows!r}, stride={params.stride}, Cg={cg}, input {tuple(x.shape)} "
            f"strided {x.stride()}"
        )
    if config["LOOP"] == "tma_raster" and not raster_ok:
        raise ValueError(
            "config LOOP 'tma_raster' needs an unpadded unit-stride convolution over a dense "
            f"channels-last input, got padding={params.padding}, stride={params.stride}, "
            f"strides {x.stride()}"
        )

    def launcher(tiles: dict, slot: dict | None) -> Into:
        tiles = dict(tiles)
        loop = tiles.pop("LOOP", pointer_loop)
        if loop in TMA_LOOPS:
            return kernels.tma_launcher(
                x, weight, (p, q),
                groups=params.groups, dilation=params.dilation, pad_top_left=pad_top_left,
                precision=precision, config=tiles, interpreted=interpreted,
                stride=params.stride, raster=loop == "tma_raster", slot=slot,
            )  # fmt: skip

        def launch(x, weight, bias, y):
            if windows == "streamed":
                src = streamed_windows(x, params, cg)
            else:
                win = kernels.im2win_transform(x, r, params, channels_last, interpreted)
                src = materialized_windows(win, params, r, cg, channels_last)
            return kernels.conv2d_fwd(
                src, weight, bias, y,
                groups=params.groups, stride=params.stride, dilation=params.dilation,
                pad_top_left=pad_top_left, input_hw=(h, w), channels_last=channels_last,
                loop=loop, precision=precision, config=tiles, interpreted=interpreted,
                slot=slot,
            )  # fmt: skip

        return launch

    if tune:
        key = kernels.shape_class(
            n * p * q, kg, cg * r * s, x.dtype, precision, windows, channels_last,
            masked, pointer_loop, tma_ok and tma_block_k, raster_ok, params.stride != (1, 1),
            kernels.device_key(x.device),
        )  # fmt: skip
        candidates = [dict(c, LOOP=pointer_loop) for c in kernels.candidate_configs(x.dtype)]
        if tma_ok:
            candidates += kernels.tma_candidate_configs(tma_block_k, raster_ok)
        y = torch.empty((n, k, p, q), dtype=x.dtype, device=x.device)
        measure = lambda tiles: kernels.median_ms(  # noqa: E731
            functools.partial(launcher(tiles, None), x, weight, bias, y)
        )
        config = kernels.tuned_config(key, candidates, measure)
    return launcher(config, slot)


def _reference_forward(x, weight, bias, *, params: ConvParams, memory_format):
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    up = [t if t is None else t.to(compute) for t in (x, weight, bias)]
    return conv2d_reference(*up, params).to(dtype=x.dtype, memory_format=memory_format)


def check_paper_args(x: torch.Tensor, params: ConvParams, precision: str) -> None:
    """The paper's scheme (the NCHW im2win tensor, then its kernel) is fp32 FFMA, groups 1."""
    if x.dtype != torch.float32 or precision != "ieee":
        raise ValueError(
            f"backend='paper' is the paper's fp32 FFMA kernel: needs float32 and precision "
            f"'ieee' (or None), got {x.dtype} and {precision!r}"
        )
    if params.groups != 1:
        raise ValueError(f"backend='paper' supports groups=1 only, got groups={params.groups}")
