"""Tuning data and autotuning: the tables the variants' heuristics read, one per GPU
architecture, and the on-disk cache of autotuned choices.

A table (`sm90.json`, ...) holds tiles and thresholds only, each section naming where it was
measured; the logic that reads them lives with each variant (`im2win/variants/`).
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from .autotune import CACHE, TuningCache, autotune_enabled, device_key, median_ms, tuned_config

# The architecture whose table serves every architecture without one of its own.
DEFAULT_ARCH = "sm90"


@functools.cache
def table(arch: str) -> dict:
    """The tuning table of `arch` ('sm90', ..., or 'interpreter': sm90's, with the
    interpreter's sections merged over it). Cached: tests may patch entries in place."""
    if arch != "interpreter":
        return _load(arch) or _load(DEFAULT_ARCH)
    data = _load(DEFAULT_ARCH)
    for section, values in _load("interpreter").items():
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    return data


def _load(name: str) -> dict | None:
    path = resources.files(__package__).joinpath(f"{name}.json")
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = [
    "CACHE",
    "DEFAULT_ARCH",
    "TuningCache",
    "autotune_enabled",
    "device_key",
    "median_ms",
    "table",
    "tuned_config",
]
