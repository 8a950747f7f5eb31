"""im2win.convert in place on real-world convs (pruned, normed, parametrized, shared, hooked,
subclassed), Conv2d.from_torch, and im2win.warmup; values against float64 references."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrizations, parametrize, prune

import im2win
from helpers import DEVICE, TOL, assert_close, randn

WRAPS = {
    "pruned": lambda conv: prune.l1_unstructured(conv, "weight", amount=0.5),
    "weight_norm_hook": torch.nn.utils.weight_norm,
    "spectral_norm_hook": torch.nn.utils.spectral_norm,
    "weight_norm_parametrization": parametrizations.weight_norm,
    "spectral_norm_parametrization": parametrizations.spectral_norm,
}


def _conv(in_channels=3, out_channels=4, **kwargs) -> torch.nn.Conv2d:
    return torch.nn.Conv2d(in_channels, out_channels, 3, padding=1, device=DEVICE, **kwargs)


def _forward_backward(model, x):
    """model(x) and every parameter's gradient of sum(model(x)^2), grads then cleared."""
    y = model(x)
    y.square().sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return y.detach(), grads


def _reference(model, x):
    """`_forward_backward` of the model as it is, in float64; the model is float32 after."""
    expected = _forward_backward(model.double(), x.double())
    model.float()
    return expected


@pytest.mark.filterwarnings("ignore:.*weight_norm:FutureWarning")  # the hook-based one
@pytest.mark.parametrize("wrap", WRAPS)
def test_convert_keeps_reparametrized_weights_and_their_gradients(wrap):
    torch.manual_seed(10)
    model = torch.nn.Sequential(_conv(), torch.nn.ReLU()).eval()  # eval: spectral norm fixed
    WRAPS[wrap](model[0])
    x = randn(2, 3, 6, 6)
    expected, expected_grads = _reference(model, x)
    keys = list(model.state_dict())
    assert im2win.convert(model) is model and isinstance(model[0], im2win.nn.Conv2d)
    assert list(model.state_dict()) == keys
    y, grads = _forward_backward(model, x)
    assert_close(y, expected, TOL[torch.float32])
    assert grads.keys() == expected_grads.keys()  # weight_orig, weight_g/_v, original(s), bias
    for name, grad in grads.items():
        assert_close(grad, expected_grads[name], TOL[torch.float32])
    cls = type(model[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        im2win.convert(model)  # a no-op, silent
    assert type(model[0]) is cls


def test_removing_a_parametrization_after_convert_keeps_im2win():
    torch.manual_seed(11)
    conv = parametrizations.weight_norm(_conv())
    x = randn(2, 3, 6, 6)
    expected, _ = _reference(conv, x)
    im2win.convert(conv, precision="ieee")
    parametrize.remove_parametrizations(conv, "weight")  # weight: the parametrized value
    assert type(conv) is im2win.nn.Conv2d and conv.precision == "ieee"
    assert_close(conv(x), expected, TOL[torch.float32])


def test_convert_keeps_a_shared_conv_one_module():
    torch.manual_seed(12)
    shared = _conv(4, 4)
    model = torch.nn.Sequential(OrderedDict(a=shared, b=shared))
    x = randn(2, 4, 6, 6)
    expected, expected_grads = _reference(model, x)
    im2win.convert(model)
    assert model.a is model.b is shared and type(shared) is im2win.nn.Conv2d
    y, grads = _forward_backward(model, x)
    assert_close(y, expected, TOL[torch.float32])
    assert_close(grads["a.weight"], expected_grads["a.weight"], TOL[torch.float32])


def test_convert_keeps_hooks():
    torch.manual_seed(13)
    conv = _conv()
    calls = []
    conv.register_forward_pre_hook(lambda module, args: (2 * args[0],))
    conv.register_forward_hook(lambda module, args, y: y + 1)
    conv.register_full_backward_hook(lambda module, grad_in, grad_out: calls.append("backward"))
    x = randn(2, 3, 6, 6).requires_grad_()
    expected, _ = _reference(conv, x)
    assert im2win.convert(conv) is conv and type(conv) is im2win.nn.Conv2d
    calls.clear()
    y, _ = _forward_backward(conv, x)
    assert_close(y, expected, TOL[torch.float32])  # both forward hooks changed the values
    assert calls == ["backward"]


class _InitConv(torch.nn.Conv2d):
    """A subclass that changes only the init: converted."""

    def reset_parameters(self) -> None:
        super().reset_parameters()
        torch.nn.init.ones_(self.bias)


class _SameConv(torch.nn.Conv2d):
    """A subclass with its own forward (as timm's Conv2dSame): left alone."""

    def forward(self, x):
        return super().forward(F.pad(x, (1, 1, 1, 1)))


def test_convert_takes_subclasses_that_keep_torchs_forward():
    torch.manual_seed(14)
    model = torch.nn.Sequential(_InitConv(3, 4, 3, device=DEVICE),
                                _InitConv(4, 4, 1, device=DEVICE))  # fmt: skip
    x = randn(2, 3, 6, 6)
    expected, _ = _reference(model, x)
    im2win.convert(model)
    assert type(model[0]) is type(model[1])  # one generated class per subclass
    assert all(isinstance(m, _InitConv) and isinstance(m, im2win.nn.Conv2d) for m in model)
    assert type(model[0]).__name__ == "_InitConv"
    assert_close(model(x), expected, TOL[torch.float32])


def test_convert_leaves_a_subclass_with_its_own_forward_and_says_so():
    torch.manual_seed(15)
    model = torch.nn.Sequential(OrderedDict(stem=_conv(), same=_SameConv(4, 4, 3, device=DEVICE)))
    x = randn(2, 3, 6, 6)
    expected, _ = _reference(model, x)
    with pytest.warns(UserWarning, match=r"same \(_SameConv\): overrides forward") as record:
        im2win.convert(model)
    assert len(record) == 1
    assert type(model.stem) is im2win.nn.Conv2d and type(model.same) is _SameConv
    assert_close(model(x), expected, TOL[torch.float32])


def test_convert_strict_raises_before_converting_anything():
    model = torch.nn.Sequential(OrderedDict(
        stem=_conv(), block=torch.nn.Sequential(_SameConv(4, 4, 3)), patched=_conv(4, 4),
        lazy=torch.nn.LazyConv2d(4, 3),
    ))  # fmt: skip
    model.patched.forward = lambda x: x  # on the instance
    with pytest.raises(ValueError) as error:
        im2win.convert(model, strict=True)
    for line in ("block.0 (_SameConv): overrides forward", "patched (Conv2d): overrides forward",
                 "lazy (LazyConv2d): lazy"):  # fmt: skip
        assert line in str(error.value)
    assert type(model.stem) is torch.nn.Conv2d


def test_convert_leaves_im2win_convs_as_they_are():
    model = torch.nn.Sequential(im2win.nn.Conv2d(3, 4, 3, precision="ieee"),
                                torch.nn.Conv2d(4, 4, 3))  # fmt: skip
    im2win.convert(model, precision="tf32")
    assert [m.precision for m in model] == ["ieee", "tf32"]
    assert all(type(m) is im2win.nn.Conv2d for m in model)


def test_from_torch_shares_parameters_and_refuses_computed_weights():
    torch.manual_seed(16)
    conv = _conv().eval()
    new = im2win.nn.Conv2d.from_torch(conv, precision="ieee")
    assert new is not conv and new.weight is conv.weight and new.bias is conv.bias
    assert not new.training and new.precision == "ieee"
    x = randn(2, 3, 6, 6)
    assert_close(new(x), conv.double()(x.double()), TOL[torch.float32])
    pruned = prune.l1_unstructured(_conv(), "weight", amount=0.5)
    with pytest.raises(ValueError, match="computes its weight"):
        im2win.nn.Conv2d.from_torch(pruned)


def test_warmup_runs_without_grad_and_later_calls_match():
    torch.manual_seed(17)
    model = torch.nn.Sequential(_conv(), torch.nn.BatchNorm2d(4, device=DEVICE), torch.nn.ReLU(),
                                _conv(4, 4))  # fmt: skip
    model.eval()
    x = randn(2, 3, 6, 6)
    expected, _ = _reference(model, x)
    im2win.convert(model)
    warm = im2win.nn.warmup(model, x)
    assert not warm.requires_grad
    assert_close(warm, expected, TOL[torch.float32])
    assert_close(model(x), expected, TOL[torch.float32])
