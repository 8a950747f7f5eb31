"""Precision tiers: every benchmark number belongs to one, and is checked against its bound.

A tier is an accuracy class, not an implementation: 'fp32' holds every method that is
fp32-accurate (IEEE FMA, 3xTF32, cuDNN with TF32 off), whatever arithmetic it uses inside.
Each tier is named by the math mode im2win runs in it by default (`problem.MathMode`), whose
bound it takes: ||y - ref|| / ||ref|| against a float64 reference computed from the same
(rounded) inputs, so it measures the convolution's arithmetic, not the input's rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from im2win.problem import MathMode


@dataclass(frozen=True)
class Tier:
    math: MathMode  # im2win's default mode in this tier; others may join it (3xTF32 in fp32)

    @property
    def name(self) -> str:
        return self.math.tier

    @property
    def dtype(self) -> torch.dtype:
        """dtype of input, weight and output."""
        return self.math.dtype

    @property
    def max_rel_err(self) -> float:
        return self.math.max_rel_err


TIERS: dict[str, Tier] = {
    mode.tier: Tier(mode) for mode in (MathMode.IEEE, MathMode.TF32, MathMode.FP16, MathMode.BF16)
}
