"""`inductor-triton`: torch.compile's max-autotune with only its Triton conv template allowed.

Inductor's conv lowering offers ATen (cuDNN) and a Triton template as candidates; limiting
the conv and GEMM backends to TRITON leaves the template alone (1x1 convs may lower to a
Triton matmul). The generated code is checked so that a silent fallback is reported.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from unittest import mock

import torch
import torch.nn.functional as F

from .common import Prepared, Unsupported, check_inputs, set_tier_flags, weight_like_input

_fresh = itertools.count()


def _conv(x, w, b, stride, padding, dilation, groups):
    return F.conv2d(x, w, b, stride, padding, dilation, groups)


def _fresh_function():
    """A copy of `_conv` with its own code object.

    Dynamo keeps compiled entries on the code object, at most a few per code object before it
    gives up and runs eagerly; a fresh one per `make` keeps every shape and tier compiled.
    """
    code = _conv.__code__.replace(co_name=f"_inductor_conv_{next(_fresh)}")
    return type(_conv)(code, _conv.__globals__, code.co_name)


def _options() -> dict:
    """mode='max-autotune' minus CUDA graphs, Triton-only backends, no fallback to ATen.

    CUDA graphs are left out: they would reuse one output buffer across calls and add a
    graph pool to the memory, and a conv of this size gains nothing from them.
    """
    import torch._inductor.config as inductor_config

    wanted = {
        "max_autotune": True,
        "coordinate_descent_tuning": True,
        "triton.cudagraphs": False,
        "max_autotune_gemm_backends": "TRITON",
        "max_autotune_conv_backends": "TRITON",
        "autotune_fallback_to_aten": False,
        "layout_optimization": False,  # keep NCHW as NCHW instead of copying to channels_last
        "fx_graph_cache": False,  # compile here, so the generated code can be inspected
    }
    known = inductor_config.get_config_copy()
    return {key: value for key, value in wanted.items() if key in known}


@contextlib.contextmanager
def _capture_output_code(sink: list[str]):
    """Collect the Python wrapper inductor generates (what run_and_get_code does, minus its
    torch._dynamo.reset(), which would drop every other compiled baseline)."""
    from torch._inductor.graph import GraphLowering

    patches = [mock.patch.object(GraphLowering, "save_output_code", sink.append)]
    try:
        import torch._functorch.config as functorch_config

        if hasattr(functorch_config, "enable_autograd_cache"):
            # A cache hit would skip inductor and so the code capture.
            patches.append(mock.patch.object(functorch_config, "enable_autograd_cache", False))
    except ImportError:
        pass
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield


# A wrapper line that calls cuDNN/cuBLAS (an extern kernel) or ATen's convolution.
_FALLBACK_CALL = re.compile(r"(extern_kernels\.\w+|aten\._?convolution(\.default)?)\(")


def _is_fallback(line: str) -> bool:
    line = line.strip()
    return not line.startswith("#") and _FALLBACK_CALL.search(line) is not None


def make(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    tier: str = "fp32",
) -> Prepared:
    """Compile (and autotune) in make; `run()` calls the compiled function."""
    name = "inductor-triton"
    spec = check_inputs(name, x, weight, bias, stride, padding, dilation, groups, tier)
    if spec.params.dilation != (1, 1):
        raise Unsupported(f"{name}: inductor's conv template has no dilation")
    pads = spec.symmetric_padding
    if pads is None:
        raise Unsupported(f"{name}: the conv template pads symmetrically")
    w = weight_like_input(weight, spec)  # else the compiled graph would re-lay it every call
    args = (x, w, bias, spec.params.stride, pads, (1, 1), groups)
    # Inductor reads the TF32 flag at compile time (template constexpr ALLOW_TF32).
    set_tier_flags(tier)
    compiled = torch.compile(_fresh_function(), dynamic=False, fullgraph=True, options=_options())
    codes: list[str] = []
    try:
        with _capture_output_code(codes):
            compiled(*args)
        torch.cuda.synchronize(x.device)
    except Exception as e:  # inductor wraps NoValidChoicesError and friends differently per version
        lines = str(e).strip().splitlines() or [""]
        raise Unsupported(f"{name}: compile failed: {type(e).__name__}: {lines[0]}") from None
    code = "\n".join(codes)
    if not code:
        raise Unsupported(f"{name}: could not capture inductor's code to check for a fallback")
    fallbacks = sorted({line.strip() for line in code.splitlines() if _is_fallback(line)})
    if fallbacks:
        raise Unsupported(f"{name}: inductor fell back to a non-Triton kernel: {fallbacks[0]}")

    def run() -> torch.Tensor:
        set_tier_flags(tier)  # keep the global state dynamo may guard on as it was compiled
        return compiled(*args)

    info = {
        "extra_bytes_source": "analytic (the template needs no workspace)",
        "triton_kernels": code.count("@triton.jit"),
    }
    return Prepared(name, run, 0, info)
