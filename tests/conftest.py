"""Test setup: Triton's interpreter on machines without a GPU, NaN-poisoned `torch.empty`."""

import os

import pytest
import torch

# The interpreter must be chosen before triton (and so im2win) is imported anywhere.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

_torch_empty = torch.empty


def _poisoned_empty(*args, **kwargs):
    t = _torch_empty(*args, **kwargs)
    if t.dtype.is_floating_point or t.dtype.is_complex:
        with torch.no_grad():  # also for requires_grad=True allocations
            t.fill_(float("nan"))
    return t


@pytest.fixture(autouse=True)
def im2win_kernels_only(request, monkeypatch):
    """On a GPU, backend='auto' hands most layers to PyTorch's own convolution
    (`variants/aten.py`); the suite checks the im2win kernels, so that choice is off unless a
    test is marked `aten_choice`. Plans are kept per signature: a marked test starts and
    ends with none, so no plan crosses the line."""
    from im2win import plan
    from im2win.variants.aten import ATEN

    if "aten_choice" in request.keywords:
        plan._PLANS.clear()
        yield
        plan._PLANS.clear()
        return
    monkeypatch.setattr(ATEN, "heuristic", lambda problem, target: None)
    yield


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    """Every `torch.empty` result starts as NaN, so any element a kernel fails to write shows."""
    monkeypatch.setattr(torch, "empty", _poisoned_empty)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu test: no CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
