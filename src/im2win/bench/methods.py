"""The convolution methods a benchmark compares, in one small registry.

A method turns (input, weight, conv kwargs, tier) into a zero-argument callable that
returns the output, so the harness times, measures and checks every method the same way.
To add one (cuDNN's legacy algorithms, im2col + cuBLAS, direct, the paper's kernel):
write its builder and `register` it with the tiers it can serve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import im2win
from im2win import kernels
from im2win.ops import resolve_backend

from .tiers import Tier

Runner = Callable[[], torch.Tensor]
Builder = Callable[[torch.Tensor, torch.Tensor, dict, Tier], Runner]


@dataclass(frozen=True)
class Method:
    name: str
    tiers: tuple[str, ...]  # the tiers this method can serve
    build: Builder
    backend: Callable[[torch.device], str]  # what actually runs, for the result row
    default: bool = True  # measured unless --methods names others


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def _im2win_backend(device: torch.device) -> str:
    backend = resolve_backend("auto", device)
    if backend == "triton" and device.type == "cpu" and kernels.interpreted():
        return "triton-interpreter"
    return backend


def _im2win_builder(precision_by_tier: dict[str, str | None], windows: str | None = None):
    def build(x: torch.Tensor, w: torch.Tensor, conv_kwargs: dict, tier: Tier) -> Runner:
        options = dict(precision=precision_by_tier[tier.name], windows=windows)
        return lambda: im2win.conv2d(x, w, None, **conv_kwargs, **options)

    return build


@contextmanager
def cudnn_settings(*, benchmark: bool, allow_tf32: bool) -> Iterator[None]:
    """Set cuDNN's global flags for one call and put the caller's back afterwards."""
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.allow_tf32
    cudnn.benchmark, cudnn.allow_tf32 = benchmark, allow_tf32
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32 = saved


def _torch_conv2d(x: torch.Tensor, w: torch.Tensor, conv_kwargs: dict, tier: Tier) -> Runner:
    # allow_tf32 defaults to True: left alone, the fp32 tier would silently time TF32.
    allow_tf32 = tier.name == "tf32"

    def run() -> torch.Tensor:
        with cudnn_settings(benchmark=True, allow_tf32=allow_tf32):
            return F.conv2d(x, w, None, **conv_kwargs)

    return run


IM2WIN_PRECISION = {"fp32": "ieee", "tf32": "tf32", "fp16": None, "bf16": None}
register(
    Method(
        name="im2win",
        tiers=tuple(IM2WIN_PRECISION),
        build=_im2win_builder(IM2WIN_PRECISION),
        backend=_im2win_backend,
    )
)
# The two window sources on their own (`im2win` lets the library choose), on request.
for _windows in ("materialized", "streamed"):
    register(
        Method(
            name=f"im2win-{_windows}",
            tiers=tuple(IM2WIN_PRECISION),
            build=_im2win_builder(IM2WIN_PRECISION, windows=_windows),
            backend=_im2win_backend,
            default=False,
        )
    )
register(
    Method(
        name="im2win-tf32x3",  # tensor cores at fp32 accuracy, so it competes in the fp32 tier
        tiers=("fp32",),
        build=_im2win_builder({"fp32": "tf32x3"}),
        backend=_im2win_backend,
    )
)
register(
    Method(
        name="torch-conv2d",
        tiers=("fp32", "tf32", "fp16", "bf16"),
        build=_torch_conv2d,
        backend=lambda device: "cudnn" if device.type == "cuda" else "aten-cpu",
    )
)
