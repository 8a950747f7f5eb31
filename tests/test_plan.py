"""Call plans: kept per call signature, reused, and never shared by calls that differ."""

import pytest
import torch

import im2win
from helpers import TOL, assert_close, randn, reference
from im2win import plan


@pytest.fixture(autouse=True)
def no_plans():
    plan._PLANS.clear()
    yield
    plan._PLANS.clear()


def test_a_signature_is_planned_once(monkeypatch):
    torch.manual_seed(0)
    x, w = randn(2, 3, 9, 8), randn(4, 3, 3, 3)
    assert_close(im2win.conv2d(x, w, padding=1), reference(x, w, padding=1), TOL[torch.float32])
    assert len(plan._PLANS) == 1

    def unexpected(*args, **kwargs):
        raise AssertionError("a kept signature was planned again")

    monkeypatch.setattr(plan, "make_plan", unexpected)
    x2, w2 = randn(2, 3, 9, 8), randn(4, 3, 3, 3)  # new values, same signature
    assert_close(im2win.conv2d(x2, w2, padding=1), reference(x2, w2, padding=1),
                 TOL[torch.float32])  # fmt: skip
    w2.mul_(-2)  # an in-place update is seen: plans keep no tensor values
    assert_close(im2win.conv2d(x2, w2, padding=1), reference(x2, w2, padding=1),
                 TOL[torch.float32])  # fmt: skip


@pytest.mark.parametrize("bad", [1.0, True, (1.0, 1), (True, 1)])
def test_equal_arguments_of_other_types_still_fail(bad):
    x, w = randn(1, 3, 6, 6), randn(2, 3, 3, 3)
    im2win.conv2d(x, w, stride=1)
    with pytest.raises(TypeError, match="stride"):
        im2win.conv2d(x, w, stride=bad)


def test_signature_tells_apart_what_the_choices_read():
    x, w = randn(2, 4, 8, 8), randn(4, 4, 3, 3)
    base = plan.signature(x, w, None, (1, 0, 1, 1, None, "auto", None))
    variants = {
        "strides": (x.to(memory_format=torch.channels_last), w, None),
        "alignment": (randn(2 * 4 * 8 * 8 + 1)[1:].view(2, 4, 8, 8), w, None),
        "dtype": (x.double(), w.double(), None),
        "bias": (x, w, randn(4)),
    }
    keys = {
        name: plan.signature(*t, (1, 0, 1, 1, None, "auto", None)) for name, t in variants.items()
    }
    assert len({base, *keys.values()}) == 1 + len(variants)
    assert plan.signature(x, w, None, ([1, 1], 0, 1, 1, None, "auto", None)) is None
    assert plan.signature(x, w, None, (1, 0, 1, 1, None, "auto", None)) == base


def test_lists_and_pinned_configs_are_planned_each_call():
    x, w = randn(1, 3, 7, 7), randn(2, 3, 3, 3)
    im2win.conv2d(x, w, padding=[1, 1])
    config = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1)
    im2win.conv2d(x, w, config=config)
    assert not plan._PLANS


def test_plans_are_bounded(monkeypatch):
    monkeypatch.setattr(plan, "MAX_PLANS", 3)
    w = randn(2, 1, 1, 1)
    for size in range(1, 8):
        im2win.conv2d(randn(1, 1, size, 1), w)
        assert 1 <= len(plan._PLANS) <= 3


def test_empty_batch_backward():
    x = randn(0, 3, 7, 6).requires_grad_()
    w, b = randn(4, 3, 2, 3).requires_grad_(), randn(4).requires_grad_()
    y = im2win.conv2d(x, w, b, padding=1)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
