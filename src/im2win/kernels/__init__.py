"""Triton kernels and their host launchers: no choices, no autograd, no `nn` here.

Which kernel runs with which tiles is the variants' business (`im2win/variants/`); the
launchers here take a config and run it.
"""

from triton.runtime.interpreter import InterpretedFunction

from .conv2d_dw import conv2d_fwd_dw
from .conv2d_fwd import WindowSource, pointer_launcher
from .conv2d_fwd_tma import (
    raster_supported,
    tma_block_k,
    tma_launcher,
    tma_programs,
    tma_supported,
)
from .conv2d_grouped import conv2d_fwd_grouped
from .conv2d_wgrad import conv2d_wgrad, conv2d_wgrad_depthwise
from .conv2d_wgrad_tma import wgrad_tma_block_c, wgrad_tma_columns, wgrad_tma_supported
from .conv2d_wgrad_ws import wgrad_ws_supported
from .relayout import MAX_COPY_IMAGES, copy_to_channels_last
from .transform import _im2win_transform_kernel, im2win_transform


def interpreted() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1 was set before import)."""
    return isinstance(_im2win_transform_kernel, InterpretedFunction)


__all__ = [
    "MAX_COPY_IMAGES",
    "WindowSource",
    "conv2d_fwd_dw",
    "conv2d_wgrad",
    "conv2d_wgrad_depthwise",
    "conv2d_fwd_grouped",
    "copy_to_channels_last",
    "im2win_transform",
    "interpreted",
    "pointer_launcher",
    "raster_supported",
    "tma_block_k",
    "tma_launcher",
    "tma_programs",
    "tma_supported",
    "wgrad_tma_block_c",
    "wgrad_tma_columns",
    "wgrad_tma_supported",
    "wgrad_ws_supported",
]
