"""PyTorch's own convolution paths: cuDNN's pick (`torch-conv2d`), per-image im2col + cuBLAS
(`im2col-cublas`, the paper's "PyTorch GEMM" baseline) and whole-batch unfold + matmul."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import (
    ConvSpec,
    Prepared,
    Unsupported,
    check_inputs,
    measure_extra_bytes,
    set_tier_flags,
    weight_like_input,
)


def make_torch_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    tier: str = "fp32",
) -> Prepared:
    """F.conv2d with cudnn.benchmark: the best engine PyTorch's cuDNN integration finds."""
    name = "torch-conv2d"
    spec = check_inputs(name, x, weight, bias, stride, padding, dilation, groups, tier)
    w = weight_like_input(weight, spec)  # else PyTorch converts it on every call

    def run() -> torch.Tensor:
        # The flags are process-wide and part of PyTorch's benchmark cache key: set each call.
        torch.backends.cudnn.benchmark = True
        set_tier_flags(tier)
        return F.conv2d(x, w, bias, stride, padding, dilation, groups)

    run()  # cudnn.benchmark tries its engines on the first call of a shape
    measured = measure_extra_bytes(run, x.device)
    info = {"extra_bytes_source": "measured (allocator peak beyond the output)"}
    return Prepared(name, run, measured, info)


def _nchw_gemm_checks(name: str, spec: ConvSpec) -> tuple[int, int]:
    if spec.channels_last:
        raise Unsupported(
            f"{name} is an NCHW path: PyTorch's im2col copies a channels_last input to NCHW"
        )
    pads = spec.symmetric_padding
    if pads is None:
        raise Unsupported(f"{name} pads symmetrically, got padding {spec.params.padding}")
    return pads


def make_im2col_cublas(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    tier: str = "fp32",
) -> Prepared:
    """aten._slow_conv2d_forward: per image, im2col into one reused buffer, then one GEMM."""
    name = "im2col-cublas"
    spec = check_inputs(name, x, weight, bias, stride, padding, dilation, groups, tier)
    pads = _nchw_gemm_checks(name, spec)
    if spec.params.dilation != (1, 1) or groups != 1:
        raise Unsupported(
            f"{name}: _slow_conv2d_forward has no dilation or groups, got "
            f"dilation={spec.params.dilation}, groups={groups}"
        )
    w = weight.contiguous()
    (_, c, _, _), (_, _, r, s) = x.shape, w.shape
    p, q = spec.out_shape[2:]
    op = torch.ops.aten._slow_conv2d_forward.default
    kernel, strides, pads = [r, s], list(spec.params.stride), list(pads)

    def run() -> torch.Tensor:
        set_tier_flags(tier)  # cuBLAS follows the matmul TF32 flag
        return op(x, w, kernel, bias, strides, pads)

    try:
        run()
    except RuntimeError as e:
        raise Unsupported(f"{name}: {str(e).splitlines()[0]}") from None
    # One [C*R*S, P*Q] column buffer, skipped for 1x1 / stride 1 / no padding.
    needs_columns = (r, s) != (1, 1) or spec.params.stride != (1, 1) or any(pads)
    extra = c * r * s * p * q * x.element_size() if needs_columns else 0
    info = {
        "extra_bytes_source": "analytic (one image's column buffer)",
        "measured_extra_bytes": measure_extra_bytes(run, x.device),
    }
    return Prepared(name, run, extra, info)


def make_unfold_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    tier: str = "fp32",
) -> Prepared:
    """F.unfold of the whole batch ([N, C*R*S, P*Q] columns), then one batched matmul."""
    name = "unfold-matmul"
    spec = check_inputs(name, x, weight, bias, stride, padding, dilation, groups, tier)
    pads = _nchw_gemm_checks(name, spec)
    n, k, p, q = spec.out_shape
    _, cg, r, s = weight.shape
    # [G, K/G, Cg*R*S], and the batch as a stride-0 view: no copy for groups == 1.
    w = weight.contiguous().view(groups, k // groups, cg * r * s)
    crs = cg * r * s
    geometry = dict(
        kernel_size=(r, s), dilation=spec.params.dilation, padding=pads, stride=spec.params.stride
    )
    bias_view = None if bias is None else bias.view(1, -1, 1, 1)

    def run() -> torch.Tensor:
        set_tier_flags(tier)
        cols = F.unfold(x, **geometry).view(n, groups, crs, p * q)
        y = torch.matmul(w, cols).view(n, k, p, q)  # [N, G, K/G, P*Q]
        if bias_view is not None:
            y += bias_view
        return y

    run()
    # The columns; with groups > 1 matmul also materialises the batch-broadcast weight.
    extra = n * groups * crs * p * q * x.element_size()
    if groups > 1:
        extra += n * w.numel() * w.element_size()
    info = {
        "extra_bytes_source": "analytic (whole-batch column buffer)",
        "measured_extra_bytes": measure_extra_bytes(run, x.device),
    }
    return Prepared(name, run, extra, info)
