"""Shared test helpers: float64 reference, relative error, the tolerance table."""

from __future__ import annotations

import importlib
import math

import torch

from im2win import kernels
from im2win.baselines import reference_fp64
from im2win.bench.measure import relative_error as rel_err
from im2win.params import conv_params, is_channels_last
from im2win.problem import ConvProblem, MathMode
from im2win.variants import Target, target_of

# The non-gpu tests run on the GPU when there is one, else on CPU through Triton's interpreter.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Relative error ||y - ref|| / ||ref|| allowed against a float64 reference computed from the
# same (already rounded) inputs. bfloat16 is looser than float16 although both round the
# output to 16 bits: the interpreter's bf16 conversion is coarse (truncates), not round-to-nearest.
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}

# GPU precision tiers (tests/test_gpu.py), keyed by math mode: the benchmark's tier bounds
# ('ieee' and 'tf32x3' are both fp32-accurate). On CPU TF32 is not emulated: exact fp32.
GPU_TIER_TOL = {mode.value: mode.max_rel_err for mode in MathMode}

# A Hopper GPU as the heuristics see it (132 SMs: the H100 SXM and the H200).
HOPPER = Target("sm90", sms=132, tma=True)


def tolerance(dtype: torch.dtype, precision: str | None = None, device=DEVICE) -> float:
    if precision == "tf32" and torch.device(device).type == "cuda":
        return GPU_TIER_TOL["tf32"]
    return TOL[dtype]


def randn(*shape, dtype=torch.float32, device=DEVICE, channels_last=False) -> torch.Tensor:
    """Fresh normal samples (never zeros), rounded to `dtype`."""
    t = torch.randn(*shape, device=device).to(dtype)
    return t.to(memory_format=torch.channels_last) if channels_last else t


def reference(x, weight, bias=None, **kwargs) -> torch.Tensor:
    """torch.nn.functional.conv2d in float64 on the (already rounded) inputs."""
    return reference_fp64(x, weight, bias, **kwargs)


def expected_format(x: torch.Tensor) -> torch.memory_format:
    """The im2win tensor's layout for `x`: channels_last only if not also NCHW."""
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format


def torch_output_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """The memory format PyTorch's own conv2d gives an output for tensors strided as these
    (asked of CPU float32 stand-ins, so any dtype and device can be checked)."""

    def stand_in(t):
        return torch.empty_strided(t.shape, t.stride(), dtype=torch.float32).zero_()

    y = torch.nn.functional.conv2d(
        stand_in(x), stand_in(weight), padding=tuple(weight.shape[2:]),
        groups=x.shape[-3] // weight.shape[1],
    )  # fmt: skip
    channels_last = y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def assert_close(y: torch.Tensor, ref: torch.Tensor, bound: float) -> None:
    """All finite (unwritten poisoned elements are NaN), same shape, relative error <= bound."""
    assert torch.isfinite(y).all(), f"{(~torch.isfinite(y)).sum().item()} non-finite outputs"
    assert y.shape == ref.shape
    err = rel_err(y, ref)
    assert err <= bound, f"relative error {err:.3g} > {bound:.3g}"


def current_target() -> Target:
    """The target this session's kernels run on: the GPU, or the interpreter."""
    return target_of(torch.device(DEVICE), kernels.interpreted())


def problem_of(xshape, wshape, dtype=torch.float32, precision=None, channels_last=False,
               **conv_kwargs) -> ConvProblem:  # fmt: skip
    """The ConvProblem of a call on tensors of these shapes (no data: meta tensors)."""
    x = torch.empty(xshape, dtype=dtype, device="meta")
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = torch.empty(wshape, dtype=dtype, device="meta")
    params = conv_params(**conv_kwargs, kernel_size=tuple(wshape[2:]))
    return ConvProblem.of(x, w, params, MathMode.of(dtype, precision))


def stage_everything(monkeypatch, chunk_bytes: int) -> None:
    """Make the staging rule take every NCHW input with Cg >= 16, `chunk_bytes` a chunk."""
    rule = current_target().table["staged-nchw"]
    for key, value in dict(chunk_bytes=chunk_bytes, min_batch=1, min_flop_per_byte=1,
                           max_widening=100).items():  # fmt: skip
        monkeypatch.setitem(rule, key, value)


class CountingKernel:
    """A kernel stand-in that counts Triton dispatches (`kernel[grid]`)."""

    def __init__(self, kernel):
        self.kernel, self.dispatches = kernel, 0

    def __getitem__(self, grid):
        self.dispatches += 1
        return self.kernel[grid]

    @property
    def fn(self):  # what `launch` unwraps towards the JITFunction, as through @heuristics
        return self.kernel

    def __getattr__(self, name):
        return getattr(self.kernel, name)


def poison_split_workspace(monkeypatch) -> list:
    """Make split_k.workspace hand out NaN-filled buffers; returns the list of its calls."""
    module = importlib.import_module("im2win.kernels.split_k")
    fresh, seen = module.workspace, []
    monkeypatch.setattr(module, "workspace", lambda *a: seen.append(a) or fresh(*a).fill_(math.nan))
    return seen


def split_sum_output(layout: str) -> torch.Tensor:
    """A NaN-filled fp16 output [2, 6, 3, 5] for split-K's sum: 'nchw', 'channels_last', or
    'strided' (neither layout)."""
    if layout == "strided":
        y = torch.full((2, 5, 6, 3), math.nan, dtype=torch.float16, device=DEVICE)
        return y.permute(0, 2, 3, 1)
    y = torch.full((2, 6, 3, 5), math.nan, dtype=torch.float16, device=DEVICE)
    return y.to(memory_format=torch.channels_last) if layout == "channels_last" else y
