"""The examples run, and say what they claim: examples/train.py's two loss curves agree, and
examples/train_ddp.py's rows hold both models' runs on one and two processes."""

import importlib.util
import json
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


def test_ddp_example_rows(tmp_path, monkeypatch):
    """examples/train_ddp.py on one and two gloo processes: a row per model and GPU count
    with its throughput and efficiency, and the converted model's losses the stock one's."""
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the spawned ranks import it by name
    out = tmp_path / "ddp.jsonl"
    args = ("--model small --gpus 1,2 --seeds 0,4 --steps 3 --warmup 1 --batch 2 --size 16 "
            "--width 4 --dtype float32 --timeout 120")  # fmt: skip
    rows = importlib.import_module("train_ddp").main([*args.split(), "--out", str(out)])
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    by_run = {(row["arm"], row["gpus"], row["seed"]): row for row in rows}
    assert sorted(by_run) == [(arm, gpus, seed) for arm in ("im2win", "stock")
                              for gpus in (1, 2) for seed in (0, 4)]  # fmt: skip
    for (arm, gpus, seed), row in by_run.items():
        assert row["images_per_s"] > 0 and len(row["losses"]) == 3 and row["commit"]
        assert row["scaling_efficiency"] == (1.0 if gpus == 1 else pytest.approx(
            row["images_per_s"] / (2 * by_run[arm, 1, seed]["images_per_s"])))  # fmt: skip
        assert row["losses"] == pytest.approx(by_run["stock", gpus, seed]["losses"], rel=1e-4)
    # two GPUs train on twice the images: a step's mean loss is over other data
    two, one = by_run["stock", 2, 0]["losses"], by_run["stock", 1, 0]["losses"]
    assert two[1:] != pytest.approx(one[1:])
