"""Call plans: a conv2d call's checks and choices, made once per call signature.

A signature is everything the checks and choices read: each tensor's shape, strides,
dtype, device and 16-byte alignment, the geometric and keyword arguments, whether
autotuning is on, and the current CUDA device. The first call of a signature validates,
chooses the kernel variant and its config (autotuning, when on) and keeps the plan; a later
call looks it up and only allocates the output and launches, past Triton's dispatch
(`kernels/launch.py`).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import torch

from . import tuning
from .autograd import Conv2dFunction
from .ops import WINDOWS, Launch, plan_forward, resolve_backend
from .params import SUPPORTED_DTYPES, check_conv_args, check_tensor, conv_params
from .problem import ConvProblem, MathMode
from .variants import Choice

MAX_PLANS = 512


@dataclass(frozen=True)
class Conv2dPlan:
    """What a call of one signature runs: `plan(input, weight, bias)` -> output.

    `choice` is the kernel variant and config the Triton backend chose (None for the other
    backends and for an empty batch); `print(plan)` shows it.
    """

    problem: ConvProblem
    backend: str
    choice: Choice | None
    unbatched: bool
    launch: Launch = field(repr=False)  # batched (4-D) tensors in, output out; no autograd

    def __call__(self, input, weight, bias):
        x = input.unsqueeze(0) if self.unbatched else input
        tensors = (x, weight) if bias is None else (x, weight, bias)
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            y = Conv2dFunction.apply(x, weight, bias, self)
        else:  # no graph to record: skip autograd's bookkeeping (microseconds a call)
            y = self.launch(x, weight, bias)
        return y.squeeze(0) if self.unbatched else y

    @property
    def workspace_bytes(self) -> int:
        """Device memory a call takes beyond input, weight and output (staging buffers,
        split-K partial sums, a materialized window tensor)."""
        if self.choice is None:
            return 0
        return _workspace(self.problem, self.choice)

    def __str__(self) -> str:
        """The problem, then what runs it."""
        if self.problem.n == 0:
            runs = "nothing: an empty batch"
        else:
            runs = str(self.choice) if self.choice else f"the {self.backend} backend"
        return f"{self.problem}\n{textwrap.indent(runs, '  ')}"


def _workspace(problem: ConvProblem, choice: Choice) -> int:
    own = choice.variant.workspace_bytes(problem, choice.config)
    subs = choice.variant.sub_problems(problem, choice.config)
    return own + max((_workspace(sub, c) for sub, c in zip(subs, choice.inner, strict=True)),
                     default=0)  # fmt: skip


_PLANS: dict[tuple, Conv2dPlan] = {}


def conv2d_plan(input, weight, bias, stride, padding, dilation, groups, *, precision, backend,
                windows, config) -> Conv2dPlan:  # fmt: skip
    """The kept plan of this call's signature, else a new one (kept unless `config` is set)."""
    key = None if config is not None else signature(
        input, weight, bias, (stride, padding, dilation, groups, precision, backend, windows)
    )  # fmt: skip
    plan = None if key is None else _PLANS.get(key)
    if plan is None:
        plan = make_plan(
            input, weight, bias, stride, padding, dilation, groups,
            precision=precision, backend=backend, windows=windows, config=config,
        )  # fmt: skip
        if key is not None:
            if len(_PLANS) >= MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


def signature(input, weight, bias, arguments: tuple) -> tuple | None:
    """The plan key of a call, or None where arguments are not plainly typed.

    Plain means int, str, None or a tuple of ints, compared with their types: 1.0 and True
    equal 1 but must still fail their checks, so they never share a plan with it.
    """
    tensors = (input, weight) if bias is None else (input, weight, bias)
    if not all(isinstance(t, torch.Tensor) and t.layout == torch.strided for t in tensors):
        return None
    if not all(_plain(a) for a in arguments):
        return None
    return (
        *((t.shape, t.stride(), t.dtype, t.device, t.data_ptr() % 16) for t in tensors),
        len(tensors),
        *((type(a), a) for a in arguments),
        tuning.autotune_enabled(),
        # A relaunched kernel is loaded in the context of the device current at its first
        # launch (Triton launches there), so that device is part of the signature too.
        torch.cuda.current_device() if input.is_cuda else None,
    )


def _plain(value) -> bool:
    if type(value) is tuple:
        return all(type(v) is int for v in value)
    return value is None or type(value) in (int, str)


def make_plan(input, weight, bias, stride, padding, dilation, groups, *, precision, backend,
              windows, config) -> Conv2dPlan:  # fmt: skip
    """Validate a call's arguments and make every choice for their signature."""
    check_tensor("input", input, dims=(3, 4))
    check_tensor("weight", weight, dims=(4,))
    if bias is not None:
        check_tensor("bias", bias, dims=(1,))
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    params = conv_params(stride, padding, dilation, groups, kernel_size=tuple(weight.shape[2:]))
    backend = resolve_backend(backend, x.device)
    dtypes = SUPPORTED_DTYPES + ((torch.float64,) if backend == "reference" else ())
    check_conv_args(x, weight, bias, params, dtypes=dtypes)
    problem = ConvProblem.of(x, weight, params, MathMode.of(x.dtype, precision))
    if windows not in (None, *WINDOWS):
        raise ValueError(f"windows must be one of {WINDOWS} or None, got {windows!r}")
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    if problem.n == 0:  # empty batch: an empty output, as in PyTorch
        fmt = torch.channels_last if problem.channels_last else torch.contiguous_format
        out = dict(size=problem.output_shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        return Conv2dPlan(problem, backend, None, unbatched, lambda *_: torch.empty(**out))
    launch, choice = plan_forward(x, problem, backend, windows=windows, config=config)
    return Conv2dPlan(problem, backend, choice, unbatched, launch)
