"""`im2win bench --suite models` on the CPU: a two-conv toy network stands in for the real
ones (torchvision and timm are not installed here), run through Triton's interpreter."""

import csv
import io
import json
import os
import shlex
import sys
from contextlib import redirect_stdout

import pytest
import torch

from im2win import kernels
from im2win.bench import models as suite
from im2win.bench.arms import EagerArm, Frozen, TrainArm, make_arm
from im2win.cli import MODELS_NEED_CUDA, main
from im2win.fusion import FusedConv2d

MISSING = "im2win_no_such_package"
REQUIRED = {
    "model", "mode", "batch", "stock_ms", "im2win_ms", "speedup", "parity", "parity_ok",
    "stock_host_ms", "im2win_host_ms", "stock_first_s", "im2win_first_s",
    "stock_peak_mib", "im2win_peak_mib",
    "im2win_flop_share", "error", "gpu", "torch", "triton", "cudnn", "commit", "date",
    "command",
}  # fmt: skip


class Toy(torch.nn.Module):
    """Two convolutions and a linear head: [N, 3, 8, 8] -> [N, 10]."""

    def __init__(self, conv2: type[torch.nn.Conv2d] = torch.nn.Conv2d):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = conv2(4, 8, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


class OwnForwardConv(torch.nn.Conv2d):
    """A conv subclass with its own forward: `im2win.convert` leaves it to PyTorch."""

    def forward(self, x):
        return super().forward(x)


def conv_flop(batch: int) -> tuple[int, int]:
    """2*N*K*P*Q*C*R*S of the toy's convolutions at 8x8: (conv1, conv2)."""
    return 2 * batch * 4 * 8 * 8 * 3 * 9, 2 * batch * 8 * 4 * 4 * 4 * 9


@pytest.fixture
def toy_suite(monkeypatch):
    """The model table holds the toy and a model whose package is missing; the suite runs
    on the CPU."""
    toy = suite.ModelSpec("toy", "", Toy, resolution=8, classes=10)
    ghost = suite.ModelSpec("ghost", MISSING, Toy, resolution=8, classes=10)
    monkeypatch.setattr(suite, "MODELS", {"toy": toy, "ghost": ghost})
    monkeypatch.setattr(suite, "bench_device", lambda: torch.device("cpu"))


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


ARGS = shlex.split("bench --suite models --modes eager-fp32,graph-bf16-cl --batch 2 --repeats 1")


@pytest.fixture
def toy_run(toy_suite, tmp_path):
    out = tmp_path / "out"
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        status = main([*ARGS, "--out", str(out)])
    return status, out, stdout.getvalue()


def test_toy_run_writes_one_complete_row_per_case(toy_run):
    status, out, _ = toy_run
    rows = _rows(out)
    # toy and ghost x 2 modes x batch 2
    assert [(r["model"], r["mode"], r["batch"]) for r in rows] == [
        ("toy", "eager-fp32", 2), ("toy", "graph-bf16-cl", 2),
        ("ghost", "eager-fp32", 2), ("ghost", "graph-bf16-cl", 2),
    ]  # fmt: skip
    for row in rows:
        assert set(row) == set(suite.FIELDS) >= REQUIRED
        assert row["suite"] == "models" and row["device"] == "cpu" and row["repeats"] == 1
        assert row["command"] == "im2win bench " + " ".join(ARGS[1:]) + f" --out {out}"
    eager, graph, *ghost = rows

    assert eager["status"] == "ok" and eager["error"] == ""
    assert (eager["dtype"], eager["layout"]) == ("float32", "NCHW")
    assert eager["stock_ms"] > 0 and eager["im2win_ms"] > 0
    assert eager["speedup"] == pytest.approx(eager["stock_ms"] / eager["im2win_ms"])
    assert 0 <= eager["parity"] <= eager["parity_tol"] == 1e-4 and eager["parity_ok"] is True
    assert eager["stock_first_s"] > 0 and eager["im2win_first_s"] > 0
    assert eager["stock_host_ms"] > 0 and eager["im2win_host_ms"] > 0
    assert eager["stock_peak_mib"] is None and eager["im2win_peak_mib"] is None  # CPU
    # Both convs ran im2win kernels, interpreted; a CPU without the interpreter (a GPU
    # machine's) runs the plain-PyTorch reference instead.
    assert eager["im2win_flop_share"] == (1.0 if kernels.interpreted() else 0.0)
    assert eager["conv_gflop"] == pytest.approx(sum(conv_flop(2)) / 1e9)

    # Graph capture needs CUDA: both arms raise, the row says so and the run goes on.
    assert graph["status"] == "error" and graph["speedup"] is None
    assert graph["error"] == (
        "stock: RuntimeError: CUDA graphs need a CUDA device, got cpu; "
        "im2win: RuntimeError: CUDA graphs need a CUDA device, got cpu"
    )
    assert status == 1  # an error row makes the exit status non-zero, as in the layer suites

    for row in ghost:
        assert row["status"] == "skipped" and row["error"] == "" and row["stock_ms"] is None
        assert row["note"] == f"{MISSING} is not installed (pip install 'im2win[models]')"

    with (out / "results.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == suite.FIELDS and len(table) == 4


def test_toy_run_reports_skips_and_prints_the_table_last(toy_run):
    _, out, stdout = toy_run
    skip = f"ghost: {MISSING} is not installed (pip install 'im2win[models]')"
    assert stdout.startswith(f"skipping {skip}\n")
    table = (out / "table.txt").read_text()
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["model", "mode", "batch", "stock", "ms"]
    share = "100" if kernels.interpreted() else "0"
    assert lines[2].startswith("toy    eager-fp32") and lines[2].split()[-2:] == [share, "ok"]
    assert lines[3].endswith("ERROR")
    assert lines[4].startswith("toy graph-bf16-cl batch 2: stock: RuntimeError")
    assert lines[5:] == [f"skipped {skip}"]
    assert stdout.endswith(table + f"results: {out}/results.jsonl and {out}/results.csv\n")
    summary = (out / "summary.md").read_text()
    assert "| toy | eager-fp32 |" in summary and f"- skipped {skip}" in summary


def _plan(monkeypatch, args: list[str]) -> suite.ModelsPlan:
    """The plan `im2win bench` makes of `args`, without running it."""
    seen = []

    def run_models(plan, provenance, writer):
        seen.append(plan)
        return []

    monkeypatch.setattr(suite, "run_models", run_models)
    monkeypatch.setattr(suite, "bench_device", lambda: torch.device("cpu"))
    with redirect_stdout(io.StringIO()):
        assert main(["bench", "--suite", "models", *args]) == 0
    return seen[0]


def test_defaults_are_every_model_and_mode_at_batch_1_and_64(monkeypatch, tmp_path):
    plan = _plan(monkeypatch, ["--out", str(tmp_path / "a")])
    assert plan.models == [
        "resnet50", "vgg16", "alexnet", "convnext_tiny", "efficientnet_b0", "regnety_016",
    ]  # fmt: skip
    assert plan.modes == [
        "eager-bf16-cl", "eager-fp32", "autocast-bf16", "graph-bf16-cl", "compile-bf16-cl",
        "train-bf16-cl", "train-im2win-bf16-cl", "optimized-bf16-cl", "optimized-graph-bf16-cl",
        "optimized-vs-frozen-bf16-cl", "optimized-graph-vs-frozen-bf16-cl",
        "optimized-frozen-bf16-cl", "optimized-frozen-graph-bf16-cl",
    ]  # fmt: skip
    assert (plan.batches, plan.repeats) == ([1, 64], 20)
    assert _plan(monkeypatch, ["--quick", "--out", str(tmp_path / "b")]).repeats == 5


def test_a_narrow_run(monkeypatch, tmp_path):
    args = "--models resnet50,vgg16 --modes eager-bf16-cl --batch 1 --repeats 3 --out"
    plan = _plan(monkeypatch, [*shlex.split(args), str(tmp_path)])
    assert (plan.models, plan.modes, plan.batches, plan.repeats) == (
        ["resnet50", "vgg16"], ["eager-bf16-cl"], [1], 3,
    )  # fmt: skip
    assert len(plan.cases()) == 2


@pytest.mark.parametrize(
    "option, value", [("--models", "resnet51"), ("--modes", "eager-fp16"), ("--models", "")]
)
def test_unknown_models_and_modes_are_rejected(capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--suite", "models", option, value])
    assert exc.value.code == 2
    assert f"argument {option}: '{value}': choose from" in capsys.readouterr().err


def _one_line_exit(args: list[str]) -> str:
    with pytest.raises(SystemExit) as exc, redirect_stdout(io.StringIO()):
        main(args)
    assert isinstance(exc.value.code, str) and "\n" not in exc.value.code
    return exc.value.code


def test_options_of_the_other_suites_are_refused(tmp_path):
    assert _one_line_exit(["bench", "--modes", "eager-fp32", "--out", str(tmp_path)]) == (
        "im2win bench: --modes needs --suite models"
    )
    message = _one_line_exit(["bench", "--suite", "models", "--layers", "conv1"])
    assert message.startswith("im2win bench: --layers does not apply to --suite models")


def test_without_a_gpu_it_says_it_needs_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(suite, "bench_device", lambda: None)
    out = tmp_path / "out"
    assert _one_line_exit(["bench", "--suite", "models", "--out", str(out)]) == MODELS_NEED_CUDA
    assert "needs a CUDA GPU" in MODELS_NEED_CUDA and not out.exists()


def test_package_problems_are_reasons_not_failures(tmp_path, monkeypatch):
    assert suite.package_problem("") is None
    assert suite.package_problem("math") is None
    assert suite.package_problem(MISSING) == (
        f"{MISSING} is not installed (pip install 'im2win[models]')"
    )
    (tmp_path / "im2win_broken_package.py").write_text("raise RuntimeError('built for torch 1')")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert suite.package_problem("im2win_broken_package") == (
        "im2win_broken_package fails to import: RuntimeError: built for torch 1"
    )
    sys.modules.pop("im2win_broken_package", None)


def test_missing_packages_names_each_model_of_a_missing_package(monkeypatch):
    ghost = suite.ModelSpec("ghost", MISSING, Toy)
    monkeypatch.setitem(suite.MODELS, "ghost", ghost)
    monkeypatch.setitem(suite.MODELS, "ghost2", ghost)
    skipped = suite.missing_packages(["ghost", "ghost2"])
    assert list(skipped) == ["ghost", "ghost2"] and MISSING in skipped["ghost"]


def test_flop_share_counts_the_convs_that_convert_leaves_alone():
    import im2win

    torch.manual_seed(0)
    model = Toy(conv2=OwnForwardConv).eval()
    with pytest.warns(UserWarning, match="conv2"):
        im2win.convert(model)
    x = torch.randn(2, 3, 8, 8)
    share, gflop = suite.flop_share(model, x, suite.MODES["eager-fp32"])
    ours, theirs = conv_flop(2)
    assert gflop == pytest.approx((ours + theirs) / 1e9)
    # conv1 ran an im2win kernel where kernels are interpreted (a GPU machine's CPU runs the
    # plain-PyTorch reference, which is not one).
    assert share == pytest.approx(ours / (ours + theirs) if kernels.interpreted() else 0.0)


def test_train_arm_returns_the_logits_before_the_update():
    torch.manual_seed(0)
    model = Toy()
    x, target = torch.randn(2, 3, 8, 8), torch.tensor([1, 7])
    with torch.no_grad():
        expected = model(x)
    weight = model.conv1.weight.detach().clone()
    arm = TrainArm(model, x, target, autocast=None)
    torch.testing.assert_close(arm.first(), expected)
    assert model.training and not torch.equal(model.conv1.weight, weight)  # one SGD step


def _row(**fields) -> dict:
    return dict.fromkeys(suite.FIELDS) | {"error": "", "status": "ok", "note": ""} | fields


def test_table_and_summary_flag_parity_and_take_the_geomean():
    rows = [
        _row(model="a", mode="m", batch=1, stock_ms=2.0, im2win_ms=1.0, speedup=2.0,
             parity=1e-3, parity_ok=True, im2win_flop_share=0.5),
        _row(model="b", mode="m", batch=1, stock_ms=1.0, im2win_ms=2.0, speedup=0.5,
             parity=0.2, parity_ok=False),
        _row(model="c", mode="m", batch=1, status="error", error="im2win: OOM"),
        _row(model="d", mode="m", batch=1, status="skipped", note="timm is not installed"),
        _row(model="e", mode="m", batch=1, status="skipped", note="timm is not installed"),
    ]  # fmt: skip
    lines = suite.format_table(rows).splitlines()
    assert [line.split()[-1] for line in lines[2:5]] == ["ok", "PARITY", "ERROR"]
    assert "2.00x" in lines[2] and "50" in lines[2] and "0.50x" in lines[3]
    assert lines[5:] == ["c m batch 1: im2win: OOM", "skipped d, e: timm is not installed"]
    info = dict.fromkeys(("gpu", "torch", "triton", "cudnn", "commit", "date"), "x")
    summary = suite.summary(rows, info)
    assert "| a | m | 2.00x |" in summary and "| b | m | 0.50x* |" in summary
    assert "| **geomean** | m | 1.00x |" in summary


def test_optimized_mode_runs_fused_convs(toy_suite, tmp_path):
    """The optimized arm is `im2win.optimize(stock)`: the toy's conv -> relu chains become
    fused calls, whose FLOPs count in the share, and its logits match stock's."""
    out = tmp_path / "out"
    args = shlex.split("bench --suite models --models toy --modes optimized-bf16-cl --batch 2")
    with redirect_stdout(io.StringIO()):
        assert main([*args, "--repeats", "1", "--out", str(out)]) == 0
    (row,) = _rows(out)
    assert row["status"] == "ok" and row["parity_ok"] is True, row["error"]
    assert row["conv_gflop"] == pytest.approx(sum(conv_flop(2)) / 1e9)
    assert row["im2win_flop_share"] == (1.0 if kernels.interpreted() else 0.0)
    model = suite._arms(Toy().eval(), suite.MODES["optimized-bf16-cl"], torch.device("cpu"))[1]
    assert sum(isinstance(m, FusedConv2d) for m in model.modules()) == 2


def test_frozen_runners_compile_the_stock_arm_with_freezing(monkeypatch):
    """The vs-frozen modes run their stock arm through torch.compile with Inductor's
    freezing on during the call (torch.compile stubbed: no Inductor on the CPU suite)."""
    freezing = []

    def compile_stub(model):
        return lambda x: freezing.append(torch._inductor.config.freezing) or model(x)

    monkeypatch.setattr(torch, "compile", compile_stub)
    mode = suite.MODES["optimized-vs-frozen-bf16-cl"]
    assert (mode.runner_of("stock"), mode.runner_of("im2win")) == ("frozen", "eager")
    graphed = suite.MODES["optimized-graph-vs-frozen-bf16-cl"]
    assert (graphed.runner_of("stock"), graphed.runner_of("im2win")) == ("frozen-graph", "graph")
    model, x = Toy().eval(), torch.randn(2, 3, 8, 8)
    arm = make_arm(mode.runner_of("stock"), model, x, None, None)
    assert isinstance(arm, EagerArm) and isinstance(arm.model, Frozen)
    with torch.no_grad():
        assert torch.equal(arm.first(), model(x))
    assert freezing == [True] and torch._inductor.config.freezing is False


def test_train_im2win_mode_runs_the_converted_arm_on_im2win_backward(toy_suite, monkeypatch):
    """train-im2win-bf16-cl: the im2win arm's backward is im2win's (IM2WIN_BACKWARD) and
    only while it runs; the stock arm's is PyTorch's."""
    monkeypatch.delenv("IM2WIN_BACKWARD", raising=False)
    seen = []

    def run_arm(*args):
        seen.append(os.environ["IM2WIN_BACKWARD"])
        raise RuntimeError("stop")  # the environment is what this test is about

    monkeypatch.setattr(suite, "_run_arm", run_arm)
    plan = suite.ModelsPlan(["toy"], ["train-im2win-bf16-cl"], [2], 1, torch.device("cpu"))
    mode = suite.MODES["train-im2win-bf16-cl"]
    fields = suite.compare(Toy().eval(), suite.MODELS["toy"], mode, 2, plan, timer=None)
    assert seen == ["pytorch", "im2win"]  # stock's arm, then im2win's
    assert fields["error"] == "stock: RuntimeError: stop; im2win: RuntimeError: stop"
    assert "IM2WIN_BACKWARD" not in os.environ
