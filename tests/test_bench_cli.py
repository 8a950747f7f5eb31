"""`im2win bench` end to end on whatever device is present (the CPU path on CI), kept small."""

import csv
import io
import json
import os
import re
import shlex
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

import im2win
from im2win.bench.layers import PAPER_LAYERS
from im2win.bench.report import FIELDS, format_table
from im2win.bench.suites import LAYERS_BY_NAME, miniature, select_layers
from im2win.cli import main

REQUIRED = {
    "suite", "layer", "method", "tier", "layout", "batch", "ms", "host_us", "tflops", "rel_err",
    "extra_mib", "peak_mib", "within_tier", "gpu", "torch", "triton", "cudnn", "commit",
    "date", "command",
}  # fmt: skip
# Explicit tiers and layers: the defaults differ between CPU and GPU.
ARGS = shlex.split(
    "bench --layers conv1,conv11 --tiers fp32,bf16 --batch 1 --repeats 1"
    " --methods im2win,im2win-tf32x3,im2win-transform,torch-conv2d"
)
GPU = torch.cuda.is_available()
# The smallest run: on a CPU both measurements are recorded as unsupported at once.
TINY = shlex.split("bench --layers conv1 --tiers fp32 --batch 1 --repeats 1 --methods torch-conv2d")


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
        assert row["commit"] and row["date"] and row["batch"] == 1 and row["repeats"] == 1
        if row["method"] == "torch-conv2d" and not GPU:  # the baselines are CUDA-only
            assert row["status"] == "unsupported" and "CUDA" in row["note"]
            continue
        assert row["status"] == "ok" and row["ms"] > 0 and row["host_us"] > 0
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


def _one_line_exit(args: list[str]) -> str:
    """The message of the SystemExit that `main(args)` ends with: one line, no traceback."""
    with pytest.raises(SystemExit) as exc, redirect_stdout(io.StringIO()):
        main(args)
    message = exc.value.code
    assert isinstance(message, str) and "\n" not in message
    return message


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"im2win {im2win.__version__}\n"


@pytest.mark.parametrize("value", ["0", "-2", "x"])
@pytest.mark.parametrize("option", ["--batch", "--repeats"])
def test_batch_and_repeats_below_one_are_rejected(capsys, tmp_path, option, value):
    with pytest.raises(SystemExit) as exc:
        main([*TINY, option, value, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == f"im2win bench: error: argument {option}: '{value}': expected an integer >= 1"
    assert not (tmp_path / "out").exists()


def test_bench_defaults_to_a_new_folder_under_bench_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(TINY) == 0
    (run,) = (tmp_path / "bench-runs").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}", run.name)
    assert len(_rows(run)) == 2  # conv1 x fp32 x 2 layouts x torch-conv2d
    out = Path("bench-runs") / run.name
    assert capsys.readouterr().out.endswith(f"results: {out}/results.jsonl and {out}/results.csv\n")


def test_bench_refuses_a_non_empty_out_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    message = _one_line_exit([*TINY, "--out", str(out)])
    assert message == (
        f"im2win bench: --out {out} is not empty; expected a new or empty directory "
        "(or pass --overwrite)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # nothing written

    with redirect_stdout(io.StringIO()):
        main([*TINY, "--out", str(out), "--overwrite"])
    assert len(_rows(out)) == 2 and (out / "keep.txt").read_text() == "earlier work"
    with redirect_stdout(io.StringIO()):  # an empty directory is fine without --overwrite
        main([*TINY, "--out", str(tmp_path / "empty")])
    assert len(_rows(tmp_path / "empty")) == 2


def test_bench_refuses_a_file_as_out(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    message = _one_line_exit([*TINY, "--out", str(path)])
    assert message == f"im2win bench: --out {path} is a file; expected a directory"


def test_mini_layer_names_are_accepted(tmp_path):
    out = tmp_path / "out"
    args = [*TINY, "--layers", "conv1-mini,conv5", "--out", str(out)]
    with redirect_stdout(io.StringIO()):
        assert main(args) == 0
    rows = _rows(out)
    # On a GPU conv5 is full size; everywhere conv1-mini is conv1's miniature.
    conv5 = LAYERS_BY_NAME["conv5"] if GPU else miniature(LAYERS_BY_NAME["conv5"])
    for layer in (miniature(LAYERS_BY_NAME["conv1"]), conv5):
        (row, _) = [r for r in rows if r["layer"] == layer.name]  # NCHW and NHWC
        assert (row["c"], row["hw"], row["k"]) == (layer.c, layer.hw, layer.k)
    assert {r["suite"] for r in rows} == {"paper" if GPU else "paper-mini"}


def test_select_layers_takes_mini_names_on_a_gpu_too():
    conv1 = LAYERS_BY_NAME["conv1"]
    assert select_layers(["conv1-mini", "conv1"], quick=False, gpu=True) == (
        "paper",
        [miniature(conv1), conv1],
    )
    assert select_layers(["conv1-mini"], quick=False, gpu=True) == (
        "paper-mini",
        [miniature(conv1)],
    )
    # A miniature is not shrunk again on a CPU.
    assert select_layers(["conv1-mini"], quick=False, gpu=False)[1] == [miniature(conv1)]
    with pytest.raises(ValueError, match="conv1-mini-mini"):
        select_layers(["conv1-mini-mini"], quick=False, gpu=True)


def test_unknown_mini_layer_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--layers", "conv99-mini"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("im2win bench: error: argument --layers: 'conv99-mini': choose from")
    assert err.endswith("regnety-1x1-888-7 (each also as NAME-mini)")


def test_methods_that_serve_none_of_the_tiers_are_rejected(tmp_path):
    message = _one_line_exit(
        [*TINY, "--tiers", "bf16", "--methods", "im2win-tf32x3", "--out", str(tmp_path)]
    )
    assert message == "im2win bench: none of --methods im2win-tf32x3 serves --tiers bf16"


@pytest.mark.skipif(GPU, reason="torch-conv2d runs on a GPU")
def test_all_unsupported_says_so_instead_of_an_empty_table(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*TINY, "--methods", "torch-conv2d,im2col-cublas", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    expected = (
        "Nothing to show: every requested measurement was unsupported on cpu:\n"
        "  torch-conv2d needs a CUDA tensor, got a tensor on cpu\n"
        "  im2col-cublas needs a CUDA tensor, got a tensor on cpu\n"
    )
    assert stdout.endswith(expected + f"results: {out}/results.jsonl and {out}/results.csv\n")
    assert "layer  tier" not in stdout
    assert (out / "table.txt").read_text() == expected
    rows = _rows(out)  # the rows stay in the files
    assert len(rows) == 4 and {r["status"] for r in rows} == {"unsupported"}


def test_table_of_only_unsupported_rows_lists_each_reason_once():
    row = dict.fromkeys(FIELDS, None) | {"status": "unsupported", "device": "cuda"}
    rows = [row | {"note": note} for note in ("a: no dilation", "b: pads", "a: no dilation")]
    assert format_table(rows).splitlines() == [
        "Nothing to show: every requested measurement was unsupported on cuda:",
        "  a: no dilation",
        "  b: pads",
    ]


def test_progress_is_a_tqdm_bar_with_eta_on_stderr(tmp_path, capsys, monkeypatch):
    # tqdm fits the bar to $COLUMNS when stderr is not a terminal: make it wide enough.
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("LINES", "50")
    main([*TINY, "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    last = captured.err.split("\r")[-1]
    assert re.search(
        r"conv1(-mini)? fp32 NHWC torch-conv2d: 100%\|.+\| 2/2 \[\d\d:\d\d<00:00", last
    )
    assert "[1/2]" not in captured.err and "100%" not in captured.out


def test_help_describes_what_bench_compares_and_where_it_writes(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps to the terminal, also at hyphens
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "every cuDNN forward algorithm" in text and "paper's CUDA kernel" in text
    assert "(default bench-runs/<UTC date-time>/)" in text
    assert "{paper,resnet50,extra,models}" in text and "--overwrite" in text


def _figures_exit(path: Path) -> str:
    message = _one_line_exit(["figures", str(path)])
    assert message.startswith("im2win figures: ") and str(path) in message
    return message


def test_figures_without_results_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nonexistent"
    assert _figures_exit(missing) == (
        f"im2win figures: no results file at {missing} "
        "(expected a results.jsonl or a directory holding one)"
    )
    assert "no results file at" in _figures_exit(tmp_path)  # a directory without one
    (tmp_path / "results.jsonl").write_text("\n")
    assert _figures_exit(tmp_path) == f"im2win figures: {tmp_path} holds no result rows"


@pytest.mark.parametrize(
    "content, error",
    [
        (b'{"layer": "conv1"', "results.jsonl:2: not JSON"),
        (b"[1, 2]", "results.jsonl:2: a JSON list, expected an object"),
        (b'{"layer": "conv1"}', "results.jsonl:2: a row without method, tier, layout, batch"),
        (b"\x89PNG\r\n\x1a\n\xff\xfe", "results.jsonl is not UTF-8 text"),
    ],
)
def test_figures_on_a_malformed_file_is_a_one_line_error(tmp_path, content, error):
    row = {"layer": "conv1", "method": "im2win", "tier": "fp32", "layout": "NCHW", "batch": 1}
    path = tmp_path / "results.jsonl"
    path.write_bytes(json.dumps(row).encode() + b"\n" + content)
    assert error in _figures_exit(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_figures_on_an_unreadable_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text("")
    path.chmod(0)
    assert "Permission denied" in _figures_exit(path)


def test_bench_times_the_gradients(tmp_path):
    """--directions dgrad,wgrad: im2win's gradients (and cuDNN's on a GPU) as rows of their
    own, checked against float64 autograd; the forward methods are not run for them."""
    args = shlex.split("bench --layers conv5 --tiers fp32 --layouts NHWC --batch 1 --repeats 1"
                       " --methods im2win --directions dgrad,wgrad")  # fmt: skip
    with redirect_stdout(io.StringIO()):
        assert main([*args, "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["direction"], r["method"]) for r in rows] == [
        (d, m) for d in ("dgrad", "wgrad") for m in ("im2win-grad", "torch-convolution-backward")
    ]
    for row in rows:
        if row["method"] == "torch-convolution-backward" and not GPU:
            assert row["status"] == "unsupported" and "GPU" in row["note"]
            continue
        assert row["status"] == "ok" and row["ms"] > 0 and row["tflops"] > 0, row
        assert 0 <= row["rel_err"] <= row["max_rel_err"]
        want = row["input_mib"] if row["direction"] == "dgrad" else row["weight_mib"]
        assert row["output_mib"] == pytest.approx(want)
