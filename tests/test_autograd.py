"""Gradients of input, weight and bias against float64 torch.nn.functional.conv2d autograd,
with PyTorch's backward kernels and with im2win's (`IM2WIN_BACKWARD`)."""

import copy

import pytest
import torch
import torch.nn.functional as F

import im2win
from helpers import DEVICE, TOL, assert_close, randn
from im2win.autograd import BACKWARDS


@pytest.fixture(autouse=True, params=BACKWARDS)
def backward_kernels(request, monkeypatch):
    """Every test here runs with each backward."""
    monkeypatch.setenv("IM2WIN_BACKWARD", request.param)
    return request.param


# id: (input shape, weight shape, conv kwargs)
CASES = {
    "plain_p1": ((2, 3, 7, 9), (4, 3, 3, 3), dict(padding=1)),
    "strided_ragged": ((2, 3, 10, 9), (5, 3, 3, 2), dict(stride=(3, 2))),
    "dilated": ((1, 2, 11, 12), (3, 2, 3, 3), dict(dilation=(2, 3), padding=(1, 0))),
    "grouped": ((2, 6, 8, 7), (4, 3, 3, 1), dict(groups=2, padding=(0, 1))),
    "depthwise": ((2, 5, 7, 7), (5, 1, 3, 3), dict(groups=5, stride=2)),
    "same_even_4x2": ((2, 3, 7, 8), (4, 3, 4, 2), dict(padding="same")),
    "same_even_dilated": (
        (1, 4, 9, 6),
        (6, 2, 2, 4),
        dict(padding="same", dilation=(3, 1), groups=2),
    ),
    "same_odd": ((2, 2, 6, 6), (3, 2, 3, 5), dict(padding="same")),
    "c1_1x1": ((3, 1, 5, 4), (2, 1, 1, 1), dict()),
}


def grads(fn, x, w, b, grad_out, **kw):
    """(y, dx, dw, db) of fn on leaf copies of x, w, b."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (x, w, b)]
    y = fn(*leaves, **kw)
    y.backward(grad_out.to(y.dtype))
    return y, *(None if t is None else t.grad for t in leaves)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES)
def test_gradients(case, layout, bias):
    torch.manual_seed(0)
    xshape, wshape, kw = CASES[case]
    x = randn(*xshape, channels_last=layout == "channels_last")
    w, b = randn(*wshape), randn(wshape[0]) if bias else None
    x64, w64, b64 = (None if t is None else t.double() for t in (x, w, b))
    grad_out = randn(*F.conv2d(x64, w64, **kw).shape)
    y64, *g64 = grads(F.conv2d, x64, w64, b64, grad_out, **kw)
    y, *g = grads(im2win.conv2d, x, w, b, grad_out, **kw)
    assert_close(y, y64.detach(), TOL[torch.float32])
    for name, got, want in zip(("input", "weight", "bias"), g, g64, strict=True):
        if want is None:
            assert got is None, name
            continue
        assert got.dtype == torch.float32 and got.shape == want.shape, name
        assert_close(got, want, TOL[torch.float32])


def test_only_weight_requires_grad():
    torch.manual_seed(1)
    x, w = randn(2, 3, 6, 7), randn(4, 3, 2, 3).requires_grad_()
    y = im2win.conv2d(x, w, padding="same")
    grad_out = randn(*y.shape)
    y.backward(grad_out)
    w64 = w.detach().double().requires_grad_()
    F.conv2d(x.double(), w64, padding="same").backward(grad_out.double())
    assert x.grad is None
    assert_close(w.grad, w64.grad, TOL[torch.float32])


def test_unbatched_gradients():
    torch.manual_seed(2)
    x, w, b = randn(3, 8, 7), randn(5, 3, 2, 2), randn(5)
    grad_out = randn(5, 8, 7)
    _, *g = grads(im2win.conv2d, x, w, b, grad_out, padding="same")
    _, *g64 = grads(F.conv2d, x.double(), w.double(), b.double(), grad_out, padding="same")
    for got, want in zip(g, g64, strict=True):
        assert_close(got, want, TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_gradients(dtype):
    torch.manual_seed(3)
    x, w, b = (randn(*s, dtype=dtype) for s in [(2, 4, 7, 6), (6, 2, 3, 2), (6,)])
    kw = dict(padding="same", groups=2)
    grad_out = randn(2, 6, 7, 6, dtype=dtype)
    _, *g = grads(im2win.conv2d, x, w, b, grad_out, **kw)
    _, *g64 = grads(F.conv2d, x.double(), w.double(), b.double(), grad_out.double(), **kw)
    for got, want in zip(g, g64, strict=True):
        assert got.dtype == dtype
        assert_close(got, want, TOL[dtype])


@pytest.mark.parametrize("padding", [1, "same"])
def test_gradcheck_reference_backend(padding):
    """Forward and backward in float64 (reference backend): torch.autograd.gradcheck."""
    torch.manual_seed(4)
    x = randn(1, 2, 5, 4, dtype=torch.float64).requires_grad_()
    w = randn(4, 1, 2, 3, dtype=torch.float64).requires_grad_()
    b = randn(4, dtype=torch.float64).requires_grad_()
    fn = lambda x, w, b: im2win.conv2d(x, w, b, padding=padding, groups=2, backend="reference")
    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
def test_im2win_backward_is_deterministic(backward_kernels, deterministic):
    """Two backward passes of a strided, grouped layer with a bias give the same bits, also
    under `torch.use_deterministic_algorithms(True)` (which raises on any op it knows to be
    nondeterministic) and right."""
    torch.manual_seed(5)
    x, w, b = randn(2, 4, 9, 10, channels_last=True), randn(6, 2, 3, 3), randn(6)
    grad_out = randn(2, 6, 5, 5)
    kw = dict(stride=2, padding=1, groups=2)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        first = grads(im2win.conv2d, x, w, b, grad_out, **kw)
        again = grads(im2win.conv2d, x, w, b, grad_out, **kw)
    finally:
        torch.use_deterministic_algorithms(was)
    for got, repeat in zip(first, again, strict=True):
        assert torch.equal(got, repeat)
    doubles = (t.double() for t in (x, w, b))
    for got, want in zip(first, grads(F.conv2d, *doubles, grad_out, **kw), strict=True):
        assert_close(got, want.detach(), TOL[torch.float32])


def test_unknown_backward_is_named(monkeypatch):
    monkeypatch.setenv("IM2WIN_BACKWARD", "cudnn")
    x, w = randn(1, 2, 5, 5), randn(3, 2, 3, 3).requires_grad_()
    y = im2win.conv2d(x, w)
    with pytest.raises(ValueError, match="IM2WIN_BACKWARD.*pytorch.*im2win.*'cudnn'"):
        y.sum().backward()


def test_a_converted_model_trains_as_stock(backward_kernels):
    """Five SGD steps of a small CNN (strided, grouped and padded convs, batch norm in
    training mode) converted to im2win follow the stock model's losses and end at its
    weights, with each backward."""
    torch.manual_seed(7)
    stock = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1, stride=2), torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 5),
    ).to(DEVICE)  # fmt: skip
    converted = im2win.convert(copy.deepcopy(stock))
    x, target = randn(4, 3, 10, 10), randn(4, 5)
    losses = []
    for model in (stock, converted):
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        curve = []
        for _ in range(5):
            opt.zero_grad()
            loss = F.mse_loss(model(x), target)
            loss.backward()
            opt.step()
            curve.append(loss.item())
        losses.append(curve)
    assert losses[0][-1] < losses[0][0]  # it learns
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    for a, b in zip(stock.parameters(), converted.parameters(), strict=True):
        assert_close(b, a.detach().double(), TOL[torch.float32])
