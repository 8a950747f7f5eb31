"""im2win: 2D convolution on NVIDIA GPUs through the image-to-window layout, in Triton."""

from . import grad, nn
from .functional import conv2d, conv2d_fused, explain, transform, transform_filter
from .fusion import optimize
from .nn import convert, warmup

__version__ = "0.1.0"
__all__ = [
    "conv2d",
    "conv2d_fused",
    "convert",
    "explain",
    "grad",
    "nn",
    "optimize",
    "transform",
    "transform_filter",
    "warmup",
    "__version__",
]
