"""Call plans: a conv2d call's checks and choices, made once per call signature.

A signature is everything the checks and choices read: each tensor's shape, strides,
dtype, device and 16-byte alignment, the geometric and keyword arguments, whether
autotuning is on, the fp32 matmul precision (float32's default math mode follows it) and
the current CUDA device. The first call of a signature validates,
chooses the kernel variant and its config (autotuning, when on) and keeps the plan; a later
call looks it up and only allocates the output and launches, past Triton's dispatch
(`kernels/launch.py`).
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from . import tuning
from .autograd import Conv2dFunction
from .epilogue import NONE, Epilogue, apply, check_tensors, epilogue_of
from .ops import WINDOWS, check_epilogue_backend, plan_forward, resolve_backend
from .params import (
    SUPPORTED_DTYPES,
    ConvParams,
    check_conv_args,
    check_tensor,
    conv_params,
)  # fmt: skip
from .problem import ConvProblem, MathMode
from .variants import Choice, Launch

MAX_PLANS = 512


@dataclass(frozen=True)
class Conv2dPlan:
    """What a call of one signature runs: `plan(input, weight, bias)` -> output.

    `choice` is the kernel variant and config the Triton backend chose (None for the other
    backends and for an empty problem); `print(plan)` shows it.
    """

    problem: ConvProblem
    backend: str
    choice: Choice | None
    unbatched: bool
    launch: Launch = field(repr=False)  # batched (4-D) tensors in, output out
    # Whether `launch` records its own autograd node (`Variant.records_grad`).
    records_grad: bool = field(default=False, repr=False)

    def __call__(self, input, weight, bias):
        if _TRACE is not None:
            _TRACE.append(self)
        x = input.unsqueeze(0) if self.unbatched else input
        if (
            self.records_grad
            or not torch.is_grad_enabled()
            or not (
                x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
            )
        ):  # no graph to record, or the launch records its own: skip a Python autograd node
            y = self.launch(x, weight, bias)
        else:
            y = Conv2dFunction.apply(x, weight, bias, self)
        return y.squeeze(0) if self.unbatched else y

    def fused(self, input, weight, bias, scale, residual):
        """A call of a plan with an epilogue (`conv2d_fused`): `scale` and `residual` as
        `problem.epilogue` asks for them. Records no gradients: calls that need them run
        PyTorch ops instead."""
        if _TRACE is not None:
            _TRACE.append(self)
        if self.unbatched:
            residual = None if residual is None else residual.unsqueeze(0)
            return self.launch(input.unsqueeze(0), weight, bias, scale, residual).squeeze(0)
        return self.launch(input, weight, bias, scale, residual)

    @property
    def uses_im2win(self) -> bool:
        """Whether an im2win kernel runs the call (not PyTorch's own convolution, not the
        plain-PyTorch reference)."""
        return self.choice is not None and self.choice.variant.name != "aten"

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
        elif self.problem.outputs == 0 or self.problem.reduction == 0:
            then = "" if self.problem.epilogue.empty else ", then the epilogue"
            runs = f"nothing to multiply: an output of zeros (plus bias{then})"
        else:
            runs = str(self.choice) if self.choice else f"the {self.backend} backend"
        return f"{self.problem}\n{textwrap.indent(runs, '  ')}"


def _workspace(problem: ConvProblem, choice: Choice) -> int:
    own = choice.variant.workspace_bytes(problem, choice.config)
    subs = choice.variant.sub_problems(problem, choice.config)
    return own + max((_workspace(sub, c) for sub, c in zip(subs, choice.inner, strict=True)),
                     default=0)  # fmt: skip


_PLANS: dict[tuple, Conv2dPlan] = {}
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)  # subclasses may dispatch: not plain
_STRIDED = torch.strided
_TRACE: list[Conv2dPlan] | None = None


@contextlib.contextmanager
def trace() -> Iterator[list[Conv2dPlan]]:
    """`with trace() as plans:` collects the plan of every im2win conv call run inside (eager
    calls, and the operator's calls from compiled graphs; a CUDA-graph replay runs none)."""
    global _TRACE
    outer, _TRACE = _TRACE, []
    try:
        yield _TRACE
    finally:
        _TRACE = outer


def traced(plan: Conv2dPlan) -> None:
    """Note a call of `plan` for `trace()`."""
    if _TRACE is not None:
        _TRACE.append(plan)


def conv2d_plan(input, weight, bias, stride, padding, dilation, groups, *, precision, backend,
                windows, config) -> Conv2dPlan:  # fmt: skip
    """The kept plan of this call's signature, else a new one (kept unless `config` is set).

    The key holds the geometric arguments as passed: a hit skips even their parsing."""
    key = None if config is not None else signature(
        input, weight, bias, (stride, padding, dilation, groups, precision, backend, windows)
    )  # fmt: skip
    plan = None if key is None else _PLANS.get(key)
    if plan is None:
        check_tensor("input", input, dims=(3, 4))
        check_tensor("weight", weight, dims=(4,))
        params = conv_params(stride, padding, dilation, groups,
                             kernel_size=tuple(weight.shape[2:]))  # fmt: skip
        plan = make_plan(input, weight, bias, params, precision=precision, backend=backend,
                         windows=windows, config=config)  # fmt: skip
        _keep(key, plan)
    return plan


def fused_plan(input, weight, bias, scale, residual, stride, padding, dilation, groups, *,
               activation, residual_after_activation, precision, backend, windows,
               config) -> Conv2dPlan:  # fmt: skip
    """`conv2d_plan` for a call with an epilogue (`conv2d_fused`): the key adds the
    activation, where the residual joins, and the scale's and residual's signatures."""
    key = None
    if config is None:
        conv = signature(input, weight, bias, (stride, padding, dilation, groups, precision,
                                               backend, windows))  # fmt: skip
        key = _fused_key(conv, scale, activation, residual, residual_after_activation)
    plan = None if key is None else _PLANS.get(key)
    if plan is None:
        check_tensor("input", input, dims=(3, 4))
        check_tensor("weight", weight, dims=(4,))
        params = conv_params(stride, padding, dilation, groups,
                             kernel_size=tuple(weight.shape[2:]))  # fmt: skip
        plan = _new_fused_plan(
            key, input, weight, bias, scale, residual, params, activation=activation,
            residual_after_activation=residual_after_activation, precision=precision,
            backend=backend, windows=windows, config=config,
        )  # fmt: skip
    return plan


def fused_params_plan(input, weight, bias, scale, residual, params: ConvParams, *, activation,
                      residual_after_activation, precision, backend,
                      windows) -> Conv2dPlan:  # fmt: skip
    """`fused_plan` for geometry already parsed (the fused operator's calls)."""
    conv = signature(input, weight, bias, (params, precision, backend, windows))
    key = _fused_key(conv, scale, activation, residual, residual_after_activation)
    plan = None if key is None else _PLANS.get(key)
    if plan is None:
        plan = _new_fused_plan(
            key, input, weight, bias, scale, residual, params, activation=activation,
            residual_after_activation=residual_after_activation, precision=precision,
            backend=backend, windows=windows, config=None,
        )  # fmt: skip
    return plan


def _new_fused_plan(key, input, weight, bias, scale, residual, params: ConvParams, *,
                    activation, residual_after_activation, precision, backend, windows,
                    config) -> Conv2dPlan:  # fmt: skip
    """A fused call's plan, made and kept under `key` (None: not kept)."""
    epilogue = epilogue_of(scale, activation, residual, residual_after_activation)
    plan = make_plan(input, weight, bias, params, precision=precision, backend=backend,
                     windows=windows, config=config, epilogue=epilogue, scale=scale,
                     residual=residual)  # fmt: skip
    _keep(key, plan)
    return plan


def _fused_key(conv: tuple | None, scale, activation, residual,
               residual_after_activation) -> tuple | None:  # fmt: skip
    """A fused call's plan key: its convolution's signature and its epilogue's."""
    extra = _epilogue_key(scale, activation, residual, residual_after_activation)
    return None if conv is None or extra is None else (conv, extra)


def _epilogue_key(scale, activation, residual, residual_after_activation) -> tuple | None:
    """The epilogue's part of a plan key, or None where an argument is not plainly typed."""
    if not (activation is None or type(activation) is str):
        return None
    if type(residual_after_activation) is not bool:
        return None
    keys = []
    for t in (scale, residual):
        if t is None:
            keys.append(None)
        elif type(t) in _PLAIN_TENSORS and t.layout is _STRIDED:
            keys.append((t.shape, t.stride(), t.dtype, t.device, t.data_ptr() % 16))
        else:
            return None
    return (activation, residual_after_activation, *keys)


def params_plan(input, weight, bias, params: ConvParams, *, precision, backend,
                windows) -> Conv2dPlan:  # fmt: skip
    """`conv2d_plan` for geometry already parsed (the operator's calls)."""
    key = signature(input, weight, bias, (params, precision, backend, windows))
    plan = None if key is None else _PLANS.get(key)
    if plan is None:
        plan = make_plan(input, weight, bias, params, precision=precision, backend=backend,
                         windows=windows, config=None)  # fmt: skip
        _keep(key, plan)
    return plan


def _keep(key: tuple | None, plan: Conv2dPlan) -> None:
    if key is not None:
        if len(_PLANS) >= MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan


def signature(input, weight, bias, arguments: tuple) -> tuple | None:
    """The plan key of a call, or None where arguments are not plainly typed.

    Plain means int, str, None, a tuple of ints or parsed ConvParams: 1.0 and True equal 1
    but must still fail their checks, so they never share a plan with it. float32's default
    math mode follows the matmul precision, so that is read too.
    """
    # Straight-line code, no generators or helper calls: this runs on every call (host time).
    if (type(input) not in _PLAIN_TENSORS or type(weight) not in _PLAIN_TENSORS
            or input.layout is not _STRIDED or weight.layout is not _STRIDED):  # fmt: skip
        return None
    if bias is None:
        bias_key = None
    elif type(bias) in _PLAIN_TENSORS and bias.layout is _STRIDED:
        bias_key = (bias.shape, bias.stride(), bias.dtype, bias.device, bias.data_ptr() % 16)
    else:
        return None
    for argument in arguments:
        kind = type(argument)
        if kind is tuple:
            for value in argument:
                if type(value) is not int:
                    return None
        elif not (argument is None or kind is int or kind is str or kind is ConvParams):
            return None
    return (
        input.shape, input.stride(), input.dtype, input.device, input.data_ptr() % 16,
        weight.shape, weight.stride(), weight.dtype, weight.device, weight.data_ptr() % 16,
        bias_key, arguments,
        tuning.autotune_enabled(),
        torch.get_float32_matmul_precision(),
        # A relaunched kernel is loaded in the context of the device current at its first
        # launch (Triton launches there), so that device is part of the signature too.
        torch._C._cuda_getDevice() if input.is_cuda else None,  # current_device(), unwrapped
    )  # fmt: skip


def make_plan(input, weight, bias, params: ConvParams, *, precision, backend, windows,
              config, epilogue: Epilogue = NONE, scale=None,
              residual=None) -> Conv2dPlan:  # fmt: skip
    """Validate a call's arguments and make every choice for their signature; with an
    `epilogue`, a plan whose launch takes its `scale` and `residual` too
    (`Conv2dPlan.fused`)."""
    check_tensor("input", input, dims=(3, 4))
    check_tensor("weight", weight, dims=(4,))
    if bias is not None:
        check_tensor("bias", bias, dims=(1,))
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    check_epilogue_backend(backend, epilogue)
    requested, backend = backend, resolve_backend(backend, x.device, x.dtype)
    dtypes = SUPPORTED_DTYPES + ((torch.float64,) if backend == "reference" else ())
    check_conv_args(x, weight, bias, params, dtypes=dtypes)
    problem = ConvProblem.of(x, weight, params, MathMode.of(x.dtype, precision), epilogue,
                             biased=bias is not None)  # fmt: skip
    shape = problem.output_shape[1:] if unbatched else problem.output_shape
    check_tensors(epilogue, scale, residual, output_shape=shape, dtype=x.dtype, device=x.device)
    if windows not in (None, *WINDOWS):
        raise ValueError(f"windows must be one of {WINDOWS} or None, got {windows!r}")
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    # PyTorch's output layout: channels_last if the input's or the weight's strides say so.
    fmt = torch.channels_last if problem.output_channels_last else torch.contiguous_format
    if problem.outputs == 0 or problem.reduction == 0:  # nothing to compute, as in PyTorch
        return Conv2dPlan(problem, backend, None, unbatched, _empty_sum(problem, fmt))
    launch, choice = plan_forward(x, problem, backend, windows=windows, config=config,
                                  memory_format=fmt, aten=requested == "auto")  # fmt: skip
    return Conv2dPlan(
        problem,
        backend,
        choice,
        unbatched,
        launch,
        records_grad=choice is not None and choice.variant.records_grad(problem),
    )


def _empty_sum(problem: ConvProblem, fmt: torch.memory_format) -> Launch:
    """An output with no elements, or with no input channels to sum: zeros, plus bias (then
    the epilogue)."""

    def launch(x, weight, bias):
        y = torch.empty(problem.output_shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        return y.fill_(0) if bias is None else y.copy_(bias.view(1, -1, 1, 1).expand_as(y))

    def fused(x, weight, bias, scale, residual):
        y = torch.empty(problem.output_shape, dtype=x.dtype, device=x.device, memory_format=fmt)
        acc = torch.zeros(problem.output_shape, dtype=x.dtype, device=x.device)
        return y.copy_(apply(acc, problem.epilogue, scale=scale, bias=bias, residual=residual))

    return launch if problem.epilogue.empty else fused
