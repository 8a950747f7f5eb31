"""Which layers a run measures: a suite on a GPU, miniature copies of it on a CPU.

A layer's miniature is named NAME-mini; asking for it by that name gets it on a GPU too.
"""

from __future__ import annotations

import math

from .layers import EXTRA_LAYERS, PAPER_LAYERS, RESNET50_LAYERS, Layer

SUITES: dict[str, tuple[Layer, ...]] = {
    "paper": PAPER_LAYERS,
    "resnet50": RESNET50_LAYERS,
    "extra": EXTRA_LAYERS,
}
LAYERS_BY_NAME = {layer.name: layer for suite in SUITES.values() for layer in suite}
MINI = "-mini"  # suffix of a miniature's name
# `--quick` on a GPU, and the CPU run's default. Paper: a strided 11x11 stem, a 5x5, a deep
# 3x3; other suites: their first three.
QUICK_LAYERS = {"paper": ("conv1", "conv5", "conv11")}


def miniature(layer: Layer, out_hw: int = 6, max_c: int = 8, max_k: int = 16) -> Layer:
    """The same filter, stride, padding and dilation at toy size (output <= out_hw^2).

    Triton's interpreter pays ~17 ms per program, so the CPU run keeps every launch small.
    Depthwise stays depthwise; other groups shrink to a count dividing both channel counts.
    """
    out = min(layer.out_hw, out_hw)
    span = layer.dilation * (layer.rs - 1) + 1
    hw = (out - 1) * layer.stride + span - 2 * layer.padding
    c = min(layer.c, max_c)
    if layer.groups == layer.c and layer.groups > 1:  # depthwise: K = multiplier * C
        groups, k = c, c * (layer.k // layer.c)
    else:
        k = min(layer.k, max_k)
        groups = math.gcd(layer.groups, c, k)
    return Layer(
        name=layer.name + MINI,
        c=c,
        hw=hw,
        k=k,
        rs=layer.rs,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=groups,
    )


def select_layers(
    names: list[str] | None, *, quick: bool, gpu: bool, suite: str = "paper"
) -> tuple[str, list[Layer]]:
    """The suite name and its layers: `names` if given, else the suite's (all on a GPU, the
    quick set with --quick or on a CPU). On a CPU every layer is its miniature; a NAME-mini
    name is the miniature everywhere. The suite name gets "-mini" when every layer is one."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose from {list(SUITES)}")
    if names is None:
        every = [layer.name for layer in SUITES[suite]]
        names = every if gpu and not quick else list(QUICK_LAYERS.get(suite, every[:3]))
    unknown = [n for n in names if n.removesuffix(MINI) not in LAYERS_BY_NAME]
    if unknown:
        raise ValueError(
            f"unknown layer(s) {unknown}; choose from {list(LAYERS_BY_NAME)}, "
            f"each also as NAME{MINI}"
        )
    layers = []
    for name in names:
        layer = LAYERS_BY_NAME[name.removesuffix(MINI)]
        layers.append(layer if gpu and not name.endswith(MINI) else miniature(layer))
    mini = all(layer.name.endswith(MINI) for layer in layers)
    return (f"{suite}{MINI}" if mini else suite), layers
