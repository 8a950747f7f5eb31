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

CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")
OPTIONAL_KEYS = ("CHANNEL_BLOCKED",)


def conv2d_fwd_config(
    pixels: int, channels_per_group: int, reduction: int, dtype: torch.dtype, interpreted: bool
) -> dict:
    """Tile sizes for M = `pixels` output pixels, KG output channels, a reduction of `reduction`.

    NOTE: measured on H100 (sweep of 7 tiles x 4 loop/window modes, 12 paper layers, tf32
    and bf16, 2026-11-26, notes/performance.md): 64-128 pixels x 128 channels won on most
    layers; BLOCK_K 64 only pays in 16-bit with a long reduction.
    """
    block_n = max(16, min(128, triton.next_power_of_2(channels_per_group)))
    if interpreted:  # few, large programs: the interpreter pays per program
        block_m = max(16, min(128, triton.next_power_of_2(pixels)))
        block_k = max(16, min(64, triton.next_power_of_2(reduction)))
        return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4, num_stages=1)
    block_k = 64 if dtype != torch.float32 and reduction >= 512 else 32
    block_m = 64 if block_n >= 128 else 128
    num_warps = 8 if block_m * block_n >= 128 * 128 else 4
    return dict(
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps, num_stages=3
    )


def check_config(config: dict) -> dict:
    """Validate a user-pinned config (power-of-two tiles of at least 16, as tl.dot needs).

    Optional `CHANNEL_BLOCKED` pins the reduction loop (tap by tap over channel blocks).
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
    sizes = (triton.next_power_of_2(v) for v in (pixels, channels_per_group, reduction))
    return "|".join(str(v) for v in (*sizes, *flags))


@functools.cache
def device_key(device: torch.device) -> str:
    """GPU name and Triton version: a tuned config holds for that pair only (asked once)."""
    return f"{torch.cuda.get_device_name(device)}|triton {triton.__version__}"


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
