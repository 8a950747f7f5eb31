"""cuDNN's fp32 convolution mode ('ieee' or 'tf32'), a process-wide flag, set for one call.

PyTorch >= 2.9 keeps it per operation (`torch.backends.cudnn.conv.fp32_precision`, 'tf32' by
default); setting it through that API alone avoids the error PyTorch raises when the legacy
`allow_tf32` flags and the new API are mixed in one process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def get_conv_precision() -> str:
    return torch._C._get_fp32_precision_getter("cuda", "conv")


def set_conv_precision(value: str) -> None:
    torch._C._set_fp32_precision_setter("cuda", "conv", value)


@contextlib.contextmanager
def conv_precision(value: str) -> Iterator[None]:
    """cuDNN convolutions in fp32 run as `value` ('ieee' or 'tf32') inside."""
    was = get_conv_precision()
    if was == value:
        yield
        return
    set_conv_precision(value)
    try:
        yield
    finally:
        set_conv_precision(was)
