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
