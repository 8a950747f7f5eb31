"""Autotuning's search and its on-disk cache.

With IM2WIN_AUTOTUNE=1 the first call of a shape class on a GPU times every candidate of
every variant that supports it and keeps the fastest in a JSON file (IM2WIN_TUNING_CACHE,
default ~/.cache/im2win/tuning.json), keyed by GPU, Triton version and shape class.
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

KEY_FORMAT = 5  # bump when a key's fields or a stored choice's keys change meaning


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
