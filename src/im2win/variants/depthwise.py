"""Depthwise convolutions (groups == C) by direct FMA (`kernels/conv2d_dw.py`): no channel
reduction to make a GEMM of, in every math mode (fp32 arithmetic throughout); the fused
epilogue in the store."""

from __future__ import annotations

from ..epilogue import Epilogue
from ..kernels import conv2d_fwd_dw
from ..problem import ConvProblem
from .base import Choice, Into, Target, Variant, check_tiles

TILE_KEYS = ("BLOCK_M", "BLOCK_C", "num_warps")


class Depthwise(Variant):
    name = "depthwise"

    def supports(self, problem: ConvProblem, target: Target) -> bool:
        return problem.depthwise

    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        return dict(target.table["depthwise"]["tiles"][problem.layout])

    def check_config(self, config: dict) -> dict:
        return check_tiles(config, TILE_KEYS, ())

    def finalize(self, problem: ConvProblem, config: dict, target: Target) -> dict:
        # Triton 3.6 failed to compile the channels-last kernel with BLOCK_M != BLOCK_C
        # (notes/tuning.md, depthwise).
        if problem.channels_last and config["BLOCK_M"] != config["BLOCK_C"]:
            raise ValueError(
                "config: the depthwise kernel's channels-last tiles must be square "
                f"(BLOCK_M == BLOCK_C), got {config}"
            )
        return dict(config)

    def takes_epilogue(self, epilogue: Epilogue) -> bool:
        return True

    def build(self, problem: ConvProblem, choice: Choice, target: Target) -> Into:
        config, slot = dict(choice.config), {}
        return lambda x, weight, bias, y, scale=None, residual=None: conv2d_fwd_dw(
            x, weight, bias, y, problem, config=config, slot=slot, scale=scale,
            residual=residual,
        )  # fmt: skip


DEPTHWISE = Depthwise()
