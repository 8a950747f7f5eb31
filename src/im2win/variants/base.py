"""What a kernel variant is, the machine it is chosen for, and the choice it makes.

A `Variant` serves some `ConvProblem`s (`supports`; `takes_epilogue` for their fused
epilogue) on a `Target`, proposes the config it expects to win (`heuristic`, or None where
it does not expect to) and the configs autotuning may time (`candidates`), and builds the
call that runs a config (`build`). The selection routine (`variants/__init__.py`) walks the
registry in priority order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from .. import tuning
from ..epilogue import Epilogue
from ..kernels.sizes import next_power_of_2
from ..problem import ConvProblem

# into(x, weight, bias, y, scale=None, residual=None): fills y [N, K, P, Q] (any strides) and
# returns it; scale and residual as the problem's epilogue (`problem.epilogue`) asks for them.
Into = Callable[..., torch.Tensor]
# launch(x, weight, bias) -> a new output; with an epilogue, launch(x, weight, bias, scale,
# residual).
Launch = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Target:
    """What the choices read of the machine: its tuning table's architecture, its SM count,
    whether it has Hopper's tensor-memory accelerator, and whether kernels run in Triton's
    interpreter (on the CPU)."""

    arch: str
    sms: int
    tma: bool
    interpreted: bool = False
    device: torch.device | None = None  # where autotuning times its candidates

    @property
    def table(self) -> dict:
        return tuning.table(self.arch)


INTERPRETER = Target("interpreter", sms=1, tma=True, interpreted=True,
                     device=torch.device("cpu"))  # fmt: skip


@functools.cache
def target_of(device: torch.device, interpreted: bool) -> Target:
    """The target of a CUDA device, or the interpreter's."""
    if interpreted:
        return INTERPRETER
    major, minor = torch.cuda.get_device_capability(device)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return Target(f"sm{major}{minor}", sms=sms, tma=major >= 9, device=device)


# The order `Choice` shows config keys in; others follow.
SHOWN = ("LOOP", "BLOCK_M", "BLOCK_Q", "BLOCK_N", "BLOCK_K", "BLOCK_G", "BLOCK_CG", "BLOCK_KG",
         "BLOCK_C", "num_warps", "num_stages", "SPLIT_K", "IMAGES")  # fmt: skip


@dataclass(frozen=True)
class Choice:
    """A variant and the config it runs, with the choices of its sub-problems (a staged
    input's chunks) and how it was made: 'heuristic', 'autotuned' or 'pinned'."""

    variant: Variant
    config: Mapping = field(default_factory=dict)
    inner: tuple[Choice, ...] = ()
    how: str = "heuristic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))

    def __str__(self) -> str:
        keys = sorted(self.config, key=lambda k: SHOWN.index(k) if k in SHOWN else len(SHOWN))
        settings = " ".join(f"{key}={self.config[key]}" for key in keys)
        text = f"{self.variant.name} ({self.how}) {settings}".rstrip()
        return "\n".join([text, *(f"  {line}" for c in self.inner for line in str(c).splitlines())])


class Variant:
    """One way to run a convolution. Subclasses override what differs from these defaults."""

    name: str = ""
    # The im2win window source the variant reads ('streamed' from the input, 'materialized'
    # im2win tensor), which `conv2d(windows=...)` can ask for; None if it reads no windows.
    windows: str | None = None

    def supports(self, problem: ConvProblem, target: Target) -> bool:
        raise NotImplementedError

    def takes_epilogue(self, epilogue: Epilogue) -> bool:
        """Whether the variant runs `epilogue` (scale, activation, residual: `epilogue.py`)
        on its accumulator; by default none but the plain convolution's."""
        return epilogue.empty

    def unsupported(self, problem: ConvProblem, target: Target, windows: str | None) -> str:
        """Why a pinned config of this variant cannot run `problem`, or not from `windows`."""
        reads = f" (it reads {self.windows} windows, windows={windows!r} was asked)" if (
            windows not in (None, self.windows)) else ""  # fmt: skip
        return f"config: variant {self.name!r} cannot serve a {problem}{reads}"

    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        """The config this variant expects to win with, or None where it expects to lose."""
        return None

    def candidates(self, problem: ConvProblem, target: Target) -> list[dict]:
        """The configs autotuning may time: by default the heuristic's, where it has one."""
        config = self.heuristic(problem, target)
        return [] if config is None else [config]

    def check_config(self, config: dict) -> dict:
        """A user-pinned config, validated (ValueError naming the bad key)."""
        return dict(config)

    def finalize(self, problem: ConvProblem, config: dict, target: Target) -> dict:
        """The config with what follows from the problem filled in (split-K, tile widths)."""
        return dict(config)

    def sub_problems(self, problem: ConvProblem, config: Mapping) -> tuple[ConvProblem, ...]:
        """Problems this variant hands on to others (each gets a choice of its own)."""
        return ()

    def workspace_bytes(self, problem: ConvProblem, config: Mapping) -> int:
        """Device memory a call takes beyond input, weight and output."""
        return 0

    def build(self, problem: ConvProblem, choice: Choice, target: Target) -> Into:
        """The call that runs `choice` on tensors of `problem`'s signature."""
        raise NotImplementedError

    def records_grad(self, problem: ConvProblem) -> bool:
        """Whether `launch` records PyTorch's own autograd node, so the plan need not wrap it
        in `Conv2dFunction` (the im2win kernels record none)."""
        return False

    def launch(self, problem: ConvProblem, choice: Choice, target: Target, out: dict) -> Launch:
        """`build`'s call on a new output, `torch.empty(**out)`."""
        into = self.build(problem, choice, target)
        return lambda x, weight, bias, *epilogue: into(x, weight, bias, torch.empty(**out),
                                                       *epilogue)  # fmt: skip

    def __repr__(self) -> str:
        return f"<variant {self.name}>"


TILE_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages")
MINIMUM = {"num_warps": 1, "BLOCK_G": 1, "BLOCK_Q": 1}  # other BLOCK_* at least 16


def check_tiles(config: dict, required: tuple[str, ...], optional: tuple[str, ...]) -> dict:
    """Validate a pinned config's keys, its tile sizes (powers of two: BLOCK_* at least 16, as
    `tl.dot` needs, unless MINIMUM says otherwise), num_stages (an int >= 1) and SPLIT_K."""
    keys = set(config) - set(optional) - {"VARIANT"}
    if keys != set(required):
        raise ValueError(
            f"config must have the keys {required} (optionally {optional}), got {sorted(config)}"
        )
    for key in required:
        value, low = config[key], MINIMUM.get(key, 16)
        if key == "num_stages":
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"config['num_stages'] must be an int >= 1, got {value!r}")
        elif not isinstance(value, int) or value < low or value & (value - 1):
            raise ValueError(f"config[{key!r}] must be a power of two >= {low}, got {value!r}")
    if "SPLIT_K" in config:
        value = config["SPLIT_K"]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
            raise ValueError(f"config['SPLIT_K'] must be an int from 1 to 64, got {value!r}")
    return {key: value for key, value in config.items() if key != "VARIANT"}


def clamp_pow2(value: int, low: int, high: int) -> int:
    """`value` rounded up to a power of two, within [low, high]."""
    return max(low, min(high, next_power_of_2(value)))


# The conditions a tuning-table entry may set (`entry_matches`); its other keys are its
# config (upper case, and num_warps, num_stages).
ENTRY_CONDITIONS = ("class", "min_kg", "max_kg", "max_c", "max_p", "max_q", "max_taps", "strided")


def entry_matches(entry: Mapping, problem: ConvProblem) -> bool:
    """Whether a tuning-table entry's conditions hold for `problem`: its tile class
    ("class"), KG bounds ("min_kg", "max_kg"), input channels ("max_c"), output size bounds
    ("max_p", "max_q"), filter taps ("max_taps") and whether it is strided ("strided"); a
    condition the entry leaves out holds."""
    tile_class, kg = problem.math.tile_class, problem.kg
    return (
        entry.get("class", tile_class) == tile_class
        and entry.get("min_kg", 0) <= kg <= entry.get("max_kg", kg)
        and problem.c <= entry.get("max_c", problem.c)
        and problem.p <= entry.get("max_p", problem.p)
        and problem.q <= entry.get("max_q", problem.q)
        and problem.taps <= entry.get("max_taps", problem.taps)
        and entry.get("strided", problem.strided) == problem.strided
    )  # fmt: skip
