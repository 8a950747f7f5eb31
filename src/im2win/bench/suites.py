"""Which layers a run measures: the paper's twelve on a GPU, miniature copies on a CPU."""

from __future__ import annotations

from .layers import PAPER_LAYERS, Layer

LAYERS_BY_NAME = {layer.name: layer for layer in PAPER_LAYERS}
# A strided 11x11 stem, a 5x5, a deep 3x3: `--quick` on a GPU, and the CPU run's default.
QUICK_LAYERS = ("conv1", "conv5", "conv11")


def miniature(layer: Layer, out_hw: int = 6, max_c: int = 8, max_k: int = 16) -> Layer:
    """The same filter, stride, padding and dilation at toy size (output <= out_hw^2).

    Triton's interpreter pays ~17 ms per program, so the CPU run keeps every launch small.
    """
    out = min(layer.out_hw, out_hw)
    span = layer.dilation * (layer.rs - 1) + 1
    hw = (out - 1) * layer.stride + span - 2 * layer.padding
    groups = layer.groups if min(layer.c, max_c) % layer.groups == 0 else 1
    return Layer(
        name=f"{layer.name}-mini",
        c=min(layer.c, max_c),
        hw=hw,
        k=min(layer.k, max_k),
        rs=layer.rs,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        groups=groups,
    )


def select_layers(names: list[str] | None, *, quick: bool, gpu: bool) -> tuple[str, list[Layer]]:
    """The suite name and its layers: `names` if given, else all twelve (GPU) or the quick set."""
    if names is None:
        names = list(QUICK_LAYERS if quick or not gpu else LAYERS_BY_NAME)
    unknown = [n for n in names if n not in LAYERS_BY_NAME]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; choose from {list(LAYERS_BY_NAME)}")
    layers = [LAYERS_BY_NAME[n] for n in names]
    if gpu:
        return "paper", layers
    return "paper-mini", [miniature(layer) for layer in layers]
