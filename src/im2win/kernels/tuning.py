"""Tile configurations of the forward kernel: one heuristic, one place.

The heuristic picks from a few shape classes (16-bit vs fp32 operands, narrow vs wide
output-channel count); tests pin a config through `conv2d(..., config=...)`.
"""

from __future__ import annotations

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
