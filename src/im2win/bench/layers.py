"""The paper's twelve benchmark layers (batch 128, no padding, square inputs and filters).

conv4 uses C = 32, as in the authors' GPU code and logs (their CPU paper used 64).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    name: str
    c: int
    hw: int
    k: int
    rs: int
    stride: int
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    @property
    def out_hw(self) -> int:
        span = self.dilation * (self.rs - 1) + 1
        return (self.hw + 2 * self.padding - span) // self.stride + 1

    def flop(self, batch: int) -> int:
        """2*N*K*P*Q*C*R*S/groups: multiply and add counted separately."""
        return 2 * batch * self.k * self.out_hw**2 * self.c * self.rs**2 // self.groups

    def shapes(self, batch: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Input [N, C, H, W] and weight [K, C/groups, R, S] shapes."""
        return (batch, self.c, self.hw, self.hw), (self.k, self.c // self.groups, self.rs, self.rs)

    def conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)  # fmt: skip


PAPER_BATCH = 128

PAPER_LAYERS = (
    Layer("conv1", 3, 227, 96, 11, 4),
    Layer("conv2", 3, 231, 96, 11, 4),
    Layer("conv3", 3, 227, 64, 7, 2),
    Layer("conv4", 32, 224, 64, 7, 2),
    Layer("conv5", 96, 24, 256, 5, 1),
    Layer("conv6", 256, 12, 512, 3, 1),
    Layer("conv7", 3, 224, 64, 3, 1),
    Layer("conv8", 64, 112, 128, 3, 1),
    Layer("conv9", 64, 56, 64, 3, 1),
    Layer("conv10", 128, 28, 128, 3, 1),
    Layer("conv11", 256, 14, 256, 3, 1),
    Layer("conv12", 512, 7, 512, 3, 1),
)


# Every distinct convolution of torchvision's ResNet-50 (v1.5: stride on the 3x3) at 224x224,
# with its real padding. Names: stage_kind_inputsize.
RESNET50_LAYERS = (
    Layer("r50-stem-7x7", 3, 224, 64, 7, 2, padding=3),
    Layer("r50-l1-1x1-64", 64, 56, 64, 1, 1),
    Layer("r50-l1-3x3", 64, 56, 64, 3, 1, padding=1),
    Layer("r50-l1-1x1-256", 64, 56, 256, 1, 1),
    Layer("r50-l1-1x1-reduce", 256, 56, 64, 1, 1),
    Layer("r50-l2-1x1-reduce56", 256, 56, 128, 1, 1),
    Layer("r50-l2-3x3-s2", 128, 56, 128, 3, 2, padding=1),
    Layer("r50-l2-1x1-512", 128, 28, 512, 1, 1),
    Layer("r50-l2-down-s2", 256, 56, 512, 1, 2),
    Layer("r50-l2-1x1-reduce", 512, 28, 128, 1, 1),
    Layer("r50-l2-3x3", 128, 28, 128, 3, 1, padding=1),
    Layer("r50-l3-1x1-reduce28", 512, 28, 256, 1, 1),
    Layer("r50-l3-3x3-s2", 256, 28, 256, 3, 2, padding=1),
    Layer("r50-l3-1x1-1024", 256, 14, 1024, 1, 1),
    Layer("r50-l3-down-s2", 512, 28, 1024, 1, 2),
    Layer("r50-l3-1x1-reduce", 1024, 14, 256, 1, 1),
    Layer("r50-l3-3x3", 256, 14, 256, 3, 1, padding=1),
    Layer("r50-l4-1x1-reduce14", 1024, 14, 512, 1, 1),
    Layer("r50-l4-3x3-s2", 512, 14, 512, 3, 2, padding=1),
    Layer("r50-l4-1x1-2048", 512, 7, 2048, 1, 1),
    Layer("r50-l4-down-s2", 1024, 14, 2048, 1, 2),
    Layer("r50-l4-1x1-reduce", 2048, 7, 512, 1, 1),
    Layer("r50-l4-3x3", 512, 7, 512, 3, 1, padding=1),
)

# Shapes the paper's layers leave out: depthwise (MobileNet 3x3, ConvNeXt 7x7), dilated
# (DeepLab-style 3x3), grouped (ResNeXt 32 groups), channels no 16 divides (RegNetY-016's
# last 1x1, 888 channels).
EXTRA_LAYERS = (
    Layer("dw3x3-112", 32, 112, 32, 3, 1, padding=1, groups=32),
    Layer("dw3x3-s2-56", 144, 56, 144, 3, 2, padding=1, groups=144),
    Layer("dw3x3-14", 384, 14, 384, 3, 1, padding=1, groups=384),
    Layer("dw7x7-56", 96, 56, 96, 7, 1, padding=3, groups=96),
    Layer("dilated3x3-d2-28", 256, 28, 256, 3, 1, padding=2, dilation=2),
    Layer("grouped32-3x3-28", 256, 28, 256, 3, 1, padding=1, groups=32),
    Layer("regnety-1x1-888-7", 888, 7, 888, 1, 1),
)
