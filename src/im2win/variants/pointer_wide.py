"""The pointer kernel's 128 x 256 tiles in TF32, where the TMA tiles the heuristic would run
waste a fifth or more: wide-channel layers on grids of 1.5 waves of the SMs or more, where
reading only real pixels beats the tiles' waste (notes/tuning.md, wide pointer tiles)."""

from __future__ import annotations

from ..kernels.sizes import cdiv
from ..problem import ConvProblem, MathMode
from .base import Target
from .pointer import Pointer
from .tma import efficiency, tma_pick


class WidePointer(Pointer):
    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        t = target.table["pointer-wide"]
        if target.interpreted or problem.math is not MathMode.TF32 or problem.kg < t["min_kg"]:
            return None
        tma = tma_pick(problem, target)
        if tma is None or efficiency(tma, problem) > t["max_tma_efficiency"]:
            return None
        tile = t["tile"]
        grid = cdiv(problem.pixels, tile["BLOCK_M"]) * cdiv(problem.kg, tile["BLOCK_N"])
        return dict(tile) if grid >= t["min_waves"] * target.sms else None

    def candidates(self, problem: ConvProblem, target: Target) -> list[dict]:
        t = target.table["pointer-wide"]
        wide = problem.math is MathMode.TF32 and problem.kg >= t["min_kg"]
        return [dict(t["tile"])] if wide else []


POINTER_WIDE = WidePointer("pointer-wide", windows="streamed")
