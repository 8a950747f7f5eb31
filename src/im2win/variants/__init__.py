"""The kernel variants in priority order, and the one routine that chooses among them.

The heuristic takes the first variant that supports the problem and expects to win
(`Variant.heuristic`); autotuning times every candidate of every variant that supports it.
A new variant is one module and one line in `VARIANTS`.
"""

from __future__ import annotations

import torch

from .. import tuning
from ..epilogue import Epilogue
from ..kernels import tma_block_k
from ..kernels.sizes import next_power_of_2
from ..problem import ConvProblem
from .aten import ATEN
from .base import INTERPRETER, Choice, Into, Launch, Target, Variant, target_of
from .depthwise import DEPTHWISE
from .grouped import PACKED_GROUPS
from .pointer import LOOPS, POINTER, POINTER_MATERIALIZED
from .pointer_wide import POINTER_WIDE
from .staged import STAGED_NCHW
from .strips import STRIPS
from .tma import TMA_RASTER, TMA_WINDOW
from .winograd import WINOGRAD

VARIANTS: tuple[Variant, ...] = (
    WINOGRAD,  # fp32-accurate deep 3x3 unit-stride layers: its rule is where it beat cuDNN
    ATEN,  # PyTorch's own convolution, where no im2win kernel is expected to win
    PACKED_GROUPS,  # groups of <= 16 channels, several to a tensor-core tile
    STAGED_NCHW,  # NCHW inputs worth a channels-last copy, a chunk of images at a time
    DEPTHWISE,  # no channel reduction: direct FMA
    STRIPS,  # Hopper, channels-last: taps share input rows in shared memory
    POINTER_WIDE,  # TF32 wide-channel layers where the TMA tiles would waste a fifth
    TMA_RASTER,  # unpadded channels-last layers: runs of the input grid
    TMA_WINDOW,  # channels-last layers: output patches, each tap one TMA box
    POINTER,  # every problem
    POINTER_MATERIALIZED,  # the paper's scheme, only on request: windows='materialized'
)
BY_NAME = {variant.name: variant for variant in VARIANTS}
# A pinned config names its variant with VARIANT, or through LOOP as before variants had names.
BY_LOOP = {"flat": POINTER, "channels": POINTER, "tma": TMA_WINDOW, "tma_raster": TMA_RASTER}


def choose(
    problem: ConvProblem,
    target: Target,
    *,
    windows: str | None = None,
    config: dict | None = None,
    autotune: bool = False,
    aten: bool = False,
) -> Choice:
    """The variant and config to run `problem` on `target`: `config` pinned by the caller, or
    the heuristic's pick, or (`autotune`) the fastest candidate, measured once per shape
    class and cached on disk. `windows` restricts the choice to variants reading im2win
    windows from that source; `aten` lets PyTorch's own convolution compete. Only variants
    that take the problem's epilogue are considered."""
    if config is not None:
        variant = pinned_variant(config, windows)
        check_takes_epilogue(variant, problem.epilogue)
        config = variant.check_config(config)
        if not variant.supports(problem, target) or windows not in (None, variant.windows):
            raise ValueError(variant.unsupported(problem, target, windows))
        return _complete(variant, config, problem, target, "pinned", autotune)
    eligible = [
        v for v in VARIANTS
        if (aten or v is not ATEN) and _reads(v, windows)
        and v.takes_epilogue(problem.epilogue) and v.supports(problem, target)
    ]  # fmt: skip
    if autotune:
        variant, config = _autotuned(problem, target, eligible)
        return _complete(variant, config, problem, target, "autotuned", autotune)
    for variant in eligible:
        config = variant.heuristic(problem, target)
        if config is not None:
            return _complete(variant, config, problem, target, "heuristic", autotune)
    raise AssertionError(f"no variant chose a config for {problem}")  # the pointer always does


def check_takes_epilogue(variant: Variant, epilogue: Epilogue) -> None:
    """Raise ValueError where a pinned `variant` cannot run `epilogue`."""
    if not variant.takes_epilogue(epilogue):
        takers = tuple(v.name for v in VARIANTS if v.takes_epilogue(epilogue))
        raise ValueError(
            f"config: variant {variant.name!r} cannot run the epilogue '{epilogue}'; the "
            f"variants that can: {takers}"
        )


def _reads(variant: Variant, windows: str | None) -> bool:
    """Whether `variant` may serve a call asking for `windows`; the library's own choice
    (None) never materializes the im2win tensor: that costs memory the others do not."""
    return variant.windows == windows if windows else variant.windows != "materialized"


def pinned_variant(config: dict, windows: str | None) -> Variant:
    """The variant a pinned config names: VARIANT, else by LOOP (the pointer kernel, over
    materialized windows when those are asked for, unless LOOP names a TMA loop)."""
    if "VARIANT" in config:
        if config["VARIANT"] not in BY_NAME:
            raise ValueError(
                f"config['VARIANT'] must be one of {tuple(BY_NAME)}, got {config['VARIANT']!r}"
            )
        return BY_NAME[config["VARIANT"]]
    loop = config.get("LOOP", "flat")
    if loop not in BY_LOOP:
        raise ValueError(f"config['LOOP'] must be one of {tuple(BY_LOOP)}, got {loop!r}")
    if windows == "materialized" and loop in LOOPS:
        return POINTER_MATERIALIZED
    return BY_LOOP[loop]


def _complete(variant: Variant, config: dict, problem: ConvProblem, target: Target, how: str,
              autotune: bool) -> Choice:  # fmt: skip
    config = variant.finalize(problem, config, target)
    inner = tuple(choose(sub, target, autotune=autotune)
                  for sub in variant.sub_problems(problem, config))  # fmt: skip
    return Choice(variant, config, inner, how)


def _autotuned(problem: ConvProblem, target: Target, eligible: list[Variant]):
    """The fastest candidate of the eligible variants, timed on fresh tensors of the
    problem's shapes, strides and dtype, and kept in the tuning cache."""
    candidates = [dict(c, VARIANT=v.name) for v in eligible for c in v.candidates(problem, target)]
    x, weight, bias = example_tensors(problem, target.device)
    extra = epilogue_tensors(problem, target.device)  # (scale, residual) of an epilogue
    fmt = torch.channels_last if problem.output_channels_last else torch.contiguous_format
    out = dict(size=problem.output_shape, dtype=problem.dtype, device=target.device,
               memory_format=fmt)  # fmt: skip

    def measure(config: dict) -> float:
        tiles = dict(config)
        variant = BY_NAME[tiles.pop("VARIANT")]
        choice = _complete(variant, tiles, problem, target, "autotuned", autotune=True)
        launch = variant.launch(problem, choice, target, out)
        return tuning.median_ms(lambda: launch(x, weight, bias, *extra))

    best = tuning.tuned_config(tuning_key(problem, eligible, target), candidates, measure)
    return BY_NAME[best.pop("VARIANT")], best


def example_tensors(problem: ConvProblem, device: torch.device):
    """Input (laid out with the problem's strides), weight and bias to time candidates on."""
    shape, strides = problem.input_shape, problem.x_strides
    span = 1 + sum((size - 1) * stride for size, stride in zip(shape, strides, strict=True))
    x = torch.randn(span, dtype=problem.dtype, device=device).as_strided(shape, strides)
    weight = torch.randn(problem.weight_shape, dtype=problem.dtype, device=device)
    return x, weight, torch.randn(problem.k, dtype=problem.dtype, device=device)


def epilogue_tensors(problem: ConvProblem, device: torch.device) -> tuple:
    """(scale, residual) to time candidates of a problem with an epilogue on (a dense
    residual in the output's layout); () for a plain convolution."""
    epilogue = problem.epilogue
    if epilogue.empty:
        return ()
    scale = torch.randn(problem.k, dtype=problem.dtype, device=device) if epilogue.scaled else None
    fmt = torch.channels_last if problem.output_channels_last else torch.contiguous_format
    residual = torch.randn(problem.output_shape, dtype=problem.dtype, device=device).to(
        memory_format=fmt
    ) if epilogue.residual else None  # fmt: skip
    return scale, residual


def tuning_key(problem: ConvProblem, eligible: list[Variant], target: Target) -> str:
    """A few shape classes, not every shape: sizes rounded up to powers of two, with what the
    eligible variants' choices read (the epilogue, where there is one), on this GPU and
    Triton version."""
    sizes = (problem.pixels, problem.cg, problem.kg, problem.reduction)
    fields = (
        *(next_power_of_2(v) for v in sizes), problem.math.value, problem.layout,
        problem.padded, problem.strided, tma_block_k(problem.cg, problem.itemsize),
        "+".join(v.name for v in eligible), tuning.device_key(target.device),
    )  # fmt: skip
    if not problem.epilogue.empty:
        fields += (f"epilogue {problem.epilogue}",)
    return "|".join(str(field) for field in fields)


__all__ = [
    "BY_NAME",
    "INTERPRETER",
    "VARIANTS",
    "Choice",
    "Into",
    "Launch",
    "Target",
    "Variant",
    "choose",
    "target_of",
]
