"""What every baseline shares: the `Prepared` result, `Unsupported`, tiers, argument checks,
the TF32 switches and the float64 reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from im2win.bench.tiers import TIERS
from im2win.params import (
    ConvParams,
    check_conv_args,
    check_tensor,
    conv_params,
    is_channels_last,
)

# Precision tier -> dtype of input, weight and output. 'fp32' means IEEE-fp32-accurate
# (tensor cores off), 'tf32' means fp32 data multiplied in TF32.
TIER_DTYPES: dict[str, torch.dtype] = {name: tier.dtype for name, tier in TIERS.items()}


class Unsupported(Exception):
    """The method cannot run this shape, tier or layout here; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Prepared:
    """A convolution ready to time: `run()` does only the convolution (plus bias if given).

    `extra_bytes`: memory the method needs beyond input, weight and output (workspace,
    column buffers); `info` says where that number comes from and what was chosen.
    """

    name: str
    run: Callable[[], torch.Tensor]
    extra_bytes: int
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ConvSpec:
    """Checked arguments of one baseline call."""

    params: ConvParams
    channels_last: bool
    out_shape: tuple[int, int, int, int]
    tier: str

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def symmetric_padding(self) -> tuple[int, int] | None:
        return self.params.symmetric_padding


def check_tier(tier: str, dtype: torch.dtype) -> None:
    if tier not in TIER_DTYPES:
        raise ValueError(f"tier must be one of {tuple(TIER_DTYPES)}, got {tier!r}")
    if dtype != TIER_DTYPES[tier]:
        raise TypeError(f"tier {tier!r} needs {TIER_DTYPES[tier]} tensors, got {dtype}")


def check_inputs(
    name: str, x, weight, bias, stride, padding, dilation, groups, tier: str
) -> ConvSpec:
    """Validate a baseline's arguments; caller errors raise ValueError/TypeError, a device or
    layout the baselines don't serve raises Unsupported."""
    check_tensor("x", x, dims=(4,))
    check_tensor("weight", weight, dims=(4,))
    if bias is not None:
        check_tensor("bias", bias, dims=(1,))
    check_tier(tier, x.dtype)
    params = conv_params(stride, padding, dilation, groups, kernel_size=tuple(weight.shape[2:]))
    check_conv_args(x, weight, bias, params)
    if x.device.type != "cuda":
        raise Unsupported(f"{name} needs a CUDA tensor, got a tensor on {x.device}")
    channels_last = is_channels_last(x)
    if not (channels_last or x.is_contiguous()):
        raise Unsupported(
            f"{name} needs a contiguous NCHW or channels_last input, got strides {x.stride()}"
        )
    n, _, h, w = x.shape
    k, _, r, s = weight.shape
    p, q = params.output_size(h, w, r, s)
    return ConvSpec(params, channels_last, (n, k, p, q), tier)


def weight_like_input(weight: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """The weight in the input's memory format (a copy only if it is not already)."""
    return weight.contiguous(memory_format=spec.memory_format)


def set_fp32_precision(tf32: bool) -> None:
    """Allow or forbid TF32 for fp32 convolutions (cuDNN) and matmuls (cuBLAS), process-wide.

    torch >= 2.9 has per-op fp32_precision flags. Measured on 2.11: setting cuDNN's top-level
    flag leaves conv at its default 'tf32', so each scope is set (inductor's conv template
    reads the top level); conv and rnn stay equal so the legacy `allow_tf32` getter works.
    Matmuls go through set_float32_matmul_precision, which keeps every backend consistent:
    setting only cuda.matmul makes inductor's lowering raise a mixed-API error.
    """
    cudnn = torch.backends.cudnn
    if hasattr(cudnn, "fp32_precision") and hasattr(cudnn, "conv"):
        precision = "tf32" if tf32 else "ieee"
        for scope in (cudnn, cudnn.conv, cudnn.rnn):
            scope.fp32_precision = precision
    else:
        cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def set_tier_flags(tier: str) -> None:
    """Global flags for a tier: TF32 only in 'tf32'; fp16/bf16 GEMMs reduce in fp32."""
    set_fp32_precision(tier == "tf32")
    if tier in ("fp16", "bf16"):
        matmul = torch.backends.cuda.matmul
        matmul.allow_fp16_reduced_precision_reduction = False
        matmul.allow_bf16_reduced_precision_reduction = False


def reference_fp64(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """F.conv2d in float64 on the (already rounded) inputs, on their device."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False  # autotuning fp64 algorithms is slow and useless
    try:
        b = None if bias is None else bias.double()
        return F.conv2d(x.double(), weight.double(), b, stride, padding, dilation, groups)
    finally:
        torch.backends.cudnn.benchmark = saved


def measure_extra_bytes(run: Callable[[], torch.Tensor], device: torch.device) -> int:
    """Allocator peak of one `run()` beyond what was allocated before and what it returns.

    Resets the device's peak-memory counter: call it in `make`, not inside a measurement.
    """
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    y = run()
    torch.cuda.synchronize(device)
    kept = torch.cuda.memory_allocated(device) - before  # the output, as the allocator rounds it
    peak = torch.cuda.max_memory_allocated(device)
    del y
    return max(0, peak - before - kept)
