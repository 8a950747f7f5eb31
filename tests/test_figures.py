"""Figures and tables from result rows: selection of ok rows, best cuDNN, ablation numbers.

The drawing tests need matplotlib (the `bench` extra) and skip without it; the table tests
run everywhere, which also checks that the module imports without matplotlib.
"""

from __future__ import annotations

import json
import sys

import pytest

from im2win.bench import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(layer, method, tflops, *, status="ok", extra=1.0, tier="fp32", layout="NCHW", batch=8):
    return {
        "suite": "test", "layer": layer, "method": method, "tier": tier, "layout": layout,
        "batch": batch, "ms": None if tflops is None else 1 / tflops, "tflops": tflops,
        "rel_err": 1e-7, "max_rel_err": {"fp32": 1e-5, "fp16": 2e-3}[tier],
        "within_tier": status == "ok", "status": status,
        "peak_mib": 10.0, "extra_mib": extra, "analytic_extra_mib": extra,
        "gpu": "Test GPU", "torch": "2.11.0", "triton": "3.6.0", "cudnn": 91900,
        "commit": "0123456789abcdef", "date": "2026-11-27T00:00:00+00:00",
    }  # fmt: skip


@pytest.fixture
def rows() -> list[dict]:
    """conv1 and conv2, fp32 NCHW, plus one fp16 NCHW row (a second figure group)."""
    return [
        _row("conv1", "im2win", 10.0, extra=0.0),
        _row("conv2", "im2win", 12.0, extra=0.0),
        _row("conv1", "im2win-materialized", 8.0, extra=100.0),
        _row("conv2", "im2win-materialized", 9.0, extra=50.0),
        _row("conv1", "torch-conv2d", 15.0, extra=4.0),
        _row("conv2", "torch-conv2d", 6.0, extra=4.0),
        _row("conv1", "cudnn-IMPLICIT_GEMM", 7.0, extra=0.0),
        _row("conv2", "cudnn-IMPLICIT_GEMM", 16.0, extra=0.0),
        _row("conv1", "cudnn-WINOGRAD_NONFUSED", 20.0, extra=300.0),
        _row("conv2", "cudnn-WINOGRAD_NONFUSED", 4.0, extra=300.0),
        # Faster than all, but outside the tier's bound: never drawn, never the best cuDNN.
        _row("conv1", "cudnn-FFT", 99.0, status="over-bound", extra=2000.0),
        _row("conv2", "cudnn-GEMM", None, status="unsupported", extra=None),
        _row("conv1", "direct-naive", 0.1, extra=0.0),
        _row("conv1", "im2win-transform", None, extra=100.0),
        _row("conv1", "paper-kernel", 10.0),
        _row("conv2", "paper-kernel", 10.0),
        _row("conv1", "paper-kernel-no-prefetch", 8.0),  # slowdown 1.25
        _row("conv2", "paper-kernel-no-prefetch", 3.0),  # slowdown 3.33
        _row("conv1", "paper-kernel-no-microkernel", 5.0),  # slowdown 2.0, one layer only
        _row("conv1", "im2win", 30.0, tier="fp16", extra=0.0),
    ]


def _cells(table: str, layer: str, section: str = "### fp32 · NCHW") -> dict[str, str]:
    """header -> cell of `layer`'s line in the markdown section that starts with `section`."""
    lines = table.split(section, 1)[1].split("\n\n")[2].splitlines()
    split = lambda line: [c.strip() for c in line.strip("|").split("|")]
    header = split(lines[0])
    line = next(line for line in lines if split(line)[0] == layer)
    return dict(zip(header, split(line), strict=True))


def test_load_rows_file_or_directory(tmp_path, rows):
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert figures.load_rows(path) == rows
    assert figures.load_rows(tmp_path) == rows
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="results.jsonl"):
        figures.load_rows(tmp_path / "empty")


def test_load_rows_names_the_line_of_a_malformed_row(tmp_path, rows):
    path = tmp_path / "results.jsonl"
    header = {"header": True, "command": "im2win bench"}  # no row keys: dropped, not an error
    path.write_text(json.dumps(header) + "\n" + json.dumps(rows[0]) + "\n")
    assert figures.load_rows(path) == rows[:1]
    bad = {k: v for k, v in rows[1].items() if k != "layout"}
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:3: a row without layout$"):
        figures.load_rows(path)


def test_summary_table_picks_best_ok_cudnn(rows):
    table = figures.summary_table(rows)
    conv1, conv2 = _cells(table, "conv1"), _cells(table, "conv2")
    assert conv1["best cuDNN"] == "20.0 (WINOGRAD_NONFUSED)"  # not the over-bound FFT's 99
    assert conv2["best cuDNN"] == "16.0 (IMPLICIT_GEMM)"
    assert conv1["im2win ÷ best cuDNN"] == "0.50×"
    assert conv2["im2win ÷ best cuDNN"] == "0.75×"
    assert conv1["im2win"] == "10.0" and conv1["direct-naive"] == "0.100"
    assert conv2["direct-naive"] == "—"
    geomean = _cells(table, "**geomean**")
    assert geomean["im2win"] == "11.0"  # sqrt(10 * 12) = 10.95
    assert geomean["direct-naive"] == "0.100 (1 of 2)"
    assert geomean["im2win ÷ best cuDNN"] == "0.61×"  # sqrt(0.5 * 0.75)


def test_summary_table_leaves_out_rows_that_are_not_ok(rows):
    table = figures.summary_table(rows)
    assert "99" not in table and "FFT" not in table and "GEMM (" not in table.replace("_GEMM", "")
    assert "left out: 1 over-bound, 1 unsupported" in table
    assert "im2win-transform" not in table
    assert "im2col-cublas" not in table  # no rows: no empty column
    assert _cells(table, "conv1", "### fp16 · NCHW")["im2win"] == "30.0"
    assert figures.summary_table([r | {"status": "over-bound"} for r in rows]) == ""


def test_memory_of_cudnn_best_is_the_fastest_algorithms(rows):
    memory = figures._values(figures._select(rows), "extra_mib")
    assert memory["cudnn-best"] == [300.0, 0.0]  # conv1: WINOGRAD_NONFUSED, conv2: IMPLICIT_GEMM
    assert figures._ratios(memory, "im2win") == {}  # im2win needs 0 MiB: no ratio
    assert figures._ratios(memory, "im2win-materialized")["im2win"] == [0.0, 0.0]


def test_ablation_table_numbers(rows):
    table = figures.ablation_table(rows)
    cells = lambda variant: next(
        [c.strip() for c in line.strip("|").split("|")]
        for line in table.splitlines()
        if f"| {variant} " in line
    )
    # slowdowns 10/8 = 1.25 and 10/3 = 3.33: mean 2.29, geomean 2.04
    assert cells("paper-kernel-no-prefetch") == [
        "paper-kernel-no-prefetch", "2", "2.29×", "2.04×", "1.25× (conv1)", "3.33× (conv2)",
    ]  # fmt: skip
    assert cells("paper-kernel-no-microkernel")[1:4] == ["1", "2.00×", "2.00×"]
    assert "no-vector" not in table  # not measured


def test_ablation_needs_rows_of_one_batch(rows):
    with pytest.raises(ValueError, match="no ok fp32 NCHW rows of paper-kernel"):
        figures.ablation_table([r for r in rows if r["method"] != "paper-kernel"])
    with pytest.raises(ValueError, match="batches"):
        figures.ablation_table(rows + [_row("conv1", "paper-kernel", 10.0, batch=16)])


def _assert_pngs(paths, names):
    assert sorted(p.name for p in paths) == sorted(names)
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, path


def test_draw_all_writes_each_figure(tmp_path, rows):
    pytest.importorskip("matplotlib")
    paths = figures.draw_all(rows, tmp_path / "figs")
    kinds = ("tflops", "tflops-vs-im2win", "memory", "memory-vs-im2win")
    names = [f"{kind}-fp32-NCHW.png" for kind in kinds]
    # fp16 has im2win alone: nothing to compare it with, and its only extra memory is 0
    names += ["tflops-fp16-NCHW.png", "memory-fp16-NCHW.png"]
    _assert_pngs(paths, names)


def test_draw_all_names_batches_when_there_are_several(tmp_path, rows):
    pytest.importorskip("matplotlib")
    more = rows + [_row("conv1", "im2win", 5.0, batch=1), _row("conv1", "direct", 1.0, batch=1)]
    names = {p.name for p in figures.draw_all(more, tmp_path)}
    assert {"tflops-fp32-NCHW-b1.png", "tflops-vs-im2win-fp32-NCHW-b1.png"} <= names
    assert "tflops-fp32-NCHW-b8.png" in names


def test_draw_ablation(tmp_path, rows):
    pytest.importorskip("matplotlib")
    _assert_pngs([figures.draw_ablation(rows, tmp_path)], ["ablation.png"])


def test_missing_matplotlib_names_the_bench_extra(tmp_path, rows, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: ImportError
    with pytest.raises(RuntimeError, match=r"im2win\[bench\]"):
        figures.draw_all(rows, tmp_path)
