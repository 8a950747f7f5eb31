"""Shared test helpers: float64 reference, relative error, the tolerance table."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The non-gpu tests run on the GPU when there is one, else on CPU through Triton's interpreter.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Relative error ||y - ref|| / ||ref|| allowed against a float64 reference computed from the
# same (already rounded) inputs. bfloat16 is looser than float16 although both round the
# output to 16 bits: the interpreter's bf16 conversion is coarse (truncates), not round-to-nearest.
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}

# GPU precision tiers (tests/test_gpu.py); on CPU TF32 is not emulated, so 'tf32' is exact fp32.
GPU_TIER_TOL = {"ieee": 1e-5, "tf32x3": 1e-5, "tf32": 2e-3, "fp16": 2e-3, "bf16": 5e-3}


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
    bias = None if bias is None else bias.double()
    return F.conv2d(x.double(), weight.double(), bias, **kwargs)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return ((y.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def expected_format(x: torch.Tensor) -> torch.memory_format:
    """The output's memory format by the contract: channels_last only if not also NCHW."""
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def assert_close(y: torch.Tensor, ref: torch.Tensor, bound: float) -> None:
    """All finite (unwritten poisoned elements are NaN), same shape, relative error <= bound."""
    assert torch.isfinite(y).all(), f"{(~torch.isfinite(y)).sum().item()} non-finite outputs"
    assert y.shape == ref.shape
    err = rel_err(y, ref)
    assert err <= bound, f"relative error {err:.3g} > {bound:.3g}"
