"""Tile configurations of the forward kernel: heuristic, candidates and autotuning, one place.

The heuristic picks from a few shape classes (16-bit vs fp32 operands, narrow vs wide
output-channel count) and costs nothing. With IM2WIN_AUTOTUNE=1 the first call of a shape
class on a GPU times every candidate instead and keeps the fastest in an on-disk cache
(IM2WIN_TUNING_CACHE, default ~/.cache/im2win/tuning.json), keyed by GPU, Triton version and
shape class. Tests pin a config through `conv2d(..., config=...)`.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import triton

from .sizes import cdiv, next_power_of_2

LOOPS = ("flat", "channels", "tma", "tma_raster")

CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")
OPTIONAL_KEYS = ("LOOP", "BLOCK_Q", "SPLIT_K")


# The stems' tiles in the fp32-accurate tier by (precision, layout, the BLOCK_N a KG calls
# for), as CONFIG_KEYS. Measured on H100 (session 8, exploration/fp32, 12 tiles, conv1-3
# and conv7): 'tf32x3' (`conv2d_fwd._dot_tf32x3`) 1.02-1.24x over the default tiles,
# 'ieee' 1.10-1.17x; 'ieee' NCHW with KG <= 64 keeps the default.
FP32_STEM_TILES = {
    ("tf32x3", "NCHW", 128): (128, 128, 16, 8, 3),
    ("tf32x3", "NHWC", 128): (128, 64, 16, 4, 3),
    ("tf32x3", "NCHW", 64): (64, 64, 16, 4, 3),
    ("tf32x3", "NHWC", 64): (64, 64, 16, 4, 3),
    ("ieee", "NCHW", 128): (128, 128, 32, 4, 3),
    ("ieee", "NHWC", 128): (128, 128, 32, 4, 3),
    ("ieee", "NHWC", 64): (128, 64, 16, 4, 3),
}


def conv2d_fwd_config(
    pixels: int,
    channels_per_group: int,
    reduction: int,
    dtype: torch.dtype,
    interpreted: bool,
    precision: str = "ieee",
    stem_layout: str | None = None,
) -> dict:
    """Tile sizes for M = `pixels` output pixels, KG output channels, a reduction of `reduction`.
    `stem_layout`: "NCHW" or "NHWC" for the flat loop over streamed windows (the
    few-channel stems), else None.

    NOTE: measured on H100 (sweep of 7 tiles x 4 loop/window modes, 12 paper layers, tf32
    and bf16, 2026-11-26, notes/performance.md): 64-128 pixels x 128 channels won on most
    layers; BLOCK_K 64 only pays in 16-bit with a long reduction.

    NOTE: measured on H100 (2026-11-26 session 7, results/h100-issue4/exploration/stems,
    with 32-bit index arithmetic; bf16 and tf32, both layouts): on the stems, 256 x 128 x
    32 tiles over 8 warps beat the tiles below where KG > 64 (conv1 and conv2: 1.07x NHWC
    and 1.16-1.20x NCHW in bf16, 1.04-1.11x in tf32), and 16-channel reduction blocks on
    64-channel tiles (conv3 and conv7, KG = 64: tf32 1.27-1.49x; bf16 NHWC 1.03-1.16x,
    NCHW 0.93-1.02x, so not there).

    NOTE: measured on H100 (2026-11-27 session 8, results/h100-issue4/exploration/fp32):
    the fp32-accurate stems' tiles, `FP32_STEM_TILES`.
    """
    block_n = max(16, min(128, next_power_of_2(channels_per_group)))
    if interpreted:  # few, large programs: the interpreter pays per program
        block_m = max(16, min(128, next_power_of_2(pixels)))
        block_k = max(16, min(64, next_power_of_2(reduction)))
        return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4, num_stages=1)
    block_k = 64 if dtype != torch.float32 and reduction >= 512 else 32
    if stem_layout and dtype == torch.float32 and precision != "tf32":
        tile = FP32_STEM_TILES.get((precision, stem_layout, block_n))
        if tile:
            return dict(zip(CONFIG_KEYS, tile, strict=True))
    tensor_cores = dtype.itemsize == 2 or precision == "tf32"
    if stem_layout and tensor_cores and block_k == 32:
        if block_n == 128:
            return dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=32, num_warps=8, num_stages=3)
        if block_n == 64 and (dtype == torch.float32 or stem_layout == "NHWC"):
            block_k = 16
    block_m = 64 if block_n >= 128 else 128
    num_warps = 8 if block_m * block_n >= 128 * 128 else 4
    return dict(
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps, num_stages=3
    )


# TMA window tiles (BLOCK_P x BLOCK_Q output pixels of one image) by pixel count BLOCK_M.
TMA_SHAPES = {256: ((16, 16), (8, 32)), 128: ((8, 16), (16, 8), (4, 32)), 64: ((8, 8), (4, 16))}


def tile_efficiency(p: int, q: int, block_p: int, block_q: int) -> float:
    """The share of a grid of BLOCK_P x BLOCK_Q tiles over a P x Q output that is real."""
    return p * q / (cdiv(p, block_p) * block_p * cdiv(q, block_q) * block_q)


def tma_config(
    p: int,
    q: int,
    channels_per_group: int,
    block_k: int,
    dtype: torch.dtype,
    precision: str,
    padded: bool,
    taps: int,
    interpreted: bool,
    raster_hw: tuple[int, int] | None = None,
    strided: bool = False,
) -> dict | None:
    """Tiles (and LOOP) for the TMA kernel over a P x Q output, or None where the pointer
    kernel wins. `raster_hw`: the input's H x W where raster tiles can serve, else None.
    `strided`: a stride above 1 (the kernel's strided view of the input).

    NOTE: measured on H100 (TMA vs pointer kernel, 15 stride-1 layers of the paper and
    ResNet-50, bf16 and tf32, 2026-11-26, results/h100-issue4/exploration): TMA wins with
    full channel blocks (64 in 16-bit, 32 in fp32), once its tiles cover the output with
    at most a quarter wasted, on a padded or 1x1 convolution or with KG >= 128; 4 warps
    over 128 pixels x 128 channels, 8 warps over 256 x 64. It lost in fp32 'ieee' (4-11x)
    and 'tf32x3' (up to 2.3x; results/h100-issue4/paper vs paper-fp32). Triton 3.6
    computed wrong results with 8 warps over 128 x 128 window tiles: never used.

    NOTE: measured on H100 (2026-11-26 session 5, results/h100-issue4/exploration/
    small-outputs and v6-2fc4d8b/ab-rule): with KG >= 256, 64 pixels x 256 channels (4
    warps, 3 stages) beat the tiles below, which read each A tile (through registers) for
    half as many output channels. Kernel time, bf16 and tf32: outputs of 14x14 and under
    +5-38% on 6 of 7 layers (ResNet-50 l4-3x3 bf16 322 -> 445 TFLOPS), -4% on one; 3x3
    layers at 56x56 and 28x28 +8-25%. End to end, in one process: 0.94-1.69x over 8 layers
    of 14x14 and under, 1.00-1.17x on ResNet-50's 16-bit 1x1 layers at 28x28 and 56x56,
    0.97-1.00x in tf32 there. 4 stages or 8 warps lost.

    NOTE: measured on H100 (2026-11-26 session 6, results/h100-issue4/exploration/raster,
    kernel time): raster tiles, where they waste at most a third, beat the window tiles on
    the unpadded 3x3 layers (bf16 / tf32: conv10 306 -> 401 / 164 -> 187 TFLOPS, conv11
    328 -> 382 / 177 -> 196, conv8 430 -> 445 / 230 -> 231). End to end, side by side with
    the code before (v8-ce96e4b, 3 runs): 0.95-1.32x NHWC, 1.08-1.46x NCHW (staged) on
    the paper layers that take them (conv5, 6, 8-11). On 1x1 layers whose window tiles
    waste a sixth more (ResNet-50's at 14x14 and 7x7) kernel time gained 8-44% in bf16, but
    end to end the bf16 rows came out 0.56-1.22x over three bench runs (tf32: 0.85-1.16x).

    NOTE: measured on H100 (2026-11-27 session 9, results/h100-issue4/exploration/raster/
    raster_1x1_ab.*: window and raster tiles alternated three times in one process on those
    five bf16 1x1 layers): raster kernel time 1.06-1.25x faster on all five in every round
    (within 1% across rounds), end to end 1.04-1.22x (medians); the single slow rounds (up
    to 20x) hit both arms alike, each with a host-time spike. So the raster tiles serve 16-bit
    1x1 layers whose window tiles waste a sixth or more; tf32 keeps the window tiles.

    NOTE: measured on H100 (2026-11-26 session 7, results/h100-issue4/exploration/strided,
    kernel time, bf16 / tf32, NHWC): strided window tiles against the pointer kernel on the
    paper's conv4 and ResNet-50's six stride-2 layers. Outputs 28 wide and more: the tiles
    below won or tied (conv4 211 -> 234 / 165 -> 178 TFLOPS with 32-channel blocks, l2-down
    188 -> 263 / 126 -> 146, l2-3x3-s2 280 -> 276 / 136 -> 150); 14 and 7 wide they lost
    or tied in bf16 (l4-3x3-s2 317 -> 170 at best).
    """
    if dtype == torch.float32 and precision != "tf32":
        return None
    if interpreted:  # few, large programs; any efficiency will do
        block_n = max(16, min(64, next_power_of_2(channels_per_group)))
        if raster_hw is not None:  # wherever allowed, so the CPU suite runs them by default
            return dict(BLOCK_M=64, BLOCK_N=block_n, BLOCK_K=min(block_k, 32), num_warps=4,
                        num_stages=1, LOOP="tma_raster")  # fmt: skip
        block_q = max(4, min(16, next_power_of_2(q)))
        block_p = max(16 // block_q, min(64 // block_q, next_power_of_2(p)))
        return dict(BLOCK_M=block_p * block_q, BLOCK_Q=block_q, BLOCK_N=block_n,
                    BLOCK_K=min(block_k, 32), num_warps=4, num_stages=1,
                    LOOP="tma")  # fmt: skip
    if strided:
        return window_tiles(p, q, channels_per_group, block_k)[0] if q >= 28 else None
    if block_k != (64 if dtype.itemsize == 2 else 32):  # full channel blocks only
        return None
    if raster_hw is not None and taps > 1 and p * q >= 2 / 3 * raster_hw[0] * raster_hw[1]:
        return raster_tiles(channels_per_group, block_k, dtype)
    window, efficiency = None, 0.0
    if channels_per_group >= 128 or padded or taps == 1:
        window, efficiency = window_tiles(p, q, channels_per_group, block_k)
    if raster_hw is not None and taps == 1 and dtype.itemsize == 2 and efficiency <= 5 / 6:
        return raster_tiles(channels_per_group, block_k, dtype)  # a 1x1 run wastes nothing
    return window


# tf32 pointer tiles over 256 output channels (see `wide_pointer_tiles`).
WIDE_POINTER_TILES = dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=32, num_warps=8, num_stages=3,
                          LOOP="channels")  # fmt: skip


def tma_efficiency(tiles: dict, p: int, q: int, raster_hw: tuple[int, int] | None) -> float:
    """The share of the TMA `tiles`' grid over a P x Q output that is real: raster tiles
    compute every pixel of the H x W input, window tiles round P and Q up to their box."""
    if tiles["LOOP"] == "tma_raster":
        return p * q / (raster_hw[0] * raster_hw[1])
    return tile_efficiency(p, q, tiles["BLOCK_M"] // tiles["BLOCK_Q"], tiles["BLOCK_Q"])


def wide_pointer_tiles(
    pixels: int, channels_per_group: int, efficiency: float, dtype: torch.dtype,
    precision: str, sms: int,
) -> dict | None:  # fmt: skip
    """The pointer kernel's 128 x 256 tiles in place of TMA tiles with `efficiency`, or None.

    NOTE: measured on H100 (2026-11-27 session 10, results/h100-issue4/exploration/
    wide_tiles, kernel time, NHWC, batch 128): in tf32, 128 pixels x 256 channels on 8 warps
    of the pointer kernel beat the TMA tiles that waste a fifth or more wherever KG >= 256
    and a grid of such tiles fills 1.5 waves of the SMs: conv5 193 -> 241 TFLOPS, conv6 177 -> 227,
    ResNet-50 l4-1x1-2048 181 -> 228, l3-1x1-1024 151 -> 159 (the pointer kernel reads
    only real pixels; a 256-channel tile reads each A tile, through registers, for twice
    the outputs). Smaller grids lost (conv11 with 144 tiles 197 -> 168; two layers with 196
    tiles by 6-7%, two with 98 by 3-5%), as did tiles wasting less (l3-1x1-reduce28, 0.875:
    186 -> 176) and 16-bit operands on every layer (conv5 bf16 304 -> 253).
    """
    if dtype != torch.float32 or precision != "tf32" or channels_per_group < 256:
        return None
    programs = cdiv(pixels, 128) * cdiv(channels_per_group, 256)
    if efficiency > 0.8 or 2 * programs < 3 * sms:
        return None
    return dict(WIDE_POINTER_TILES)


def window_tiles(
    p: int, q: int, channels_per_group: int, block_k: int
) -> tuple[dict | None, float]:
    """The window tiles for a P x Q output (see `tma_config`) and the share of them that is
    real, or (None, 0.0) where every shape wastes over a quarter."""
    if channels_per_group >= 256:
        eff, (block_p, block_q) = max(
            (tile_efficiency(p, q, *shape), shape) for shape in TMA_SHAPES[64]
        )
        if eff >= 0.75:
            return dict(BLOCK_M=64, BLOCK_Q=block_q, BLOCK_N=256, BLOCK_K=block_k,
                        num_warps=4, num_stages=3, LOOP="tma"), eff  # fmt: skip
    block_n = 64 if channels_per_group <= 64 else 128
    for block_m in (256,) if block_n == 64 else (128, 64):
        eff, (block_p, block_q) = max(
            (tile_efficiency(p, q, *shape), shape) for shape in TMA_SHAPES[block_m]
        )
        if eff >= 0.75:
            warps, stages = (8, 3) if block_m == 256 else (4, 4)
            return dict(BLOCK_M=block_m, BLOCK_Q=block_q, BLOCK_N=block_n, BLOCK_K=block_k,
                        num_warps=warps, num_stages=stages, LOOP="tma"), eff  # fmt: skip
    return None, 0.0


def raster_tiles(channels_per_group: int, block_k: int, dtype: torch.dtype) -> dict:
    """128-pixel raster tiles: 128 channels on 8 warps in 16-bit (right in every GPU test,
    unlike 8-warp window tiles), 4 in tf32; 64 channels where KG <= 64; 256 in tf32 with
    KG >= 512 (measured, see `tma_config`)."""
    block_n, warps, stages = (128, 8, 3) if dtype.itemsize == 2 else (128, 4, 4)
    if channels_per_group <= 64:
        block_n, warps, stages = 64, 4, 4
    elif dtype.itemsize == 4 and channels_per_group >= 512:
        block_n, warps, stages = 256, 8, 3
    return dict(BLOCK_M=128, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
                num_stages=stages, LOOP="tma_raster")  # fmt: skip


def tma_candidate_configs(block_k: int, raster: bool = False) -> list[dict]:
    """Every TMA config autotuning may choose (the winners of the H100 explorations);
    `raster`: with the raster tiles too (where the convolution allows them)."""
    tiles = (  # BLOCK_P, BLOCK_Q, BLOCK_N, num_warps, num_stages
        (8, 16, 128, 4, 4), (16, 8, 128, 4, 4), (4, 32, 128, 4, 4), (8, 8, 128, 4, 4),
        (4, 16, 128, 4, 4), (16, 16, 64, 8, 3), (8, 32, 128, 8, 3), (16, 16, 128, 8, 4),
        (8, 8, 256, 4, 3), (4, 16, 256, 4, 3),
    )  # fmt: skip
    configs = [
        dict(
            BLOCK_M=bp * bq,
            BLOCK_Q=bq,
            BLOCK_N=bn,
            BLOCK_K=block_k,
            num_warps=w,
            num_stages=st,
            LOOP="tma",
        )
        for bp, bq, bn, w, st in tiles
    ]
    runs = (  # BLOCK_M, BLOCK_N, num_warps, num_stages
        (128, 128, 8, 3), (128, 128, 4, 4), (128, 64, 4, 4), (128, 256, 8, 3), (256, 128, 8, 3),
    )  # fmt: skip
    configs += [
        dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=block_k, num_warps=w, num_stages=st, LOOP="tma_raster")
        for bm, bn, w, st in runs
        if raster
    ]
    return configs


def check_config(config: dict) -> dict:
    """Validate a user-pinned config (power-of-two tiles of at least 16, as tl.dot needs).

    Optional `LOOP` pins the reduction loop: "flat", "channels" (conv2d_fwd.py), "tma"
    (conv2d_fwd_tma.py's window tiles, whose optional `BLOCK_Q` is the tile's width in
    output pixels) or "tma_raster" (its raster tiles: unpadded convolutions only).
    Optional `SPLIT_K` pins how many slices the reduction is cut into (split_k.py).
    """
    keys = set(config) - set(OPTIONAL_KEYS)
    if keys != set(CONFIG_KEYS):
        raise ValueError(
            f"config must have the keys {CONFIG_KEYS} (optionally {OPTIONAL_KEYS}), "
            f"got {sorted(config)}"
        )
    for key, low in (("BLOCK_M", 16), ("BLOCK_N", 16), ("BLOCK_K", 16), ("num_warps", 1)):
        v = config[key]
        if not isinstance(v, int) or v < low or v & (v - 1):
            raise ValueError(f"config[{key!r}] must be a power of two >= {low}, got {v!r}")
    if not isinstance(config["num_stages"], int) or config["num_stages"] < 1:
        raise ValueError(f"config['num_stages'] must be an int >= 1, got {config['num_stages']!r}")
    if "LOOP" in config and config["LOOP"] not in LOOPS:
        raise ValueError(f"config['LOOP'] must be one of {LOOPS}, got {config['LOOP']!r}")
    if "SPLIT_K" in config:
        v = config["SPLIT_K"]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 64:
            raise ValueError(f"config['SPLIT_K'] must be an int from 1 to 64, got {v!r}")
    if "BLOCK_Q" in config:
        v = config["BLOCK_Q"]
        if config.get("LOOP") != "tma":
            raise ValueError(f"config['BLOCK_Q'] applies to LOOP 'tma' only, got {config}")
        if not isinstance(v, int) or v < 1 or v & (v - 1) or v > config["BLOCK_M"]:
            raise ValueError(f"config['BLOCK_Q'] must be a power of two <= BLOCK_M, got {v!r}")
    return dict(config)


# Tiles that won at least one (layer, tier, layout) in the H100 sweep (notes/performance.md).
CANDIDATE_TILES = ((64, 128), (128, 64), (128, 128), (64, 64), (256, 64), (128, 32))


def candidate_configs(dtype: torch.dtype) -> list[dict]:
    """Every config autotuning may choose; each one is in the CPU correctness suite."""
    block_ks = (32,) if dtype == torch.float32 else (32, 64)
    return [
        dict(
            BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, num_warps=8 if m * n >= 128 * 128 else 4, num_stages=3
        )  # fmt: skip
        for m, n in CANDIDATE_TILES
        for k in block_ks
    ]


def shape_class(pixels: int, channels_per_group: int, reduction: int, *flags) -> str:
    """A few shape classes, not every shape: sizes rounded up to powers of two."""
    sizes = (next_power_of_2(v) for v in (pixels, channels_per_group, reduction))
    return "|".join(str(v) for v in (*sizes, *flags))


KEY_FORMAT = 4  # bump when a key's fields or a config's keys change meaning


@functools.cache
def device_key(device: torch.device) -> str:
    """GPU name, Triton version and key format: a tuned config holds for those only."""
    return f"{torch.cuda.get_device_name(device)}|triton {triton.__version__}|keys v{KEY_FORMAT}"


def autotune_enabled() -> bool:
    return os.environ.get("IM2WIN_AUTOTUNE") == "1"


class TuningCache:
    """Chosen configs by key, in a JSON file read on first use and rewritten on each new entry.

    A cache that cannot be read or written costs only speed: it warns and keeps going.
    """

    def __init__(self, path: Path | None = None) -> None:
        default = Path.home() / ".cache" / "im2win" / "tuning.json"
        self.path = path or Path(os.environ.get("IM2WIN_TUNING_CACHE", default))
        self._entries: dict[str, dict] | None = None

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            try:
                self._entries = json.loads(self.path.read_text()) if self.path.exists() else {}
            except (OSError, ValueError) as exc:
                warnings.warn(
                    f"im2win: ignoring unreadable tuning cache {self.path}: {exc}", stacklevel=2
                )
                self._entries = {}
        return self._entries

    def get(self, key: str) -> dict | None:
        return self._load().get(key)

    def put(self, key: str, config: dict) -> None:
        entries = self._load()
        entries[key] = config
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
            os.replace(tmp, self.path)  # atomic: a concurrent reader sees old or new, whole
        except OSError as exc:
            warnings.warn(f"im2win: could not write tuning cache {self.path}: {exc}", stacklevel=2)


CACHE = TuningCache()


def tuned_config(
    key: str,
    candidates: list[dict],
    measure: Callable[[dict], float],
    cache: TuningCache | None = None,
) -> dict:
    """The cached config for `key`, else the candidate `measure` (ms) finds fastest, cached.

    A candidate that fails (e.g. out of shared memory) is skipped. `cache` defaults to the
    process-wide CACHE.
    """
    cache = CACHE if cache is None else cache
    if (hit := cache.get(key)) is not None:
        return dict(hit)
    timings = []
    for config in candidates:
        try:
            timings.append((measure(config), config))
        except Exception:  # noqa: BLE001 - a config this GPU cannot run is not a choice
            continue
    if not timings:
        raise RuntimeError(f"no candidate config could run for shape class {key}")
    best = min(timings, key=lambda t: t[0])[1]
    cache.put(key, best)
    return dict(best)


def median_ms(fn: Callable[[], object]) -> float:
    """Median milliseconds of `fn` on the GPU (Triton's event-timed benchmark)."""
    return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")
