"""One convolution problem and one math mode: built once from a call's checked arguments and
passed down to every choice and launch.

`MathMode` is how the reduction multiplies (IEEE fp32, 3xTF32, TF32, fp16, bf16);
`ConvProblem` is everything the choices read of a call: shapes, geometry, math mode, layout,
the input's strides and alignment, and the fused epilogue. Both are plain values: no tensors,
no device.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import torch

from .epilogue import NONE, Epilogue
from .params import ConvParams, is_channels_last, output_channels_last


class MathMode(enum.Enum):
    """How a convolution multiplies and accumulates (always in fp32 for 16-bit operands)."""

    IEEE = "ieee"  # fp32 fused multiply-adds
    TF32X3 = "tf32x3"  # three TF32 tensor-core products: fp32-accurate
    TF32 = "tf32"  # one TF32 product: ~1e-3 relative error
    FP16 = "fp16"
    BF16 = "bf16"
    FP64 = "fp64"  # the plain-PyTorch reference backend only

    @property
    def dtype(self) -> torch.dtype:
        """dtype of input, weight and output."""
        return _DTYPES[self]

    @property
    def precision(self) -> str:
        """The `input_precision` of the kernels' dots ('ieee' for non-fp32 operands)."""
        return self.value if self in (MathMode.TF32X3, MathMode.TF32) else "ieee"

    @property
    def tensor_cores(self) -> bool:
        """One tensor-core product a step (TF32 and 16-bit): the tiers whose tiles and kernels
        trade accuracy for tensor-core speed. IEEE and 3xTF32 are fp32-accurate."""
        return self in (MathMode.TF32, MathMode.FP16, MathMode.BF16)

    @property
    def tile_class(self) -> str:
        """The key of this mode's measured tiles: 16-bit modes share theirs."""
        return "16bit" if self.dtype.itemsize == 2 else self.value

    @property
    def tier(self) -> str:
        """The accuracy class a result of this mode is reported in (3xTF32 counts as fp32)."""
        return "fp32" if self in (MathMode.IEEE, MathMode.TF32X3) else self.value

    @property
    def max_rel_err(self) -> float:
        """The tier's bound on ||y - ref|| / ||ref|| against a float64 reference."""
        return _MAX_REL_ERR[self.tier]

    @classmethod
    def of(cls, dtype: torch.dtype, precision: str | None = None) -> MathMode:
        """The mode of a call. float32 takes `precision` ('ieee', 'tf32x3', 'tf32'), else
        follows `torch.get_float32_matmul_precision()`: 'highest' (PyTorch's default) is
        IEEE, 'high' 3xTF32 (as accurate as fp32, on tensor cores), 'medium' TF32.

        The matmul knob is the one PyTorch documents for trading fp32 accuracy for speed, and
        its default keeps fp32 exact; `torch.backends.cudnn.allow_tf32` is not followed: it
        defaults to True, so following it would turn fp32 into TF32 without the caller asking.
        """
        if dtype != torch.float32:
            if precision not in (None, "ieee"):
                raise ValueError(
                    f"precision={precision!r} applies to float32 only; {dtype} always multiplies "
                    f"in its own type and accumulates in float32 (leave precision=None)"
                )
            return _BY_DTYPE[dtype]
        if precision is None:
            return _BY_MATMUL_PRECISION[_matmul_precision()]
        if precision not in FP32_PRECISIONS:
            raise ValueError(
                f"precision must be one of {FP32_PRECISIONS} or None, got {precision!r}"
            )
        return cls(precision)


FP32_PRECISIONS = ("ieee", "tf32x3", "tf32")
_DTYPES = {
    MathMode.IEEE: torch.float32,
    MathMode.TF32X3: torch.float32,
    MathMode.TF32: torch.float32,
    MathMode.FP16: torch.float16,
    MathMode.BF16: torch.bfloat16,
    MathMode.FP64: torch.float64,
}


@torch.compiler.assume_constant_result
def _matmul_precision() -> str:
    """`torch.get_float32_matmul_precision()`, which dynamo cannot trace: under
    `torch.compile` read when the graph is made (a change of it recompiles)."""
    return torch.get_float32_matmul_precision()


_BY_DTYPE = {torch.float16: MathMode.FP16, torch.bfloat16: MathMode.BF16,
             torch.float64: MathMode.FP64}  # fmt: skip
_BY_MATMUL_PRECISION = {"highest": MathMode.IEEE, "high": MathMode.TF32X3,
                        "medium": MathMode.TF32}  # fmt: skip
_MAX_REL_ERR = {"fp32": 1e-5, "tf32": 2e-3, "fp16": 2e-3, "bf16": 5e-3, "fp64": 1e-12}


@dataclass(frozen=True)
class ConvProblem:
    """A batched convolution as the choices see it (cuDNN letters; input [N, C, H, W], weight
    [K, C/groups, R, S], output [N, K, P, Q])."""

    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    params: ConvParams
    math: MathMode
    channels_last: bool
    x_strides: tuple[int, int, int, int]  # the input's, in elements, (n, c, h, w) order
    aligned: bool  # the input starts on a 16-byte boundary
    output_channels_last: bool  # the output's layout (PyTorch's rule: input's or weight's)
    epilogue: Epilogue = NONE  # what follows the bias before the store (epilogue.py)
    biased: bool = False  # the call adds a bias (cuDNN adds it in a pass of its own)

    @classmethod
    def of(cls, x: torch.Tensor, weight: torch.Tensor, params: ConvParams, math: MathMode,
           epilogue: Epilogue = NONE, *, biased: bool = False,
           aligned: bool | None = None) -> ConvProblem:  # fmt: skip
        """The problem of a checked 4-D input and its weight; `aligned` given for a tensor
        without an address (traced), else read from the input's."""
        aligned = x.data_ptr() % 16 == 0 if aligned is None else aligned
        return cls(
            *x.shape, *weight.shape[:1], *weight.shape[2:], params=params, math=math,
            channels_last=is_channels_last(x), x_strides=tuple(x.stride()),
            aligned=aligned, output_channels_last=output_channels_last(x, weight),
            epilogue=epilogue, biased=biased,
        )  # fmt: skip

    def staged(self, images: int) -> ConvProblem:
        """`images` of this problem's NCHW input copied to a fresh, dense channels-last
        buffer, the output written in place: NCHW."""
        c, h, w = self.c, self.h, self.w
        strides = (h * w * c, 1, w * c, c)
        return replace(self, n=images, channels_last=True, x_strides=strides, aligned=True,
                       output_channels_last=False)  # fmt: skip

    @property
    def groups(self) -> int:
        return self.params.groups

    @property
    def cg(self) -> int:
        """Input channels per group."""
        return self.c // self.params.groups

    @property
    def kg(self) -> int:
        """Output channels per group."""
        return self.k // self.params.groups

    @property
    def p(self) -> int:
        return self.params.output_height(self.h, self.r)

    @property
    def q(self) -> int:
        return self.params.output_width(self.w, self.s)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.k, self.cg, self.r, self.s)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.k, self.p, self.q)

    @property
    def pixels(self) -> int:
        """Output pixels N*P*Q: the GEMM's M."""
        return self.n * self.p * self.q

    @property
    def outputs(self) -> int:
        """Output elements N*K*P*Q."""
        return self.n * self.k * self.p * self.q

    @property
    def reduction(self) -> int:
        """Cg*R*S: the GEMM's reduction length."""
        return self.cg * self.r * self.s

    @property
    def taps(self) -> int:
        return self.r * self.s

    @property
    def depthwise(self) -> bool:
        return self.params.groups == self.c

    @property
    def padded(self) -> bool:
        return any(self.params.padding)

    @property
    def strided(self) -> bool:
        return self.params.stride != (1, 1)

    @property
    def pad_top_left(self) -> tuple[int, int]:
        return self.params.padding[0], self.params.padding[2]

    @property
    def dtype(self) -> torch.dtype:
        return self.math.dtype

    @property
    def itemsize(self) -> int:
        return self.math.dtype.itemsize

    @property
    def layout(self) -> str:
        return "NHWC" if self.channels_last else "NCHW"

    def __str__(self) -> str:
        params = self.params
        geometry = f"stride {params.stride}, padding {params.padding}, dilation {params.dilation}"
        groups = f", groups {self.groups}" if self.groups > 1 else ""
        epilogue = "" if self.epilogue.empty else f", epilogue: {self.epilogue}"
        return (
            f"{self.r}x{self.s} conv {self.c} -> {self.k} channels{groups}, "
            f"{self.h}x{self.w} -> {self.p}x{self.q}, batch {self.n}, {self.layout}, "
            f"{self.math.value}, {geometry}{epilogue}"
        )
