"""im2win: 2D convolution on NVIDIA GPUs through the image-to-window layout, in Triton."""

from .functional import conv2d, transform, transform_filter

__version__ = "0.1.0"
__all__ = ["conv2d", "transform", "transform_filter", "__version__"]
