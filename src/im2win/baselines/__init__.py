"""The convolutions im2win is measured against, behind one interface.

Each baseline is a factory
    make(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, tier="fp32")
        -> Prepared(name, run, extra_bytes, info)
that does all setup (descriptors, algorithm choice, workspace, compilation, one trial run)
and returns `run()`, which does only the convolution. It raises `Unsupported` when the
method cannot serve that shape, tier or layout (the input's memory format: NCHW or
channels_last). Tiers: 'fp32' (IEEE-fp32-accurate), 'tf32', 'fp16', 'bf16'.

Nothing touches the GPU at import; cuDNN is loaded by the first cuDNN `make`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from . import cudnn, inductor, torch_paths
from .common import TIER_DTYPES, Prepared, Unsupported, reference_fp64

Factory = Callable[..., Prepared]

BASELINES: dict[str, Factory] = {
    **{f"cudnn-{algo}": functools.partial(cudnn.make, algo=algo) for algo in cudnn.ALGOS},
    "torch-conv2d": torch_paths.make_torch_conv2d,
    "im2col-cublas": torch_paths.make_im2col_cublas,
    "unfold-matmul": torch_paths.make_unfold_matmul,
    "inductor-triton": inductor.make,
}


def baseline_names() -> list[str]:
    """Every baseline's method name, cuDNN algorithms first (in cuDNN's enum order)."""
    return list(BASELINES)


def make(name: str, *args, **kwargs) -> Prepared:
    """`BASELINES[name](*args, **kwargs)`, with a clear error for an unknown name."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name](*args, **kwargs)


__all__ = [
    "BASELINES",
    "TIER_DTYPES",
    "Prepared",
    "Unsupported",
    "baseline_names",
    "make",
    "reference_fp64",
]
