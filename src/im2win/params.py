"""Convolution arguments: parsing, validation and output size, in one place.

Everything here mirrors `torch.nn.functional.conv2d`'s contract, but bad input raises a
`ValueError`/`TypeError` that names the parameter, its value and what was expected.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch._prims_common import suggest_memory_format

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class ConvParams:
    """Normalised geometry of one convolution (cuDNN letters, padding split per side)."""

    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, bottom, left, right
    dilation: tuple[int, int]
    groups: int = 1

    def output_height(self, h: int, r: int) -> int:
        top, bottom = self.padding[:2]
        return (h + top + bottom - self.dilation[0] * (r - 1) - 1) // self.stride[0] + 1

    def output_width(self, w: int, s: int) -> int:
        return (self.padded_width(w) - self.dilation[1] * (s - 1) - 1) // self.stride[1] + 1

    def output_size(self, h: int, w: int, r: int, s: int) -> tuple[int, int]:
        """Output height P and width Q for an H x W input and an R x S filter."""
        return self.output_height(h, r), self.output_width(w, s)

    def padded_width(self, w: int) -> int:
        return w + self.padding[2] + self.padding[3]

    @property
    def symmetric_padding(self) -> tuple[int, int] | None:
        """(pad_h, pad_w), or None when top != bottom or left != right."""
        top, bottom, left, right = self.padding
        return (top, left) if (top, left) == (bottom, right) else None


def as_int(value) -> int | None:
    """`value` as a Python int if it is an integer (numpy's and torch.SymInt included, bool
    not), else None."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    if isinstance(value, torch.Tensor):  # one-element tensors have __index__: not an int
        return None
    return operator.index(value)


def as_pair(name: str, value, *, minimum: int) -> tuple[int, int]:
    """An int or a sequence of one or two ints, each at least `minimum`, as a pair."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(items) == 1:
        items = items * 2
    ints = tuple(as_int(v) for v in items)
    if len(ints) != 2 or None in ints:
        raise TypeError(f"{name} must be an int or a tuple of two ints, got {value!r}")
    items = ints
    if any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {value!r}")
    return items


def _padding(value, stride, dilation, kernel_size) -> tuple[int, int, int, int]:
    if isinstance(value, str):
        if value == "valid":
            return (0, 0, 0, 0)
        if value == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"padding='same' needs stride 1 in both dimensions, got stride={stride}"
                )
            pads = []
            for d, k in zip(dilation, kernel_size, strict=True):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]  # the extra row/column goes last
            return tuple(pads)
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {value!r}")
    ph, pw = as_pair("padding", value, minimum=0)
    return (ph, ph, pw, pw)


def conv_params(stride=1, padding=0, dilation=1, groups: int = 1, kernel_size=(1, 1)) -> ConvParams:
    """Validate and normalise the geometric arguments of a convolution."""
    stride = as_pair("stride", stride, minimum=1)
    dilation = as_pair("dilation", dilation, minimum=1)
    if as_int(groups) is None:
        raise TypeError(f"groups must be an int, got {groups!r}")
    groups = as_int(groups)
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return ConvParams(stride, _padding(padding, stride, dilation, kernel_size), dilation, groups)


def check_tensor(name: str, t, *, dims: tuple[int, ...]) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")
    if t.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {want}, got {t.dim()}-D shape {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}")


def check_conv_args(input, weight, bias, params: ConvParams, *, dtypes=SUPPORTED_DTYPES) -> None:
    """Check shapes, dtypes and devices of a batched (4-D) input against weight and bias."""
    n, c, h, w = input.shape
    k, cg, r, s = weight.shape
    if input.dtype not in dtypes:
        names = ", ".join(str(d) for d in dtypes)
        raise TypeError(f"input dtype must be one of {names}, got {input.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != input.dtype:
            raise TypeError(f"{name} dtype {t.dtype} does not match input dtype {input.dtype}")
        if t.device != input.device:
            raise ValueError(f"{name} is on {t.device} but input is on {input.device}")
    if min(r, s) == 0:
        shape = tuple(weight.shape)
        raise ValueError(f"weight must have a kernel of at least 1x1, got shape {shape}")
    g = params.groups
    if k % g:
        raise ValueError(f"groups={g} must divide the output channels of weight ({k})")
    if c % g:
        raise ValueError(f"groups={g} must divide the input channels ({c})")
    if c // g != cg:
        raise ValueError(
            f"input has {c} channels, so with groups={g} weight.shape[1] must be {c // g}, got {cg}"
        )
    if bias is not None and tuple(bias.shape) != (k,):
        raise ValueError(f"bias must have shape ({k},), got {tuple(bias.shape)}")
    p, q = params.output_size(h, w, r, s)
    if p <= 0 or q <= 0:
        top, bottom, left, right = params.padding
        raise ValueError(
            f"output would be empty: input {h}x{w} padded to {h + top + bottom}x"
            f"{w + left + right} is smaller than the dilated kernel "
            f"{params.dilation[0] * (r - 1) + 1}x{params.dilation[1] * (s - 1) + 1}"
        )


def output_channels_last(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """PyTorch's rule for a convolution's output: channels_last when the input's or the
    weight's strides suggest channels_last (also when not dense), else contiguous."""
    cl = torch.channels_last
    return suggest_memory_format(x) == cl or suggest_memory_format(weight) == cl


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a channels_last tensor; a tensor that is both (C == 1, 1x1) counts as NCHW."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels_last tensor (`is_channels_last`), else contiguous."""
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format
