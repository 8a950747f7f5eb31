"""The benchmark's baselines: registry and argument checks on CPU; on a GPU, every baseline
either declines with `Unsupported` or matches a float64 reference within its tier's bound."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import im2win
from im2win.baselines import (
    BASELINES,
    TIER_DTYPES,
    Unsupported,
    baseline_names,
    make,
    reference_fp64,
)
from im2win.baselines.cudnn import ALGOS
from im2win.bench.layers import PAPER_LAYERS

TIER_BOUND = {"fp32": 1e-5, "tf32": 2e-3, "fp16": 2e-3, "bf16": 5e-3}
LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


@pytest.fixture(autouse=True)
def restore_backend_flags():
    """The baselines set process-wide cuDNN/cuBLAS flags; leave them as other tests found them."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = [(cudnn, "benchmark", cudnn.benchmark)]
    for half in ("fp16", "bf16"):
        name = f"allow_{half}_reduced_precision_reduction"
        saved.append((matmul, name, getattr(matmul, name)))
    if hasattr(cudnn, "fp32_precision") and hasattr(cudnn, "conv"):
        saved += [(scope, "fp32_precision", scope.fp32_precision)
                  for scope in (cudnn, cudnn.conv, cudnn.rnn)]  # fmt: skip
    else:
        saved.append((cudnn, "allow_tf32", cudnn.allow_tf32))
    matmul_precision = torch.get_float32_matmul_precision()
    yield
    for obj, name, value in saved:
        setattr(obj, name, value)
    torch.set_float32_matmul_precision(matmul_precision)


# ---------------------------------------------------------------------------- CPU: interface


def test_registry_lists_cudnn_algorithms_then_torch_paths():
    # ALGOS' positions are the cudnnConvolutionFwdAlgo_t values passed to cuDNN.
    assert ALGOS == (
        "IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT", "FFT", "FFT_TILING",
        "WINOGRAD", "WINOGRAD_NONFUSED",
    )  # fmt: skip
    torch_paths = ["torch-conv2d", "im2col-cublas", "unfold-matmul", "inductor-triton"]
    assert baseline_names() == [f"cudnn-{algo}" for algo in ALGOS] + torch_paths


@pytest.mark.parametrize("name", baseline_names())
def test_cpu_tensors_are_unsupported(name):
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with pytest.raises(Unsupported, match="needs a CUDA tensor") as info:
        make(name, x, w, None, padding=1, tier="fp32")
    assert name in info.value.reason


@pytest.mark.parametrize("name", ["cudnn-GEMM", "torch-conv2d"])
def test_tier_is_validated(name):
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="tier must be one of"):
        make(name, x, w, tier="fp64")
    with pytest.raises(TypeError, match="tier 'bf16' needs torch.bfloat16"):
        make(name, x, w, tier="bf16")
    # A tier's own dtype passes the checks and reaches the device question.
    for tier in ("tf32", "bf16"):
        with pytest.raises(Unsupported, match="needs a CUDA tensor"):
            make(name, x.to(TIER_DTYPES[tier]), w.to(TIER_DTYPES[tier]), tier=tier)


def test_caller_errors_are_not_unsupported():
    """A wrong call raises ValueError before any device question is asked."""
    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 2, 3, 3)
    with pytest.raises(ValueError, match="weight.shape"):
        make("cudnn-IMPLICIT_GEMM", x, w)
    with pytest.raises(ValueError, match="unknown baseline 'cudnn-FOO'") as info:
        make("cudnn-FOO", x, w)
    assert str(info.value).endswith("known: " + ", ".join(baseline_names()))


def test_import_touches_no_gpu():
    src = os.path.dirname(os.path.dirname(im2win.__file__))
    code = (
        "import torch, im2win.baselines as b\n"
        "assert not torch.cuda.is_initialized()\n"
        "assert b.cudnn._lib.cache_info().currsize == 0\n"
    )
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


def test_reference_fp64_matches_conv2d():
    x, w, b = torch.randn(2, 4, 9, 7), torch.randn(6, 2, 3, 2), torch.randn(6)
    kwargs = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    y = reference_fp64(x, w, b, **kwargs)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, F.conv2d(x.double(), w.double(), b.double(), **kwargs))


# ------------------------------------------------------------------- GPU: accuracy per tier

# (id, input shape, weight shape, conv kwargs, bias): odd and prime sizes, 1x1, groups,
# dilation, asymmetric stride/padding, and two paper layers at batch 32.
CASES = [
    ("odd-s2x1-p1x2", (2, 5, 17, 19), (7, 5, 3, 5), dict(stride=(2, 1), padding=(1, 2)), True),
    ("odd-g3-d2", (3, 6, 13, 11), (9, 2, 3, 3), dict(padding=2, dilation=2, groups=3), False),
    ("odd-1x1", (2, 7, 9, 9), (5, 7, 1, 1), {}, True),
] + [
    (f"{layer.name}-b32", *layer.shapes(32), layer.conv_kwargs(), False)
    for layer in PAPER_LAYERS
    if layer.name in ("conv5", "conv12")
]
_INPUTS: dict = {}


def _inputs(case_id: str, tier: str):
    """Inputs rounded to the tier's dtype and their float64 reference, made once per case."""
    dtype = TIER_DTYPES[tier]
    key = (case_id, dtype)
    if key not in _INPUTS:
        _, xs, ws, kwargs, has_bias = next(c for c in CASES if c[0] == case_id)
        gen = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(xs, device="cuda", generator=gen).to(dtype)
        w = torch.randn(ws, device="cuda", generator=gen).to(dtype)
        b = torch.randn(ws[0], device="cuda", generator=gen).to(dtype) if has_bias else None
        _INPUTS[key] = (x, w, b, kwargs, reference_fp64(x, w, b, **kwargs))
    return _INPUTS[key]


def _check(name, case_id, tier, layout) -> str | None:
    """None if the baseline declined or matched; else what went wrong."""
    x, w, b, kwargs, ref = _inputs(case_id, tier)
    x = x.contiguous(memory_format=LAYOUTS[layout])
    try:
        prepared = make(name, x, w, b, **kwargs, tier=tier)
    except Unsupported as e:
        assert e.reason, f"{name}: Unsupported without a reason"
        return None
    y = prepared.run()
    torch.cuda.synchronize()
    if y.shape != ref.shape:
        return f"{name}: shape {tuple(y.shape)} != {tuple(ref.shape)}"
    if not torch.isfinite(y).all():
        return f"{name}: {(~torch.isfinite(y)).sum().item()} non-finite outputs"
    err = rel_err(y, ref)
    if err > TIER_BOUND[tier]:
        return f"{name}: relative error {err:.3g} > {TIER_BOUND[tier]:.0e} ({prepared.info})"
    if prepared.extra_bytes < 0:
        return f"{name}: negative extra_bytes"
    return "ok"


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tier", TIER_BOUND)
@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_baselines_decline_or_match_fp64(case_id, tier, layout):
    outcomes = {name: _check(name, case_id, tier, layout) for name in BASELINES}
    outcomes.pop("inductor-triton")  # compiled below, on fewer cases
    problems = [o for o in outcomes.values() if o not in (None, "ok")]
    assert not problems, "\n".join(problems)
    assert outcomes["torch-conv2d"] == "ok"
    assert any(outcomes[f"cudnn-{a}"] == "ok" for a in ALGOS), "no cuDNN algorithm ran"


@pytest.mark.gpu
@pytest.mark.parametrize(
    "case_id, tier, layout",
    [
        ("odd-s2x1-p1x2", "fp32", "nchw"),
        ("conv12-b32", "bf16", "nhwc"),
        ("odd-s2x1-p1x2", "tf32", "nhwc"),
    ],
)
def test_inductor_triton_declines_or_matches(case_id, tier, layout):
    outcome = _check("inductor-triton", case_id, tier, layout)
    assert outcome in (None, "ok"), outcome


@pytest.mark.gpu
def test_inductor_declines_dilation():
    x = torch.randn(1, 4, 9, 9, device="cuda")
    w = torch.randn(4, 4, 3, 3, device="cuda")
    with pytest.raises(Unsupported, match="no dilation"):
        make("inductor-triton", x, w, dilation=2)


@pytest.mark.gpu
def test_cudnn_extra_bytes_is_its_workspace():
    x, w, _, kwargs, _ = _inputs("conv5-b32", "fp32")
    prepared = make("cudnn-GEMM", x, w, None, **kwargs, tier="fp32")
    assert prepared.extra_bytes == prepared.info["workspace_bytes"] > 0
    assert prepared.info["measured_extra_bytes"] == 0  # run() allocates only its output
