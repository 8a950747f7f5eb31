"""`torch.nn` surface: a drop-in `Conv2d` and whole-model conversion."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .functional import conv2d


class Conv2d(torch.nn.Conv2d):
    """`torch.nn.Conv2d` computed by `im2win.conv2d`: same arguments, parameters, init and
    state_dict, plus `precision` (see `im2win.conv2d`; float32 is IEEE unless asked)."""

    def __init__(self, *args, precision: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.precision = precision

    def _conv_forward(self, input, weight, bias):
        padding = self.padding
        if self.padding_mode != "zeros":  # as torch does: pad explicitly, convolve unpadded
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups,
                      precision=self.precision)  # fmt: skip

    @classmethod
    def from_torch(cls, conv: torch.nn.Conv2d, precision: str | None = None) -> Conv2d:
        """An im2win Conv2d with `conv`'s configuration that shares its parameters (no copy).

        Hooks registered on `conv` are not carried over.
        """
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, bias=conv.bias is not None,
            padding_mode=conv.padding_mode, device="meta", precision=precision,
        )  # fmt: skip
        new.weight, new.bias = conv.weight, conv.bias
        return new.train(conv.training)

    def extra_repr(self) -> str:
        extra = f", precision={self.precision!r}" if self.precision is not None else ""
        return super().extra_repr() + extra


def convert(model: torch.nn.Module, precision: str | None = None) -> torch.nn.Module:
    """Replace every `torch.nn.Conv2d` inside `model` (in place) by an im2win `Conv2d` that
    shares its parameters; returns `model` (or the converted module if `model` is a conv)."""
    if type(model) is torch.nn.Conv2d:
        return Conv2d.from_torch(model, precision)
    for name, child in model.named_children():
        setattr(model, name, convert(child, precision))
    return model
