"""The convolution methods a benchmark compares, in one small registry.

A method turns (input, weight, conv kwargs, tier) into a `Prepared` convolution: `run()`
returns the output and does nothing else, `extra_bytes` is the memory it needs beyond
input, weight and output by construction (window tensor, workspace). A method that cannot
serve a case raises `Unsupported`, which the harness records as such. Families:
  im2win-*         this library (`im2win` lets it choose where windows come from)
  paper-kernel-*   the paper's CUDA kernel and its ablation (`im2win.paper`)
  direct*, im2win-base   the paper's other baselines (`im2win.paper`)
  cudnn-*, torch-conv2d, im2col-cublas, unfold-matmul, inductor-triton   (`im2win.baselines`)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import im2win
from im2win import baselines, kernels, paper
from im2win.baselines import Prepared, Unsupported
from im2win.ops import resolve_backend
from im2win.params import conv_params, is_channels_last
from im2win.problem import MathMode

from .tiers import TIERS, Tier

Builder = Callable[[torch.Tensor, torch.Tensor, dict, Tier], Prepared]
ALL_TIERS = tuple(TIERS)


@dataclass(frozen=True)
class Method:
    name: str
    tiers: tuple[str, ...]  # the tiers this method can serve
    build: Builder
    backend: Callable[[torch.device], str]  # what actually runs, for the result row
    default: bool = True  # measured unless --methods names others
    output: str = "conv"  # 'conv': a convolution; 'windows': the im2win tensor alone


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def window_bytes(x: torch.Tensor, w: torch.Tensor, conv_kwargs: dict) -> int:
    """Size of the im2win tensor of `x`: N*C*P*Wp*R elements."""
    n, c, h, width = x.shape
    params = conv_params(**conv_kwargs, kernel_size=tuple(w.shape[2:]))
    p = params.output_height(h, w.shape[2])
    return n * c * p * params.padded_width(width) * w.shape[2] * x.element_size()


def im2win_backend(device: torch.device) -> str:
    """What runs im2win's kernels on `device`, for the result rows."""
    backend = resolve_backend("auto", device, torch.float32)
    if backend == "triton" and device.type == "cpu" and kernels.interpreted():
        return "triton-interpreter"
    return backend


def _im2win(math: MathMode | None = None, windows: str | None = None) -> Builder:
    """im2win in `math` (default: the tier's own mode), windows from `windows` (default: the
    library's choice)."""

    def build(x: torch.Tensor, w: torch.Tensor, conv_kwargs: dict, tier: Tier) -> Prepared:
        # backend 'triton': the im2win kernels alone, never PyTorch's own convolution.
        backend = "triton" if resolve_backend("auto", x.device, x.dtype) == "triton" else "auto"
        options = dict(precision=(math or tier.math).precision, windows=windows, backend=backend)
        # What the chosen variant allocates: staging buffers, split-K sums, a window tensor.
        extra = im2win.explain(x, w, None, **conv_kwargs, **options).workspace_bytes
        run = lambda: im2win.conv2d(x, w, None, **conv_kwargs, **options)  # noqa: E731
        return Prepared("im2win", run, extra)

    return build


def _transform(x: torch.Tensor, w: torch.Tensor, conv_kwargs: dict, tier: Tier) -> Prepared:
    kwargs = {k: v for k, v in conv_kwargs.items() if k != "groups"}
    run = lambda: im2win.transform(x, tuple(w.shape[2:]), **kwargs)  # noqa: E731
    return Prepared("im2win-transform", run, window_bytes(x, w, conv_kwargs))


def _paper(name: str) -> Builder:
    """The paper's kernels: fp32 NCHW, groups 1, CUDA (NVRTC)."""

    def build(x: torch.Tensor, w: torch.Tensor, conv_kwargs: dict, tier: Tier) -> Prepared:
        if x.device.type != "cuda":
            raise Unsupported(f"{name} is CUDA C++: needs a GPU")
        if is_channels_last(x) or conv_kwargs.get("groups", 1) != 1:
            raise Unsupported(f"{name} is the paper's NCHW, groups=1 design")
        extra = 0 if name.startswith("direct") else window_bytes(x, w, conv_kwargs)
        fn = paper.METHODS[name]
        return Prepared(name, lambda: fn(x, w, None, **conv_kwargs), extra)

    return build


def _baseline(name: str) -> Builder:
    def build(x: torch.Tensor, w: torch.Tensor, conv_kwargs: dict, tier: Tier) -> Prepared:
        return baselines.make(name, x, w, None, **conv_kwargs, tier=tier.name)

    return build


def _cuda_only(label: str) -> Callable[[torch.device], str]:
    return lambda device: label if device.type == "cuda" else "unsupported"


register(Method("im2win", ALL_TIERS, _im2win(), im2win_backend))
# The two window sources on their own: materialized is the paper's scheme.
for _windows, _default in (("materialized", True), ("streamed", False)):
    register(
        Method(
            f"im2win-{_windows}",
            ALL_TIERS,
            _im2win(windows=_windows),
            im2win_backend,
            default=_default,
        )
    )
# Tensor cores at fp32 accuracy, so it competes in the fp32 tier.
register(Method("im2win-tf32x3", ("fp32",), _im2win(MathMode.TF32X3), im2win_backend))
register(Method("im2win-transform", ALL_TIERS, _transform, im2win_backend, output="windows"))
for _name in paper.METHODS:
    register(Method(_name, ("fp32",), _paper(_name), _cuda_only("cuda-nvrtc")))
for _name in baselines.baseline_names():
    _label = "triton-inductor" if _name == "inductor-triton" else "cudnn/cublas"
    # Inductor's max-autotune compiles for minutes per shape: only when asked for.
    register(
        Method(
            _name,
            ALL_TIERS,
            _baseline(_name),
            _cuda_only(_label),
            default=_name != "inductor-triton",
        )
    )
