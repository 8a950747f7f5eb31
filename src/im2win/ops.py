"""Forward ops on validated arguments, by backend. No autograd here.

Backends:
  "triton"    the im2win Triton kernels (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1),
              one variant chosen per call signature (`variants/`)
  "reference" the plain-PyTorch definition in `reference.py` (any device; fp32 accumulation),
              a fused epilogue in PyTorch ops after it
  "paper"     the paper's CUDA kernel (`im2win.paper`): fp32 IEEE, groups 1, CUDA only, no
              epilogue
  "auto"      "triton" where it can run, with PyTorch's own convolution among its choices
              (`variants/aten.py`), else "reference"; float64 always "reference"
"""

from __future__ import annotations

import functools

import torch

from . import kernels, paper, tuning
from .epilogue import Epilogue, apply
from .params import ConvParams
from .problem import ConvProblem, MathMode
from .reference import conv2d_reference, transform_reference
from .variants import Choice, Launch, choose, target_of

BACKENDS = ("auto", "triton", "reference", "paper")
WINDOWS = ("materialized", "streamed")


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    triton_ok = device.type == "cuda" or (device.type == "cpu" and kernels.interpreted())
    if backend == "auto":
        return "triton" if triton_ok and dtype != torch.float64 else "reference"
    if backend == "triton" and not triton_ok:
        raise ValueError(
            f"backend='triton' needs a CUDA tensor, or TRITON_INTERPRET=1 set before import "
            f"for CPU tensors; got a tensor on {device}"
        )
    if backend == "paper" and device.type != "cuda":
        raise ValueError(f"backend='paper' is CUDA C++: needs a CUDA tensor, got one on {device}")
    return backend


def window_transform(x, r: int, params: ConvParams, channels_last: bool, backend: str):
    """The im2win tensor of a 4-D input: [N, C, P, Wp*R] or [N, P, Wp, R, C]."""
    if backend == "reference":
        return transform_reference(x, r, params, channels_last)
    return kernels.im2win_transform(x, r, params, channels_last, kernels.interpreted())


def plan_forward(
    x: torch.Tensor, problem: ConvProblem, backend: str, *, windows: str | None,
    config: dict | None, memory_format: torch.memory_format, aten: bool = False,
) -> tuple[Launch, Choice | None]:  # fmt: skip
    """Every choice for tensors of `problem`'s signature, made once (autotuning included):
    the returned launch only allocates the output (in `memory_format`: every kernel writes
    any strides) and runs the kernels; with the Triton backend, the choice it runs (`aten`:
    PyTorch's own convolution may be it, and gives PyTorch's format itself)."""
    params = problem.params
    if backend == "reference":
        if not problem.epilogue.empty:
            return functools.partial(_fused_reference_forward, params=params,
                                     epilogue=problem.epilogue,
                                     memory_format=memory_format), None  # fmt: skip
        return functools.partial(_reference_forward, params=params,
                                 memory_format=memory_format), None  # fmt: skip
    out = dict(size=problem.output_shape, dtype=problem.dtype, device=x.device,
               memory_format=memory_format)  # fmt: skip
    if backend == "paper":
        check_paper_args(problem)
        return lambda x, weight, bias: paper.paper_forward(
            x, weight, bias, params, torch.empty(**out)
        ), None  # fmt: skip
    target = target_of(x.device, kernels.interpreted())
    autotune = tuning.autotune_enabled() and x.is_cuda
    choice = choose(problem, target, windows=windows, config=config, autotune=autotune,
                    aten=aten)  # fmt: skip
    return choice.variant.launch(problem, choice, target, out), choice


def _reference_forward(x, weight, bias, *, params: ConvParams, memory_format):
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    up = [t if t is None else t.to(compute) for t in (x, weight, bias)]
    y = conv2d_reference(*up, params).to(x.dtype)
    return y.contiguous(memory_format=memory_format)


def _fused_reference_forward(x, weight, bias, scale, residual, *, params: ConvParams,
                             epilogue: Epilogue, memory_format):  # fmt: skip
    """The reference convolution (fp32 accumulation for 16-bit), then the epilogue on it."""
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    acc = conv2d_reference(x.to(compute), weight.to(compute), None, params)
    y = apply(acc, epilogue, scale=scale, bias=bias, residual=residual, dtype=x.dtype)
    return y.contiguous(memory_format=memory_format)


def check_epilogue_backend(backend: str, epilogue: Epilogue) -> None:
    """The paper's kernel has no epilogue; every other backend runs one. `backend` as asked
    for, or resolved: 'paper' is the same either way."""
    if backend == "paper" and not epilogue.empty:
        raise ValueError(
            f"backend='paper' runs the paper's kernel alone: it takes no epilogue, got "
            f"'{epilogue}' (use backend 'auto', 'triton' or 'reference')"
        )


def check_paper_args(problem: ConvProblem) -> None:
    """The paper's scheme (the NCHW im2win tensor, then its kernel) is fp32 FFMA, groups 1."""
    if problem.math is not MathMode.IEEE:
        raise ValueError(
            f"backend='paper' is the paper's fp32 FFMA kernel: needs float32 and precision "
            f"'ieee' (or None), got {problem.dtype} and {problem.math.precision!r}"
        )
    if problem.groups != 1:
        raise ValueError(f"backend='paper' supports groups=1 only, got groups={problem.groups}")
