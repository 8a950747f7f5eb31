"""The examples run, and say what they claim: examples/train.py's two loss curves agree."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_example_curves_match(tmp_path, monkeypatch):
    monkeypatch.setenv("IM2WIN_BACKWARD", "pytorch")  # the example sets it for the run
    out = tmp_path / "curves.json"
    # NCHW: on the CPU, PyTorch 2.13's oneDNN weight gradient of a strided 1x1 channels-last
    # convolution is wrong for some inputs (the stock arm; notes/backward/README.md).
    args = "--steps 2 --batch 2 --size 16 --width 4 --backward im2win"
    result = load("train").main([*args.split(), "--out", str(out)])
    assert out.exists() and result["commit"]
    assert len(result["stock_loss"]) == len(result["im2win_loss"]) == 2
    assert result["im2win_loss"] == pytest.approx(result["stock_loss"], rel=1e-4)
