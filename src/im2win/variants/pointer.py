"""The pointer kernel (`kernels/conv2d_fwd.py`): every problem, every math mode and layout.

Windows are streamed from the input (padding as masked loads) or read from the im2win
tensor the transform materializes (the paper's scheme, on request). Two reduction loops:
'flat' over whole windows (the few-channel stems) and 'channels', tap by tap over blocks of
channels, once Cg fills a block. Both take the fused epilogue (`epilogue.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..epilogue import Epilogue
from ..kernels import WindowSource, im2win_transform, pointer_launcher
from ..kernels.conv2d_fwd import LOOPS
from ..kernels.sizes import cdiv
from ..params import ConvParams
from ..problem import ConvProblem
from .base import TILE_KEYS, Choice, Into, Target, Variant, check_tiles, clamp_pow2
from .splits import split_bytes, split_count


def streamed_windows(x: torch.Tensor, params: ConvParams, cg: int) -> WindowSource:
    """Windows read straight from the input: no buffer, padding becomes masked loads."""
    sn, sc, s_h, s_w = x.stride()
    (sh, sw), (dh, dw) = params.stride, params.dilation
    top, _, left, _ = params.padding
    return WindowSource(
        x, (sn, cg * sc, sh * s_h, sw * s_w), (sc, dw * s_w, dh * s_h),
        origin=-(top * s_h + left * s_w), masked=any(params.padding),
    )  # fmt: skip


def materialized_windows(win: torch.Tensor, params: ConvParams, r: int, cg: int,
                         channels_last: bool) -> WindowSource:  # fmt: skip
    """Windows read from the im2win tensor: [N, C, P, Wp*R] or [N, P, Wp, R, C]."""
    sw, dw = params.stride[1], params.dilation[1]
    if channels_last:
        sn, sp, s_w, s_r, sc = win.stride()
    else:
        sn, sc, sp, _ = win.stride()
        s_w, s_r = r, 1
    return WindowSource(win, (sn, cg * sc, sp, sw * s_w), (sc, dw * s_w, s_r))


def default_loop(problem: ConvProblem, windows: str) -> str:
    """Tap by tap over channel blocks once Cg fills a 16-channel block; not on the
    materialized NCHW window, whose channels lie whole planes apart."""
    if problem.cg >= 16 and (windows == "streamed" or problem.channels_last):
        return "channels"
    return "flat"


def default_tiles(problem: ConvProblem, target: Target, stem: bool,
                  channels_loop: bool = False) -> dict:  # fmt: skip
    """Tiles for the problem's GEMM (N*P*Q pixels x KG channels, a Cg*R*S reduction). `stem`:
    the flat loop over streamed windows (the few-channel stems), whose tiles were measured
    apart (notes/tuning.md, pointer tiles); `channels_loop`: the loop over channel blocks,
    whose 16-bit multi-tap tiles were too (notes/fusion/README.md)."""
    t = target.table["pointer"]
    block_n = clamp_pow2(problem.kg, *t["block_n"])
    if target.interpreted:
        return dict(
            BLOCK_M=clamp_pow2(problem.pixels, *t["block_m_range"]), BLOCK_N=block_n,
            BLOCK_K=clamp_pow2(problem.reduction, *t["block_k_range"]),
            num_warps=t["num_warps"], num_stages=t["num_stages"],
        )  # fmt: skip
    block_k = t["block_k"]
    if problem.reduction >= t["long_reduction"]:
        block_k = t["long_block_k"].get(problem.math.tile_class, block_k)
    if stem and block_k == t["block_k"]:
        tile = t["stem_tiles"].get(f"{problem.math.tile_class}/{problem.layout}/{block_n}")
        if tile:
            return dict(tile)
    wide = t.get("multi_tap_16bit")  # 3x3 and larger: 128x128 tiles once they fill the GPU
    if wide and channels_loop and problem.taps > 1 and problem.math.tile_class == "16bit":
        tile = wide["tile"]
        per_group = cdiv(problem.pixels, tile["BLOCK_M"]) * cdiv(problem.kg, tile["BLOCK_N"])
        tiles = problem.groups * per_group
        if block_n == tile["BLOCK_N"] and tiles >= wide["min_waves"] * target.sms:
            return dict(BLOCK_K=block_k, **tile)
    return dict(BLOCK_N=block_n, BLOCK_K=block_k, **t["tiles_by_block_n"][str(block_n)])


class Pointer(Variant):
    """The pointer kernel over windows from one source ('streamed' or 'materialized')."""

    def __init__(self, name: str, windows: str) -> None:
        self.name, self.windows = name, windows

    def supports(self, problem: ConvProblem, target: Target) -> bool:
        return True

    def takes_epilogue(self, epilogue: Epilogue) -> bool:
        return True

    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        loop = default_loop(problem, self.windows)
        stem = loop == "flat" and self.windows == "streamed"
        tiles = default_tiles(problem, target, stem, channels_loop=loop == "channels")
        return dict(LOOP=loop, **tiles)

    def candidates(self, problem: ConvProblem, target: Target) -> list[dict]:
        t = target.table["pointer"]["candidates"]
        loop = default_loop(problem, self.windows)
        block_ks = t["block_k"].get(problem.math.tile_class, t["block_k"]["other"])
        return [
            dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, num_warps=8 if m * n >= t["eight_warps_from"]
                 else 4, num_stages=t["num_stages"], LOOP=loop)
            for m, n in t["tiles"]
            for k in block_ks
        ]  # fmt: skip

    def check_config(self, config: dict) -> dict:
        if "BLOCK_Q" in config:
            raise ValueError(f"config['BLOCK_Q'] applies to LOOP 'tma' only, got {config}")
        if config.get("LOOP", "flat") not in LOOPS:
            raise ValueError(
                f"config['LOOP'] of {self.name!r} must be one of {LOOPS}, got {config}"
            )
        return check_tiles(config, TILE_KEYS, ("LOOP", "SPLIT_K"))

    def finalize(self, problem: ConvProblem, config: dict, target: Target) -> dict:
        config = dict(config)
        loop = config.setdefault("LOOP", default_loop(problem, self.windows))
        if "SPLIT_K" not in config:
            block_k = config["BLOCK_K"]
            steps = problem.taps * cdiv(problem.cg, block_k) if loop == "channels" else (
                cdiv(problem.reduction, block_k))  # fmt: skip
            config["SPLIT_K"] = split_count(
                programs(problem, config), steps, problem.outputs, target
            )
        return config

    def workspace_bytes(self, problem: ConvProblem, config: Mapping) -> int:
        split = split_bytes(problem, config["SPLIT_K"])
        if self.windows == "streamed":
            return split
        wp = problem.params.padded_width(problem.w)  # the window tensor: [N, C, P, Wp*R]
        return split + problem.n * problem.c * problem.p * wp * problem.r * problem.itemsize

    def build(self, problem: ConvProblem, choice: Choice, target: Target) -> Into:
        config = dict(choice.config)
        loop = config.pop("LOOP")
        params, cg, r = problem.params, problem.cg, problem.r
        interpreted, channels_last = target.interpreted, problem.channels_last
        run = pointer_launcher(problem, loop=loop, config=config, interpreted=interpreted)
        if self.windows == "streamed":

            def source(x):
                return streamed_windows(x, params, cg)

            return lambda x, weight, bias, y, scale=None, residual=None: run(
                x, weight, bias, y, source, scale, residual
            )

        def source(win):
            return materialized_windows(win, params, r, cg, channels_last)

        def into(x, weight, bias, y, scale=None, residual=None):
            win = im2win_transform(x, r, params, channels_last, interpreted)
            return run(win, weight, bias, y, source, scale, residual)

        return into


def programs(problem: ConvProblem, config: Mapping) -> int:
    """The pointer kernel's grid: tiles of BLOCK_M pixels x BLOCK_N channels, every group."""
    tiles_n = cdiv(problem.kg, config["BLOCK_N"])
    return cdiv(problem.pixels, config["BLOCK_M"]) * tiles_n * problem.groups


POINTER = Pointer("pointer", windows="streamed")
POINTER_MATERIALIZED = Pointer("pointer-materialized", windows="materialized")
