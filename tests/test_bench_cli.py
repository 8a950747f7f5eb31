"""`im2win bench` end to end on whatever device is present (the CPU path on CI), kept small."""

import csv
import io
import json
import shlex
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from im2win.bench.layers import PAPER_LAYERS
from im2win.bench.report import FIELDS, format_table
from im2win.bench.suites import miniature
from im2win.cli import main

REQUIRED = {
    "suite", "layer", "method", "tier", "layout", "batch", "ms", "tflops", "rel_err",
    "extra_mib", "peak_mib", "within_tier", "gpu", "torch", "triton", "cudnn", "commit",
    "date", "command",
}  # fmt: skip
# Explicit tiers and layers: the defaults differ between CPU and GPU.
ARGS = shlex.split(
    "bench --layers conv1,conv11 --tiers fp32,bf16 --batch 1 --repeats 1"
    " --methods im2win,im2win-tf32x3,im2win-transform,torch-conv2d"
)
GPU = torch.cuda.is_available()


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    stdout = io.StringIO()  # capsys is per test; this run is shared by the module's tests
    with redirect_stdout(stdout):
        status = main([*ARGS, "--out", str(out)])
    return status, out, stdout.getvalue()


def test_bench_succeeds_and_says_what_ran(bench_run):
    status, _, stdout = bench_run
    assert status == 0
    if not torch.cuda.is_available():
        assert "No CUDA GPU: running a reduced CPU benchmark" in stdout


def test_bench_writes_one_complete_row_per_measurement(bench_run):
    _, out, _ = bench_run
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # 2 layers x 2 layouts x (fp32: 4 methods; bf16: all but im2win-tf32x3)
    assert len(rows) == 2 * 2 * (4 + 3)
    for row in rows:
        assert set(row) == set(FIELDS) >= REQUIRED
        assert row["error"] == ""
        assert row["command"] == "im2win bench " + " ".join(ARGS[1:]) + f" --out {out}"
        assert row["commit"] and row["date"] and row["batch"] == 1
        if row["method"] == "torch-conv2d" and not GPU:  # the baselines are CUDA-only
            assert row["status"] == "unsupported" and "CUDA" in row["note"]
            continue
        assert row["status"] == "ok" and row["ms"] > 0
        assert 0 <= row["rel_err"] <= row["max_rel_err"] and row["within_tier"] is True
        if row["method"] == "im2win-transform":  # exact copy, no FLOPs
            assert row["rel_err"] == 0 and row["tflops"] is None
        else:
            assert row["tflops"] > 0
    assert {(r["method"], r["tier"]) for r in rows} == {
        ("im2win", "fp32"), ("im2win-tf32x3", "fp32"), ("torch-conv2d", "fp32"),
        ("im2win-transform", "fp32"), ("im2win", "bf16"), ("torch-conv2d", "bf16"),
        ("im2win-transform", "bf16"),
    }  # fmt: skip
    assert {r["layout"] for r in rows} == {"NCHW", "NHWC"}

    with (out / "results.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == FIELDS
    assert [(r["layer"], r["method"], r["layout"]) for r in table] == [
        (r["layer"], r["method"], r["layout"]) for r in rows
    ]


def test_bench_prints_the_table_last(bench_run):
    _, out, stdout = bench_run
    table = (out / "table.txt").read_text()
    assert table.splitlines()[0].split()[:4] == ["layer", "tier", "layout", "method"]
    shown = 28 if GPU else 20  # unsupported cases stay in the files only
    assert len(table.splitlines()) == 2 + shown
    assert table in stdout
    assert stdout.endswith(table + f"results: {out}/results.jsonl and {out}/results.csv\n")


def test_table_flags_a_result_outside_its_tier():
    row = dict.fromkeys(FIELDS, None) | {
        "layer": "conv1", "tier": "fp32", "layout": "NCHW", "method": "m", "backend": "b",
        "ms": 1.0, "tflops": 2.0, "rel_err": 3e-4, "within_tier": False, "error": "",
        "status": "over-bound",
    }  # fmt: skip
    failed = row | {"error": "RuntimeError: boom", "status": "error"}
    lines = format_table([row, failed]).splitlines()
    assert lines[2].endswith("OVER-BOUND") and lines[3].endswith("ERROR")
    assert lines[4] == "conv1 fp32 NCHW m: RuntimeError: boom"


def test_miniature_keeps_the_filter_and_stride():
    for layer in PAPER_LAYERS:
        mini = miniature(layer)
        assert (mini.rs, mini.stride) == (layer.rs, layer.stride)
        assert 1 <= mini.out_hw <= 6 and mini.c <= 8 and mini.k <= 16


def test_unknown_layer_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--layers", "conv99"])
    assert exc.value.code == 2
    assert "conv99" in capsys.readouterr().err


def test_figures_redraws_a_committed_run(tmp_path):
    """`im2win figures` on the committed H100 run: every figure and both summaries."""
    pytest.importorskip("matplotlib")
    source = Path(__file__).resolve().parent.parent / "results" / "paper-h100" / "results.jsonl"
    (tmp_path / "results.jsonl").write_text(source.read_text())
    with redirect_stdout(io.StringIO()):
        assert main(["figures", str(tmp_path)]) == 0
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert {"ablation.png", "tflops-fp32-NCHW.png", "memory-bf16-NHWC.png"} <= pngs
    assert len(pngs) == 1 + 4 * 6  # ablation + 4 figures x (3 tiers x 2 layouts)
    assert "best cuDNN" in (tmp_path / "summary.md").read_text()
    assert "paper-kernel-no-microkernel" in (tmp_path / "ablation.md").read_text()


def test_ablate_on_cpu_records_the_cuda_kernels_as_unsupported(tmp_path):
    out = tmp_path / "ablate"
    with redirect_stdout(io.StringIO()):
        assert main(["ablate", "--layers", "conv12", "--repeats", "1", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {
        "paper-kernel", "paper-kernel-no-prefetch", "paper-kernel-no-vector",
        "paper-kernel-no-microkernel", "paper-kernel-no-smem",
    }  # fmt: skip
    if not GPU:
        assert all(r["status"] == "unsupported" for r in rows)
