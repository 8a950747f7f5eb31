"""im2win.nn.Conv2d and im2win.convert against torch.nn.Conv2d."""

from __future__ import annotations

import pytest
import torch

import im2win
from helpers import DEVICE, TOL, assert_close

MODULES = {
    "plain": dict(in_channels=3, out_channels=5, kernel_size=3),
    "strided_padded": dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=1),
    "same_dilated": dict(in_channels=6, out_channels=4, kernel_size=4, padding="same", dilation=2),
    "grouped_no_bias": dict(in_channels=6, out_channels=9, kernel_size=3, groups=3, bias=False),
    "reflect": dict(in_channels=2, out_channels=3, kernel_size=3, padding=1,
                    padding_mode="reflect"),
    "circular": dict(in_channels=2, out_channels=3, kernel_size=3, padding=2,
                     padding_mode="circular"),
}  # fmt: skip


def _reference(torch_conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The torch module itself, in float64."""
    return torch_conv.to(torch.float64)(x.double())


@pytest.mark.parametrize("name", MODULES)
def test_conv2d_module_matches_torch(name):
    torch.manual_seed(5)
    ours = im2win.nn.Conv2d(**MODULES[name], device=DEVICE)
    theirs = torch.nn.Conv2d(**MODULES[name], device=DEVICE)
    theirs.load_state_dict(ours.state_dict())  # same parameters, same state_dict keys
    x = torch.randn(2, MODULES[name]["in_channels"], 11, 9, device=DEVICE)
    assert_close(ours(x), _reference(theirs, x), TOL[torch.float32])


def test_convert_replaces_every_conv_and_shares_parameters():
    torch.manual_seed(6)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, groups=2), torch.nn.BatchNorm2d(8)),
    ).to(DEVICE)
    x = torch.randn(2, 3, 10, 10, device=DEVICE)
    model.eval()
    expected = model.double()(x.double())
    model.float()
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    converted = im2win.convert(model)
    convs = [m for m in converted.modules() if isinstance(m, torch.nn.Conv2d)]
    assert converted is model and all(type(m) is im2win.nn.Conv2d for m in convs)
    assert [m.weight for m in convs] == weights  # the same Parameter objects: no copy
    assert not convs[0].training
    assert_close(converted(x), expected, TOL[torch.float32])


def test_converted_module_trains():
    torch.manual_seed(7)
    conv = im2win.convert(torch.nn.Conv2d(3, 4, 3, padding=1, device=DEVICE), precision="ieee")
    assert isinstance(conv, im2win.nn.Conv2d) and "precision='ieee'" in repr(conv)
    conv(torch.randn(2, 3, 6, 6, device=DEVICE)).square().sum().backward()
    assert conv.weight.grad is not None and conv.bias.grad is not None
    assert torch.isfinite(conv.weight.grad).all()
