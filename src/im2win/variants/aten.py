"""PyTorch's own convolution (cuDNN on a GPU) as one more choice, as Inductor lists `aten`
among its conv choices: where no im2win kernel is expected to win, a converted layer runs
exactly what the stock one would, so converting a model never makes it slower.

The heuristic keeps im2win where the H100 standings (`results/h100-0a4e98e/`) put it ahead
of cuDNN: small-channel first layers (C <= 4; the paper's stems at 1.0-4.0x in every tier)
and fp32-accurate channels-last layers (1.56-1.63x geomean over the paper's layers; but
depthwise ones under 7x7, measured on the H200); and,
in 16-bit channels-last, dense layers with a bias or a fused epilogue, which cuDNN runs as
extra passes over the output (`EPILOGUE_PAYS`; every width where the strips kernel serves
the layer). Everything else runs here. Autotuning
times this choice beside every im2win candidate instead. A fused epilogue runs after the
convolution in PyTorch ops, in place (`epilogue.apply_in_place`), as the model's own ops
would.
"""

from __future__ import annotations

import torch

from ..cudnn_mode import get_conv_precision, set_conv_precision
from ..epilogue import Epilogue, apply_in_place
from ..problem import ConvProblem, MathMode
from .base import Choice, Into, Launch, Target, Variant
from .strips import strips_runs

FP32_ACCURATE = (MathMode.IEEE, MathMode.TF32X3)
STEM_CHANNELS = 4  # at most this many input channels: a first layer, im2win's strength


# In 16-bit channels-last, the pointer kernel with a bias or an epilogue in its store beat
# cuDNN plus the passes after it on every 1x1 layer of ResNet-50, VGG-16 and EfficientNet-B0
# and on their 3x3 layers of up to 128 input channels; from 256 on, cuDNN's main loop wins
# it back or ties (H200, batch 64; notes/fusion/README.md). The strips kernel, where it
# serves a layer (Hopper), beat both on ResNet-50's 3x3 layers of 256 and 512 channels too
# (1.33-1.42x over cuDNN plus the passes), and on its strided layers in bf16 (1.08-3.33x at
# batch 128; notes/mainloop/README.md). NCHW was not measured.
EPILOGUE_PAYS = {"max_channels_3x3": 128}

# fp32-accurate channels-last depthwise layers: cuDNN beat the row-tile kernel on the 3x3 and
# 5x5 layers of EfficientNet-B0 and the extra suite (it ran 0.75-1.04x of cuDNN at each
# layer's best tile); the kernel won on ConvNeXt-T's 7x7 layers (1.12-1.20x) but the last
# one, on 7x7 maps (H200; notes/depthwise/README.md).
DEPTHWISE_FP32_MIN_TAPS = 49


def epilogue_pays(math: MathMode, channels_last: bool, channels: int, groups: int,
                  taps: int, strips: bool = False) -> bool:  # fmt: skip
    """Whether an im2win kernel with a call's bias and epilogue fused beats PyTorch's
    convolution followed by them: 16-bit dense channels-last layers, all of them where the
    strips kernel serves the layer (`strips`), else all but long reductions over taps."""
    if not (groups == 1 and channels_last and math.tile_class == "16bit"):
        return False
    return strips or taps == 1 or channels <= EPILOGUE_PAYS["max_channels_3x3"]


def prefers_aten(channels: int, groups: int) -> bool:
    """Whether a 16-bit or TF32 layer runs faster on cuDNN than on an im2win kernel: all but
    first layers (`torch.compile` reads this too, to trace such layers as aten convolutions)."""
    return not (groups == 1 and channels <= STEM_CHANNELS)


def hands_to_aten(math: MathMode, channels_last: bool, channels: int, groups: int, taps: int,
                  fused: bool, strips: bool = False) -> bool:  # fmt: skip
    """The heuristic's choice on a GPU, from what a traced call knows too: whether a layer
    (`fused`: with a bias or an epilogue; `strips`: one the strips kernel serves) runs
    PyTorch's convolution rather than im2win."""
    if math in FP32_ACCURATE and channels_last:
        return groups == channels > 1 and taps < DEPTHWISE_FP32_MIN_TAPS
    if fused and epilogue_pays(math, channels_last, channels, groups, taps, strips):
        return False
    return prefers_aten(channels, groups)


class Aten(Variant):
    name = "aten"

    def supports(self, problem: ConvProblem, target: Target) -> bool:
        # aten takes one pad per axis; 'same' with an even kernel pads one side more.
        return problem.params.symmetric_padding is not None

    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        if target.interpreted:  # on the CPU the point is to exercise the im2win kernels
            return None
        fused = problem.biased or not problem.epilogue.empty
        aten = hands_to_aten(problem.math, problem.channels_last, problem.c, problem.groups,
                             problem.taps, fused, strips_runs(problem, target))  # fmt: skip
        return {} if aten else None

    def candidates(self, problem: ConvProblem, target: Target) -> list[dict]:
        return [{}]

    def check_config(self, config: dict) -> dict:
        settings = {key: value for key, value in config.items() if key != "VARIANT"}
        if settings:
            raise ValueError(f"config: variant 'aten' takes no settings, got {settings}")
        return {}

    def records_grad(self, problem: ConvProblem) -> bool:
        # 16-bit: torch.convolution's own node. fp32 keeps Conv2dFunction, whose backward
        # keeps the forward's math mode where cuDNN's process-wide TF32 default would not.
        return problem.dtype != torch.float32

    def takes_epilogue(self, epilogue: Epilogue) -> bool:
        return True  # in PyTorch ops after the convolution (`epilogue.apply_in_place`)

    def launch(self, problem: ConvProblem, choice: Choice, target: Target, out: dict) -> Launch:
        convolution = _convolution(problem)
        epilogue = problem.epilogue
        if epilogue.empty:
            return convolution
        fmt = out.get("memory_format")

        def fused(x, weight, bias, scale, residual):
            if not epilogue.scaled:  # the bias goes in with the convolution, as in PyTorch
                y = convolution(x, weight, bias)
                y = apply_in_place(y, epilogue, residual=residual)
            else:
                y = convolution(x, weight, None)
                y = apply_in_place(y, epilogue, scale=scale, bias=bias, residual=residual)
            return y if fmt is None else y.contiguous(memory_format=fmt)

        return fused

    def build(self, problem: ConvProblem, choice: Choice, target: Target) -> Into:
        launch = self.launch(problem, choice, target, {})
        return lambda x, weight, bias, y, *epilogue: y.copy_(launch(x, weight, bias, *epilogue))


def _convolution(problem: ConvProblem) -> Launch:
    """PyTorch's convolution of `problem`, bias included, in the call's math mode."""
    params = problem.params
    geometry = (params.stride, params.symmetric_padding, params.dilation, False, (0, 0),
                params.groups)  # fmt: skip
    if problem.dtype != torch.float32:
        return lambda x, weight, bias: torch.convolution(x, weight, bias, *geometry)
    # cuDNN's fp32 mode is a process-wide flag (TF32 by default): set it to the call's
    # math mode for the call, and back. 3xTF32 has no cuDNN counterpart: IEEE is as exact.
    wanted = "tf32" if problem.math is MathMode.TF32 else "ieee"

    def fp32_launch(x, weight, bias):  # conv_precision's work, inline: host time
        was = get_conv_precision()
        if was == wanted:
            return torch.convolution(x, weight, bias, *geometry)
        set_conv_precision(wanted)
        try:
            return torch.convolution(x, weight, bias, *geometry)
        finally:
            set_conv_precision(was)

    return fp32_launch


ATEN = Aten()
