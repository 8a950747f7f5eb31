"""Winograd F(2x2, 3x3) (`kernels/conv2d_winograd.py`): 3x3 unit-stride convolutions in
fp32 as 16 GEMMs over transformed 2x2 output tiles, 2.25x fewer products than direct; the
fused epilogue in the output transform. cuDNN's WINOGRAD_NONFUSED and FFT engines win the
deep fp32-accurate NCHW layers (issue 19); this is the same algorithm with its GEMMs in
3xTF32 on tensor cores. Its table entry's `tiles` is null until a GPU has run it: the
heuristic and autotuning leave it alone, a pinned config runs it.
"""

from __future__ import annotations

from ..epilogue import Epilogue
from ..kernels.conv2d_winograd import (
    conv2d_fwd_winograd,
    winograd_supported,
    winograd_workspace_bytes,
)
from ..problem import ConvProblem
from .base import Choice, Into, Target, Variant, check_tiles

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
        tiles = target.table["winograd"]["tiles"]
        return None if tiles is None else dict(tiles)

    def candidates(self, problem: ConvProblem, target: Target) -> list[dict]:
        table = target.table["winograd"]
        if table["tiles"] is None:  # not yet run on a GPU: autotuning would trust it
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
