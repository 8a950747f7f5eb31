"""Precision tiers: every benchmark number belongs to one, and is checked against its bound.

A tier is an accuracy class, not an implementation: 'fp32' holds every method that is
fp32-accurate (IEEE FMA, 3xTF32, cuDNN with TF32 off), whatever arithmetic it uses inside.
Bounds are on ||y - ref|| / ||ref|| against a float64 reference computed from the same
(rounded) inputs, so they measure the convolution's arithmetic, not the input's rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tier:
    name: str
    dtype: torch.dtype  # dtype of input, weight and output
    max_rel_err: float


TIERS: dict[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier("fp32", torch.float32, 1e-5),
        Tier("tf32", torch.float32, 2e-3),
        Tier("fp16", torch.float16, 2e-3),
        Tier("bf16", torch.bfloat16, 5e-3),
    )
}
