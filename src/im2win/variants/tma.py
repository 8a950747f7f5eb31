"""The TMA kernel (`kernels/conv2d_fwd_tma.py`): Hopper's tensor-memory accelerator copies
each tap's window tile, channels-last inputs only.

Two kinds of tile, each a variant: window tiles (a BLOCK_P x BLOCK_Q patch of outputs of one
image; LOOP 'tma') and raster tiles (a run of BLOCK_M consecutive input pixels, computed
whole and the non-outputs dropped; unpadded unit-stride only; LOOP 'tma_raster'). The
tensor-core tiers only take them by default: fp32-accurate ones lost to the pointer kernel
(notes/tuning.md, TMA tiles). Both run the fused epilogue in the store; with one, the GPU
heuristic leaves the call to the pointer kernel, whose fused tiles were measured.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..epilogue import Epilogue
from ..kernels import raster_supported, tma_block_k, tma_launcher, tma_programs, tma_supported
from ..kernels.sizes import cdiv
from ..problem import ConvProblem
from .base import (
    TILE_KEYS,
    Choice,
    Into,
    Target,
    Variant,
    check_tiles,
    clamp_pow2,
    entry_matches,
)
from .splits import split_bytes, split_count

BOX_MAX = 256  # a TMA box spans at most 256 elements a dimension
WIDTHS = (8, 16, 32, 64, 128, 256)  # window tile widths BLOCK_Q tried (tested from 8 up)


def tile_efficiency(p: int, q: int, block_p: int, block_q: int) -> float:
    """The share of a grid of BLOCK_P x BLOCK_Q tiles over a P x Q output that is real."""
    return p * q / (cdiv(p, block_p) * block_p * cdiv(q, block_q) * block_q)


def efficiency(config: Mapping, problem: ConvProblem) -> float:
    """The share of what `config`'s tiles compute that is output: raster tiles compute every
    pixel of the H x W input, window tiles round P and Q up to their patch."""
    if config["LOOP"] == "tma_raster":
        return problem.p * problem.q / (problem.h * problem.w)
    block_q = config["BLOCK_Q"]
    return tile_efficiency(problem.p, problem.q, config["BLOCK_M"] // block_q, block_q)


def _tile(entry: Mapping, block_k: int, loop: str, **extra) -> dict:
    launch = {key: entry[key] for key in ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")}
    return dict(launch, BLOCK_K=block_k, LOOP=loop, **extra)


def window_tiles(problem: ConvProblem, block_k: int, t: Mapping) -> tuple[dict | None, float]:
    """The first window tiles of the table whose best patch wastes at most 1 - min_efficiency
    of the output, and that patch's efficiency; (None, 0.0) where none does."""
    for entry in t["window_tiles"]:
        if not entry_matches(entry, problem):
            continue
        shapes = t["window_shapes"][str(entry["BLOCK_M"])]
        eff, (_, block_q) = max(
            (tile_efficiency(problem.p, problem.q, *shape), tuple(shape)) for shape in shapes
        )
        if eff >= t["min_efficiency"]:
            return _tile(entry, block_k, "tma", BLOCK_Q=block_q), eff
    return None, 0.0


def raster_tiles(problem: ConvProblem, block_k: int, t: Mapping) -> dict:
    entry = next(e for e in t["raster_tiles"] if entry_matches(e, problem))
    return _tile(entry, block_k, "tma_raster")


class Tma(Variant):
    """Window tiles, or (`raster`) raster tiles, of the TMA kernel."""

    windows = "streamed"

    def __init__(self, name: str, raster: bool) -> None:
        self.name, self.raster = name, raster
        self.loop = "tma_raster" if raster else "tma"

    def supports(self, problem: ConvProblem, target: Target) -> bool:
        return (
            target.tma and tma_supported(problem) and (not self.raster or raster_supported(problem))
        )

    def unsupported(self, problem: ConvProblem, target: Target, windows: str | None) -> str:
        params = problem.params
        if self.raster and target.tma and tma_supported(problem) and windows != "materialized":
            return (
                "config LOOP 'tma_raster' needs an unpadded unit-stride convolution over a "
                f"dense channels-last input, got padding={params.padding}, "
                f"stride={params.stride}, strides {problem.x_strides}"
            )
        return (
            f"config LOOP {self.loop!r} needs a Hopper-or-newer GPU and streamed windows over a "
            "channels-last input with Cg a multiple of 16, 16-byte aligned strides and a stride "
            "that divides its H x W (a column stride: pixels C apart); got "
            f"windows={windows!r}, stride={params.stride}, Cg={problem.cg}, input "
            f"{(problem.n, problem.c, problem.h, problem.w)} strided {problem.x_strides}"
        )

    def takes_epilogue(self, epilogue: Epilogue) -> bool:
        return True

    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        if not problem.math.tensor_cores:
            return None
        if not (problem.epilogue.empty or target.interpreted):
            return None  # fused, the pointer kernel was measured ahead (notes/fusion); this not
        t = target.table["tma"]
        block_k = tma_block_k(problem.cg, problem.itemsize)
        if target.interpreted:  # every eligible case, so the CPU suite runs these tiles
            return self._interpreter_tiles(problem, block_k, t)
        if problem.strided:  # (raster tiles are unit-stride only)
            if problem.q < t["strided_min_width"]:
                return None
            return window_tiles(problem, block_k, t)[0]
        if block_k != 128 // problem.itemsize:  # full channel blocks only
            return None
        if self.raster:
            covered = problem.p * problem.q >= t["raster_min_coverage"] * problem.h * problem.w
            if problem.taps > 1 and covered:
                return raster_tiles(problem, block_k, t)
            if problem.taps == 1 and problem.math.tile_class == "16bit":  # a run wastes nothing
                window_efficiency = window_tiles(problem, block_k, t)[1]
                if window_efficiency <= t["raster_1x1_max_window_efficiency"]:
                    return raster_tiles(problem, block_k, t)
            return None
        if problem.kg >= t["window_min_kg"] or problem.padded or problem.taps == 1:
            return window_tiles(problem, block_k, t)[0]
        return None

    def _interpreter_tiles(self, problem: ConvProblem, block_k: int, t: Mapping) -> dict:
        common = dict(BLOCK_N=clamp_pow2(problem.kg, *t["block_n_range"]),
                      BLOCK_K=min(block_k, t["max_block_k"]), num_warps=t["num_warps"],
                      num_stages=t["num_stages"], LOOP=self.loop)  # fmt: skip
        if self.raster:
            return dict(BLOCK_M=t["raster_block_m"], **common)
        block_q = clamp_pow2(problem.q, *t["block_q_range"])
        low, high = t["window_pixels_range"]
        block_p = clamp_pow2(problem.p, low // block_q, high // block_q)
        return dict(BLOCK_M=block_p * block_q, BLOCK_Q=block_q, **common)

    def candidates(self, problem: ConvProblem, target: Target) -> list[dict]:
        t = target.table["tma"]["candidates"]
        block_k = tma_block_k(problem.cg, problem.itemsize)
        if self.raster:
            tiles = [dict(zip(t["raster_keys"], row, strict=True)) for row in t["raster"]]
        else:
            tiles = [dict(zip(t["window_keys"], row, strict=True)) for row in t["window"]]
            for tile in tiles:
                tile["BLOCK_M"] = tile.pop("BLOCK_P") * tile["BLOCK_Q"]
        return [dict(tile, BLOCK_K=block_k, LOOP=self.loop) for tile in tiles]

    def check_config(self, config: dict) -> dict:
        if config.get("LOOP", self.loop) != self.loop:
            raise ValueError(f"config['LOOP'] of {self.name!r} must be {self.loop!r}, got {config}")
        tiles = check_tiles(config, TILE_KEYS, ("LOOP", "BLOCK_Q", "SPLIT_K"))
        if "BLOCK_Q" in tiles:
            if self.raster:
                raise ValueError(f"config['BLOCK_Q'] applies to LOOP 'tma' only, got {config}")
            value = tiles["BLOCK_Q"]
            if not isinstance(value, int) or value < 1 or value & (value - 1) or (
                    value > tiles["BLOCK_M"]):  # fmt: skip
                raise ValueError(
                    f"config['BLOCK_Q'] must be a power of two <= BLOCK_M, got {value!r}"
                )
        return dict(tiles, LOOP=self.loop)

    def finalize(self, problem: ConvProblem, config: dict, target: Target) -> dict:
        """Check a pinned config against the problem, then fill in BLOCK_Q (the width that
        wastes least) and SPLIT_K."""
        config = dict(config)
        block_m, block_k = config["BLOCK_M"], config["BLOCK_K"]
        if problem.cg % block_k:
            raise ValueError(
                f"the 'tma' loop needs BLOCK_K to divide Cg={problem.cg}, got BLOCK_K={block_k}"
            )
        block_q = block_m
        if not self.raster:
            widths = [bq for bq in WIDTHS if bq <= block_m <= BOX_MAX * bq] or [block_m]
            block_q = config.setdefault("BLOCK_Q", max(
                (tile_efficiency(problem.p, problem.q, block_m // bq, bq), bq) for bq in widths
            )[1])  # fmt: skip
        box = dict(BLOCK_P=block_m // block_q, BLOCK_Q=block_q, BLOCK_N=config["BLOCK_N"],
                   BLOCK_K=block_k)  # fmt: skip
        if max(box.values()) > BOX_MAX:
            raise ValueError(f"the 'tma' loop needs tiles of at most {BOX_MAX} a side, got {box}")
        if "SPLIT_K" not in config:
            grid = tma_programs(problem, block_m, config["BLOCK_N"],
                                None if self.raster else block_q)  # fmt: skip
            steps = problem.taps * (problem.cg // block_k)
            config["SPLIT_K"] = split_count(grid, steps, problem.outputs, target)
        return config

    def workspace_bytes(self, problem: ConvProblem, config: Mapping) -> int:
        return split_bytes(problem, config["SPLIT_K"])

    def build(self, problem: ConvProblem, choice: Choice, target: Target) -> Into:
        return tma_launcher(problem, dict(choice.config), raster=self.raster,
                            interpreted=target.interpreted, slot={})  # fmt: skip


TMA_RASTER = Tma("tma-raster", raster=True)
TMA_WINDOW = Tma("tma", raster=False)


def tma_pick(problem: ConvProblem, target: Target) -> dict | None:
    """The TMA tiles the heuristic would run, or None."""
    for variant in (TMA_RASTER, TMA_WINDOW):
        if variant.supports(problem, target):
            config = variant.heuristic(problem, target)
            if config is not None:
                return config
    return None
