"""Narrow groups packed several to a tensor-core tile (`kernels/conv2d_grouped.py`): groups
of at most 16 input and 16 output channels, as a block-diagonal filter, in the tensor-core
tiers. Depthwise packs only in NCHW on outputs up to 56x56; elsewhere the FMA kernel won
(notes/tuning.md, packed groups). The fused epilogue runs in the store."""

from __future__ import annotations

from ..epilogue import Epilogue
from ..kernels import conv2d_fwd_grouped
from ..kernels.sizes import next_power_of_2
from ..problem import ConvProblem
from .base import Choice, Into, Target, Variant, check_tiles

TILE_KEYS = ("BLOCK_M", "BLOCK_G", "num_warps", "num_stages")


class PackedGroups(Variant):
    name = "packed-groups"

    def supports(self, problem: ConvProblem, target: Target) -> bool:
        most = target.table["packed-groups"]["max_group_channels"]
        few = max(problem.cg, problem.kg) <= most
        return problem.math.tensor_cores and problem.groups > 1 and few

    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        """Every group it supports, but depthwise ones (Cg = 1) only in NCHW on outputs of at
        most `depthwise_max_pixels` an image: elsewhere the FMA kernel won."""
        if problem.cg == 1:
            limit = target.table["packed-groups"]["depthwise_max_pixels"]
            if problem.channels_last or problem.p * problem.q > limit:
                return None
        return self.candidates(problem, target)[0]

    def candidates(self, problem: ConvProblem, target: Target) -> list[dict]:
        """The fewest groups to a tile whose input and output channels both fill the lanes a
        tensor-core step needs (the tile computes BLOCK_G times the useful products)."""
        t = target.table["packed-groups"]
        lanes = t["lanes"]
        block_cg, block_kg = next_power_of_2(problem.cg), next_power_of_2(problem.kg)
        block_g = max(lanes // block_cg, lanes // block_kg, 1)
        return [dict(t["tile"], BLOCK_G=block_g)]

    def check_config(self, config: dict) -> dict:
        return check_tiles(config, TILE_KEYS, ())

    def finalize(self, problem: ConvProblem, config: dict, target: Target) -> dict:
        block_cg, block_kg = next_power_of_2(problem.cg), next_power_of_2(problem.kg)
        return dict(config, BLOCK_CG=block_cg, BLOCK_KG=block_kg)

    def takes_epilogue(self, epilogue: Epilogue) -> bool:
        return True

    def build(self, problem: ConvProblem, choice: Choice, target: Target) -> Into:
        config, slot, interpreted = dict(choice.config), {}, target.interpreted
        return lambda x, weight, bias, y, scale=None, residual=None: conv2d_fwd_grouped(
            x, weight, bias, y, problem, config=config, interpreted=interpreted, slot=slot,
            scale=scale, residual=residual,
        )  # fmt: skip


PACKED_GROUPS = PackedGroups()
