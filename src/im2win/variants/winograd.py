"""Winograd F(2x2, 3x3) (`kernels/conv2d_winograd.py`): 3x3 unit-stride convolutions in
fp32 as 16 GEMMs over transformed 2x2 output tiles, 2.25x fewer products than direct; the
fused epilogue in the output transform. The algorithm of cuDNN's WINOGRAD_NONFUSED engine
with its GEMMs in 3xTF32 on tensor cores.

The table's `tiles` entries say where it runs (H200: 3xTF32 layers of 256 output channels
or more, where it beat cuDNN's best engine and the other kernels in both layouts at batch
32 and 128; notes/winograd/), within `max_workspace_bytes` (its transformed tiles take
about 4x the input and 4x the output, fp32).
"""

from __future__ import annotations

from ..epilogue import Epilogue
from ..kernels.conv2d_winograd import (
    conv2d_fwd_winograd,
    winograd_supported,
    winograd_workspace_bytes,
)
from ..problem import ConvProblem
from .base import Choice, Into, Target, Variant, check_tiles, entry_matches

TILE_KEYS = ("BLOCK_T", "BLOCK_K", "BLOCK_C", "num_warps", "num_stages")


class Winograd(Variant):
    name = "winograd"

    def supports(self, problem: ConvProblem, target: Target) -> bool:
        return winograd_supported(problem)

    def unsupported(self, problem: ConvProblem, target: Target, windows: str | None) -> str:
        return (
            "config: variant 'winograd' needs a 3x3 filter at stride 1 and dilation 1, one "
            f"group, float32 (workspaces of under 2**31 elements a place), and reads no "
            f"im2win windows; got a {problem}, windows={windows!r}"
        )

    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        table = target.table["winograd"]
        if winograd_workspace_bytes(problem) > table["max_workspace_bytes"]:
            return None
        for entry in table["tiles"] or ():
            if entry_matches(entry, problem):
                return {key: entry[key] for key in TILE_KEYS}
        return None

    def candidates(self, problem: ConvProblem, target: Target) -> list[dict]:
        table = target.table["winograd"]
        if table["tiles"] is None:  # not run on this target's GPU: autotuning would trust it
            return []
        if winograd_workspace_bytes(problem) > table["max_workspace_bytes"]:
            return []
        return [dict(zip(table["candidates_keys"], row, strict=True))
                for row in table["candidates"]]  # fmt: skip

    def check_config(self, config: dict) -> dict:
        return check_tiles(config, TILE_KEYS, ())

    def takes_epilogue(self, epilogue: Epilogue) -> bool:
        return True

    def workspace_bytes(self, problem: ConvProblem, config) -> int:
        return winograd_workspace_bytes(problem)

    def build(self, problem: ConvProblem, choice: Choice, target: Target) -> Into:
        config, slots = dict(choice.config), {}
        return lambda x, weight, bias, y, scale=None, residual=None: conv2d_fwd_winograd(
            x, weight, bias, y, problem, config=config, slots=slots, scale=scale,
            residual=residual,
        )  # fmt: skip


WINOGRAD = Winograd()
