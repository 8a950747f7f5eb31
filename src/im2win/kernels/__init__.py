"""Triton kernels and their host launchers. No autograd and no `nn` here."""

from triton.runtime.interpreter import InterpretedFunction

from .conv2d_dw import conv2d_fwd_dw
from .conv2d_fwd import conv2d_fwd
from .conv2d_fwd_tma import (
    conv2d_fwd_tma,
    has_tma,
    raster_supported,
    tma_block_k,
    tma_launcher,
    tma_supported,
)
from .conv2d_grouped import conv2d_fwd_grouped, grouped_supported
from .relayout import MAX_COPY_IMAGES, copy_to_channels_last
from .split_k import sm_count
from .transform import _im2win_transform_kernel, im2win_transform
from .tuning import (
    autotune_enabled,
    candidate_configs,
    check_config,
    conv2d_fwd_config,
    device_key,
    median_ms,
    shape_class,
    tma_candidate_configs,
    tma_config,
    tma_efficiency,
    tuned_config,
    wide_pointer_tiles,
)


def interpreted() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1 was set before import)."""
    return isinstance(_im2win_transform_kernel, InterpretedFunction)


__all__ = [
    "MAX_COPY_IMAGES",
    "autotune_enabled",
    "candidate_configs",
    "check_config",
    "conv2d_fwd",
    "conv2d_fwd_dw",
    "conv2d_fwd_grouped",
    "conv2d_fwd_tma",
    "conv2d_fwd_config",
    "copy_to_channels_last",
    "device_key",
    "grouped_supported",
    "has_tma",
    "im2win_transform",
    "interpreted",
    "median_ms",
    "raster_supported",
    "shape_class",
    "sm_count",
    "tma_block_k",
    "tma_candidate_configs",
    "tma_config",
    "tma_efficiency",
    "tma_launcher",
    "tma_supported",
    "tuned_config",
    "wide_pointer_tiles",
]
