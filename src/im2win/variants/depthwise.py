"""Depthwise convolutions (groups == C) by direct FMA (`kernels/conv2d_dw.py`): no channel
reduction to make a GEMM of, in every math mode (fp32 arithmetic throughout); the fused
epilogue in the store. Channels-last tensors take tiles along one output row (BLOCK_Q
columns, the weight read taps-major: a copy where it is not laid out so), NCHW ones tiles
of flat pixels (BLOCK_M)."""

from __future__ import annotations

from ..epilogue import Epilogue
from ..kernels import conv2d_fwd_dw
from ..problem import ConvProblem
from .base import Choice, Into, Target, Variant, check_tiles, clamp_pow2

ROW_KEYS = ("BLOCK_Q", "BLOCK_C", "num_warps")
FLAT_KEYS = ("BLOCK_M", "BLOCK_C", "num_warps")


class Depthwise(Variant):
    name = "depthwise"

    def supports(self, problem: ConvProblem, target: Target) -> bool:
        return problem.depthwise

    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        tiles = target.table["depthwise"]["tiles"][problem.layout]
        if not problem.channels_last:
            return dict(tiles)
        # A tile no wider than the layer's channels or its rows, as the table sizes it.
        block_c = clamp_pow2(problem.k, 16, tiles["BLOCK_C"])
        block_q = clamp_pow2(problem.q, 8, tiles["pixels"] // block_c)
        return dict(BLOCK_Q=block_q, BLOCK_C=block_c, num_warps=tiles["num_warps"])

    def check_config(self, config: dict) -> dict:
        if "BLOCK_Q" not in config:
            return check_tiles(config, FLAT_KEYS, ())
        if not isinstance(config.get("UNROLL_ROWS", True), bool):
            raise ValueError(f"config['UNROLL_ROWS'] must be a bool, got {config['UNROLL_ROWS']!r}")
        return check_tiles(config, ROW_KEYS, ("UNROLL_ROWS",))

    def finalize(self, problem: ConvProblem, config: dict, target: Target) -> dict:
        if ("BLOCK_Q" in config) != problem.channels_last:
            raise ValueError(
                "config: the depthwise kernel takes BLOCK_Q (row tiles) on channels-last "
                f"tensors and BLOCK_M (flat pixels) on NCHW ones, got {config} for "
                f"{problem.layout}"
            )
        return dict(config)

    def takes_epilogue(self, epilogue: Epilogue) -> bool:
        return True

    def workspace_bytes(self, problem: ConvProblem, config) -> int:
        # the row kernel's taps-major copy of the weight (none where it is laid out so)
        return problem.k * problem.taps * problem.itemsize if problem.channels_last else 0

    def build(self, problem: ConvProblem, choice: Choice, target: Target) -> Into:
        config, slot = dict(choice.config), {}
        return lambda x, weight, bias, y, scale=None, residual=None: conv2d_fwd_dw(
            x, weight, bias, y, problem, config=config, slot=slot, scale=scale,
            residual=residual,
        )  # fmt: skip


DEPTHWISE = Depthwise()
