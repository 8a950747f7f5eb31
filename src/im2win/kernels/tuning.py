"""Tile configurations of the forward kernel: one heuristic, one place.

The heuristic picks from a few shape classes (16-bit vs fp32 operands, narrow vs wide
output-channel count); tests pin a config through `conv2d(..., config=...)`.
"""

from __future__ import annotations

import torch
import triton

CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")


def conv2d_fwd_config(
    pixels: int, channels_per_group: int, reduction: int, dtype: torch.dtype, interpreted: bool
) -> dict:
    """Tile sizes for M = `pixels` output pixels, KG output channels, a reduction of `reduction`."""
    block_n = max(16, min(128, triton.next_power_of_2(channels_per_group)))
    block_k_cap = 64 if dtype != torch.float32 else 32
    block_k = max(16, min(block_k_cap, triton.next_power_of_2(reduction)))
    if interpreted:  # few, large programs: the interpreter pays per program
        block_m = max(16, min(128, triton.next_power_of_2(pixels)))
        return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4, num_stages=1)
    block_m = 128 if pixels >= 128 else 64
    num_warps = 8 if block_n >= 128 else 4
    return dict(
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps, num_stages=3
    )


def check_config(config: dict) -> dict:
    """Validate a user-pinned config (power-of-two tiles of at least 16, as tl.dot needs)."""
    if set(config) != set(CONFIG_KEYS):
        raise ValueError(f"config must have exactly the keys {CONFIG_KEYS}, got {sorted(config)}")
    for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"):
        v = config[key]
        if not isinstance(v, int) or v < 16 or v & (v - 1):
            raise ValueError(f"config[{key!r}] must be a power of two >= 16, got {v!r}")
    return dict(config)
