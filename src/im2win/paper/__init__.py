"""The im2win paper's FP32 NCHW CUDA kernel design, its ablation and its baselines.

A reproduction of Lu et al., "Im2win: An Efficient Convolution Paradigm on GPU" (Euro-Par
2023), section 3, as CUDA C++ (`kernels.cu`) compiled at run time with NVRTC (`_cuda.py`
says why). Unlike the released code, every kernel masks its bounds and reduction tail, so
any K, N*P*Q and C*R*S are correct; stride, padding and dilation are supported; addresses
are 64-bit where products can pass 2^31. FP32 only, groups=1 only, forward only.

Methods (benchmark names) and what runs:
  paper-kernel                 implicit GEMM over the im2win tensor: 128 (channels) x 128
                               (pixels) x 8 block tile, 256 threads, 8x8 register
                               micro-tile, k-major operand tiles in shared memory, two
                               stages + register ping-pong, float4 fragment loads
  paper-kernel-no-prefetch     one shared-memory stage, no ping-pong
  paper-kernel-no-vector       scalar 32-bit shared loads instead of float4
  paper-kernel-no-microkernel  one output per thread. Reading: the authors' code has no
                               such variant; with 256 threads and one output each the
                               block tile becomes 16 x 16 (BK = 8 and the double-buffered
                               shared-memory staging kept), so each operand value loaded
                               from shared memory feeds one FMA instead of eight
  paper-kernel-no-smem         the same 8x8 micro-tiles, operands read straight from
                               global memory (L1/L2) by every thread, no shared memory
  direct-naive                 the authors' direct baseline: one thread per output, one
                               launch per image, threads walk p (uncoalesced)
  direct                       a reasonable direct convolution: no transform buffer, a
                               64-channel x 8x8-pixel output tile per block, the input patch
                               and filter slice staged in shared memory, 16 outputs/thread
  im2win-base                  the authors' im2win baseline: direct-naive's scheme over
                               the im2win tensor

The shared-memory footprint of paper-kernel is the paper's 16 KiB for its two stages
(2 x (128x8 + 128x8) floats), plus 4 floats of padding per A row (bank-conflict-free
transposing stores).

    y = paper_conv2d(x, w, b, stride=1, padding=0, dilation=1, variant="full")
    win = im2win.kernels.im2win_transform(x, r, params, channels_last=False, interpreted=False)
    paper_gemm(win, filter_reference(w, False), b, y, r=r, s=s, stride_w=..., dilation_w=...)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ..kernels import im2win_transform
from ..kernels.sizes import cdiv
from ..params import ConvParams, check_conv_args, check_tensor, conv_params
from ..reference import filter_reference
from . import _cuda
from ._cuda import I64, INT, PTR

VARIANTS = ("full", "no-prefetch", "no-vector", "no-microkernel", "no-smem")
DIRECT_VARIANTS = ("naive", "tiled")

# variant -> template arguments of paper_gemm_kernel:
#   BM, BN, TM, TN, SMEM, PREFETCH, VECTOR, MIN_BLOCKS
_GEMM_TEMPLATE = {
    "full": (128, 128, 8, 8, True, True, True, 2),
    "no-prefetch": (128, 128, 8, 8, True, False, True, 2),
    "no-vector": (128, 128, 8, 8, True, True, False, 2),
    "no-microkernel": (16, 16, 1, 1, True, True, False, 2),
    "no-smem": (128, 128, 8, 8, False, False, False, 2),
}

_GEMM_ARGS = (PTR,) * 4 + (INT,) * 7 + (I64,) * 9 + (INT,) * 2
_NAIVE_ARGS = (PTR,) * 4 + (INT,) * 8 + (I64,) * 11 + (INT,) * 6
_BASE_ARGS = (PTR,) * 4 + (INT,) * 6 + (I64,) * 7 + (INT,) * 2
_TILED_ARGS = (PTR,) * 4 + (INT,) * 9 + (I64,) * 13 + (INT,) * 7
_DIRECT_TILE = (64, 8, 8)  # DK, DP, DQ in kernels.cu
_SMEM_BUDGET = 48 * 1024  # bytes of dynamic shared memory the tiled direct kernel aims for
_MAX_GRID = 2**31 - 1


def _template_name(variant: str) -> str:
    args = [str(a).lower() for a in _GEMM_TEMPLATE[variant]]  # True -> "true"
    return f"paper_gemm_kernel<{','.join(args)}>"


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _check_device(name: str, t: torch.Tensor) -> None:
    if t.device.type != "cuda":
        raise ValueError(
            f"the paper's CUDA kernels need CUDA tensors; {name} is on {t.device} "
            "(use im2win.conv2d for CPU tensors)"
        )


def _validate(x, weight, bias, stride, padding, dilation, groups) -> ConvParams:
    """Checks shared by the convolution entry points: 4-D fp32 CUDA NCHW, groups=1."""
    check_tensor("input", x, dims=(4,))
    check_tensor("weight", weight, dims=(4,))
    if bias is not None:
        check_tensor("bias", bias, dims=(1,))
    params = conv_params(stride, padding, dilation, groups, kernel_size=tuple(weight.shape[2:]))
    if params.groups != 1:
        raise ValueError(f"groups={groups}: the paper's kernels support groups=1 only")
    check_conv_args(x, weight, bias, params, dtypes=(torch.float32,))
    _check_device("input", x)
    return params


def _output(x: torch.Tensor, weight: torch.Tensor, params: ConvParams) -> torch.Tensor:
    n, _, h, w = x.shape
    k, _, r, s = weight.shape
    p, q = params.output_size(h, w, r, s)
    return torch.empty((n, k, p, q), dtype=torch.float32, device=x.device)


def _filter_rows(filt: torch.Tensor, k: int, crs: int) -> int:
    """Row stride of the re-laid filter F' [K][C][S][R] (or [K][C*S*R]); rows must be dense."""
    dense = filt.dim() == 2 and filt.stride(1) == 1
    if filt.dim() == 4:
        _, c, s, r = filt.shape
        dense = filt.stride()[1:] == (s * r, r, 1) or c * s * r == 1
    if filt.numel() != k * crs or filt.shape[0] != k or not dense:
        raise ValueError(
            f"filt must be the re-laid filter [K={k}][C][S][R] (or [K][C*S*R]) with dense rows "
            f"of {crs} values, got shape {tuple(filt.shape)} strides {filt.stride()}"
        )
    return filt.stride(0)


def _check_window_args(win, filt, bias, y, r, s, stride_w, dilation_w, variant=None):
    """Shapes and devices of paper_gemm / im2win_base_gemm's arguments; returns (n, c, k, p, q)."""
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    for name, t in (("win", win), ("filt", filt), ("y", y), ("bias", bias)):
        if t is None and name == "bias":
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {t.dtype}")
        _check_device(name, t)
        if t.device != y.device:
            raise ValueError(f"{name} is on {t.device} but y is on {y.device}")
    if win.dim() != 4 or y.dim() != 4:
        raise ValueError(f"win and y must be 4-D, got {win.dim()}-D and {y.dim()}-D")
    n, c, p, length = win.shape
    _, k, _, q = y.shape
    if tuple(y.shape[::2]) != (n, p):
        raise ValueError(f"y {tuple(y.shape)} does not match win {tuple(win.shape)} in N or P")
    if win.stride(3) != 1:
        raise ValueError(f"win's last dimension must be contiguous, got strides {win.stride()}")
    if min(stride_w, dilation_w, r, s) < 1:
        raise ValueError(f"r, s, stride_w, dilation_w must be >= 1, got {r}, {s}, {stride_w}, "
                         f"{dilation_w}")  # fmt: skip
    needed = ((q - 1) * stride_w + (s - 1) * dilation_w + 1) * r
    if length < needed:
        raise ValueError(f"win strips hold {length} values; Q={q} outputs need {needed}")
    if bias is not None and tuple(bias.shape) != (k,):
        raise ValueError(f"bias must have shape ({k},), got {tuple(bias.shape)}")
    return n, c, k, p, q


def paper_gemm(
    win: torch.Tensor,
    filt: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    r: int,
    s: int,
    stride_w: int,
    dilation_w: int,
    variant: str = "full",
) -> torch.Tensor:
    """The paper's kernel on an existing window tensor: fills and returns `y`.

    win [N, C, P, Wp*R] (last dim contiguous), filt = F' [K, C, S, R] (dense rows),
    bias [K] or None, y [N, K, P, Q] of any strides; all fp32 on one CUDA device.
    """
    n, c, k, p, q = _check_window_args(win, filt, bias, y, r, s, stride_w, dilation_w, variant)
    stride_fk = _filter_rows(filt, k, c * s * r)
    bm, bn, tm, tn = _GEMM_TEMPLATE[variant][:4]
    blocks = cdiv(k, bm) * cdiv(n * p * q, bn)
    if blocks > _MAX_GRID:
        raise ValueError(f"{blocks} blocks exceed one launch; split the batch")
    kern = _cuda.kernel(_template_name(variant), _GEMM_ARGS, y.device)
    kern.launch(
        (blocks, 1, 1), ((bm // tm) * (bn // tn), 1, 1),
        (win.data_ptr(), filt.data_ptr(), _ptr(bias), y.data_ptr(),
         n, c, k, r, s, p, q,
         win.stride(0), win.stride(1), win.stride(2),
         stride_fk, 0 if bias is None else bias.stride(0),
         *y.stride(),
         stride_w, dilation_w),
    )  # fmt: skip
    return y


def paper_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    variant: str = "full",
) -> torch.Tensor:
    """Convolution by the paper's scheme: the Triton im2win transform, then `paper_gemm`.

    x [N, C, H, W] (NCHW-indexed, any strides), weight [K, C, R, S], bias [K] or None, all
    fp32 CUDA; stride/padding/dilation as in torch.nn.functional.conv2d. Returns NCHW
    contiguous fp32 [N, K, P, Q].
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    gemm = functools.partial(paper_gemm, variant=variant)
    return _conv_over_windows(gemm, x, weight, bias, stride, padding, dilation, groups)


def paper_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    params: ConvParams,
    y: torch.Tensor,
    variant: str = "full",
) -> torch.Tensor:
    """The paper's scheme on checked arguments: the NCHW im2win tensor of `x` (any strides),
    the re-laid filter, then `paper_gemm` into `y` [N, K, P, Q] (any strides)."""
    gemm = functools.partial(paper_gemm, variant=variant)
    return _forward_over_windows(gemm, x, weight, bias, params, y)


def _conv_over_windows(gemm, x, weight, bias, stride, padding, dilation, groups):
    """Validate, allocate the output, then `_forward_over_windows`."""
    params = _validate(x, weight, bias, stride, padding, dilation, groups)
    y = _output(x, weight, params)
    if y.numel() == 0:
        return y
    return _forward_over_windows(gemm, x, weight, bias, params, y)


def _forward_over_windows(gemm, x, weight, bias, params: ConvParams, y):
    """`gemm(win, filt, bias, y, r, s, stride_w, dilation_w)` over the NCHW im2win tensor."""
    _, _, r, s = weight.shape
    win = im2win_transform(x, r, params, channels_last=False, interpreted=False)
    return gemm(win, filter_reference(weight, False), bias, y, r, s,
                params.stride[1], params.dilation[1])  # fmt: skip


def im2win_base_gemm(
    win: torch.Tensor,
    filt: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    r: int,
    s: int,
    stride_w: int,
    dilation_w: int,
) -> torch.Tensor:
    """The paper's im2win baseline on an existing window tensor (arguments as `paper_gemm`)."""
    n, c, k, p, q = _check_window_args(win, filt, bias, y, r, s, stride_w, dilation_w)
    stride_fk = _filter_rows(filt, k, c * s * r)
    if k > 65535:
        raise ValueError(f"K={k} output channels exceed the grid's z limit (65535)")
    kern = _cuda.kernel("im2win_base_kernel", _BASE_ARGS, y.device)
    grid = (cdiv(p, 32), cdiv(q, 32), k)
    for i in range(n):  # one launch per image, as the authors did
        kern.launch(
            grid, (32, 32, 1),
            (win[i].data_ptr(), filt.data_ptr(), _ptr(bias), y[i].data_ptr(),
             c, k, r, s, p, q,
             win.stride(1), win.stride(2), stride_fk, 0 if bias is None else bias.stride(0),
             y.stride(1), y.stride(2), y.stride(3),
             stride_w, dilation_w),
        )  # fmt: skip
    return y


def im2win_base_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """The paper's im2win baseline: the Triton transform, then `im2win_base_gemm`."""
    return _conv_over_windows(im2win_base_gemm, x, weight, bias, stride, padding, dilation,
                              groups)  # fmt: skip


def direct_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    variant: str = "naive",
) -> torch.Tensor:
    """Direct convolution, no transform buffer: 'naive' (the authors' baseline) or 'tiled'.

    Arguments as `paper_conv2d`; x and weight may have any strides.
    """
    if variant not in DIRECT_VARIANTS:
        raise ValueError(f"variant must be one of {DIRECT_VARIANTS}, got {variant!r}")
    params = _validate(x, weight, bias, stride, padding, dilation, groups)
    y = _output(x, weight, params)
    if y.numel() == 0:
        return y
    n, c, h, w = x.shape
    k, _, r, s = weight.shape
    _, _, p, q = y.shape
    (sh, sw), (dh, dw) = params.stride, params.dilation
    top, left = params.padding[0], params.padding[2]
    stride_b = 0 if bias is None else bias.stride(0)
    if variant == "naive":
        if k > 65535:
            raise ValueError(f"K={k} output channels exceed the grid's z limit (65535)")
        kern = _cuda.kernel("direct_naive_kernel", _NAIVE_ARGS, y.device)
        grid = (cdiv(p, 32), cdiv(q, 32), k)
        for i in range(n):  # one launch per image, as the authors did
            kern.launch(
                grid, (32, 32, 1),
                (x[i].data_ptr(), weight.data_ptr(), _ptr(bias), y[i].data_ptr(),
                 c, h, w, k, r, s, p, q,
                 *x.stride()[1:], *weight.stride(), stride_b, *y.stride()[1:],
                 sh, sw, top, left, dh, dw),
            )  # fmt: skip
        return y

    dk, dp, dq = _DIRECT_TILE
    patch = ((dp - 1) * sh + (r - 1) * dh + 1) * ((dq - 1) * sw + (s - 1) * dw + 1)
    per_channel = 4 * (r * s * dk + patch)  # bytes of shared memory per staged channel
    cb = max(1, min(c, _SMEM_BUDGET // per_channel))
    blocks = n * cdiv(p, dp) * cdiv(q, dq) * cdiv(k, dk)
    if blocks > _MAX_GRID:
        raise ValueError(f"{blocks} blocks exceed one launch; split the batch")
    kern = _cuda.kernel("direct_tiled_kernel", _TILED_ARGS, y.device)
    kern.set_dynamic_smem(cb * per_channel)
    kern.launch(
        (blocks, 1, 1), (256, 1, 1),
        (x.data_ptr(), weight.data_ptr(), _ptr(bias), y.data_ptr(),
         n, c, h, w, k, r, s, p, q,
         *x.stride(), *weight.stride(), stride_b, *y.stride(),
         sh, sw, top, left, dh, dw, cb),
        smem=cb * per_channel,
    )  # fmt: skip
    return y


# Benchmark method name -> f(x, weight, bias, stride=, padding=, dilation=, groups=) -> y.
METHODS: dict[str, Callable[..., torch.Tensor]] = {
    **{
        ("paper-kernel" if v == "full" else f"paper-kernel-{v}"): functools.partial(
            paper_conv2d, variant=v
        )
        for v in VARIANTS
    },
    "direct-naive": functools.partial(direct_conv2d, variant="naive"),
    "direct": functools.partial(direct_conv2d, variant="tiled"),
    "im2win-base": im2win_base_conv2d,
}

__all__ = [
    "DIRECT_VARIANTS",
    "METHODS",
    "VARIANTS",
    "direct_conv2d",
    "im2win_base_conv2d",
    "im2win_base_gemm",
    "paper_conv2d",
    "paper_forward",
    "paper_gemm",
]
