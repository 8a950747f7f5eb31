"""The window-strips kernel (`kernels/conv2d_fwd_strips.py`): a persistent, warp-specialized
Gluon kernel for Hopper whose taps share input rows in shared memory. Channels-last, one
group, the tensor-core tiers; it runs the fused epilogue in its store.

Tiles come from the table's `strips.tiles` (`tuning/sm90.json`), the first entry whose
conditions hold (tile class, KG, output size), whose ring holds two strips of the problem
and whose grid reaches `min_grid_share` of the SMs (where none does, kernels with split-K
take the layer); `strips.candidates` are what autotuning times. A C that leaves the last
128-byte channel block partly empty (TMA fills it with zeros) is taken where
`ragged_max_padding` allows: null until the GPU suite has run such blocks
(`test_strips_configs` pins them). Gluon does not run in Triton's interpreter, so the CPU
suite compiles this kernel for sm_90a instead of running it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..epilogue import Epilogue
from ..kernels import interpreted
from ..kernels.conv2d_fwd_strips import (
    ragged_channels,
    strips_fits,
    strips_launcher,
    strips_shared_bytes,
    strips_supported,
    strips_tiles,
)
from ..kernels.sizes import cdiv
from ..params import ConvParams
from ..problem import ConvProblem, MathMode
from .base import Choice, Into, Target, Variant, entry_matches, target_of

KEYS = ("BLOCK_P", "BLOCK_Q", "BLOCK_N", "num_stages", "num_warps", "A_ROWS", "CONSUMERS")
SHARED_LIMIT = 232448  # bytes of shared memory a block may have on sm90


def _runs(problem: ConvProblem, config: Mapping) -> bool:
    """Whether `config` can run `problem`: two strips in its ring, within shared memory."""
    shared = strips_shared_bytes(config, problem.itemsize)
    return strips_fits(problem, config) and shared < SHARED_LIMIT


def _takes_channels(problem: ConvProblem, table: Mapping) -> bool:
    """Whether the heuristic and autotuning take `problem`'s channels: whole 128-byte blocks,
    or, where the table's `ragged_max_padding` is set (not null), a last block's zeros at
    most that share of C."""
    if not ragged_channels(problem):
        return True
    share = table["ragged_max_padding"]
    block = 128 // problem.itemsize
    return share is not None and cdiv(problem.c, block) * block <= (1 + share) * problem.c


class Strips(Variant):
    name = "strips"
    windows = "streamed"

    def supports(self, problem: ConvProblem, target: Target) -> bool:
        return target.arch == "sm90" and not target.interpreted and strips_supported(problem)

    def unsupported(self, problem: ConvProblem, target: Target, windows: str | None) -> str:
        params = problem.params
        return (
            "config: variant 'strips' needs a Hopper GPU (sm90, not the interpreter) and "
            "streamed windows of a one-group, 16-bit or TF32 convolution over a channels-last "
            "input with C a multiple of 16 bytes (of 128 bytes at a column stride above 1), "
            "16-byte aligned strides, H and W multiples of the stride and, at a column stride "
            "above 1, dense pixels, and a channels-last output of K channels a multiple of 16 "
            "bytes (the output's TMA store); got "
            f"{target.arch}{' (interpreted)' if target.interpreted else ''}, "
            f"windows={windows!r}, groups={params.groups}, stride={params.stride}, "
            f"H={problem.h}, W={problem.w}, C={problem.c}, K={problem.k}, {problem.dtype} in "
            f"{problem.math.value}, input strides {problem.x_strides}, "
            f"{'channels-last' if problem.output_channels_last else 'NCHW'} output"
        )

    def takes_epilogue(self, epilogue: Epilogue) -> bool:
        return True

    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        table = target.table["strips"]
        if not _takes_channels(problem, table):
            return None
        for entry in table["tiles"]:
            config = {key: entry[key] for key in KEYS}
            # A grid under a share of the SMs is better served by split-K's kernels: a later
            # entry's smaller tiles may make enough.
            enough = strips_tiles(problem, config) >= table["min_grid_share"] * target.sms
            if entry_matches(entry, problem) and _runs(problem, config) and enough:
                return config
        return None

    def candidates(self, problem: ConvProblem, target: Target) -> list[dict]:
        table = target.table["strips"]
        if not _takes_channels(problem, table):
            return []
        configs = [dict(zip(table["candidates_keys"], row, strict=True))
                   for row in table["candidates"]]  # fmt: skip
        return [c for c in configs if _runs(problem, c)]

    def check_config(self, config: dict) -> dict:
        settings = {key: value for key, value in config.items() if key != "VARIANT"}
        if set(settings) != set(KEYS):
            raise ValueError(f"config of 'strips' must have the keys {KEYS}, got {sorted(config)}")
        for key in ("BLOCK_P", "BLOCK_Q", "BLOCK_N", "A_ROWS"):
            value = settings[key]
            if not isinstance(value, int) or value < 4 or value & (value - 1):
                raise ValueError(f"config[{key!r}] must be a power of two >= 4, got {value!r}")
        if settings["BLOCK_P"] * settings["BLOCK_Q"] not in (64, 128):
            raise ValueError(
                f"config: BLOCK_P * BLOCK_Q must be 64 or 128 (one warpgroup's wgmma rows), "
                f"got {settings['BLOCK_P']} * {settings['BLOCK_Q']}"
            )
        if settings["num_warps"] != 4 or settings["CONSUMERS"] not in (1, 2):
            raise ValueError(
                f"config: 'strips' runs consumers of num_warps=4, CONSUMERS 1 or 2; got "
                f"num_warps={settings['num_warps']!r}, CONSUMERS={settings['CONSUMERS']!r}"
            )
        stages = settings["num_stages"]
        if not isinstance(stages, int) or not 2 <= stages <= 8:
            raise ValueError(f"config['num_stages'] must be an int from 2 to 8, got {stages!r}")
        return settings

    def finalize(self, problem: ConvProblem, config: dict, target: Target) -> dict:
        if not strips_fits(problem, config):
            raise ValueError(
                f"config: A_ROWS={config['A_ROWS']} must hold 2 to 8 strips of BLOCK_P="
                f"{config['BLOCK_P']} rows plus the filter's (R-1)*dh="
                f"{(problem.r - 1) * problem.params.dilation[0]} (rounded up to a power of two)"
            )
        shared = strips_shared_bytes(config, problem.itemsize)
        if shared >= SHARED_LIMIT:
            raise ValueError(
                f"config: {config} takes {shared} bytes of shared memory, past sm90's "
                f"{SHARED_LIMIT}"
            )
        return dict(config)

    def build(self, problem: ConvProblem, choice: Choice, target: Target) -> Into:
        return strips_launcher(problem, dict(choice.config), target.sms, slot={})


STRIPS = Strips()


def strips_runs(problem: ConvProblem, target: Target) -> bool:
    """Whether the strips kernel takes `problem`: it serves it and its heuristic runs the
    grid (PyTorch's convolution stands back for fused calls where it does: `aten.py`)."""
    return STRIPS.supports(problem, target) and STRIPS.heuristic(problem, target) is not None


def strips_would_serve(input: torch.Tensor, weight: torch.Tensor, params: ConvParams,
                       math: MathMode, target: Target | None = None) -> bool:  # fmt: skip
    """`strips_runs` for a traced call: the problem from shapes and strides, the input's
    start taken as aligned (a traced tensor has no address; the plan checks it).
    `target`: the input's device's, unless given."""
    x = input if input.dim() == 4 else input.unsqueeze(0)
    target = target or target_of(input.device, interpreted())
    return strips_runs(ConvProblem.of(x, weight, params, math, aligned=True), target)
