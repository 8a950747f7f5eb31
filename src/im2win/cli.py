"""The `im2win` command: time im2win against cuDNN and other baselines, and draw the figures.

Examples:
  im2win bench            the paper's 12 layers: im2win, every cuDNN algorithm, the other
                          baselines and the paper's kernels, in tiers fp32, tf32 and bf16, NCHW
                          and NHWC; results, table and figures go to bench-runs/<UTC date-time>/
  im2win bench --quick    3 layers, fewer repeats
  im2win bench --suite resnet50 --tiers bf16 --layouts NHWC --out runs/r50-bf16
  im2win bench --layers conv1,conv8 --methods im2win,cudnn-IMPLICIT_GEMM --batch 64
  im2win bench --layers conv1-mini,conv5-mini    the CPU run's miniature layers, on a GPU
  im2win bench --suite models     whole networks (torchvision, timm), stock against
                                  im2win.convert (or optimize), in every mode
                                  (eager, graphs, compiled, training) at batch 1 and 64
  im2win bench --suite models --models resnet50 --modes eager-bf16-cl --batch 1
  im2win ablate           the paper kernel with each optimisation removed in turn (fp32, NCHW)
  im2win figures DIR      figures and summary tables from a finished run's results.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from . import __version__
from .bench import models as model_suite
from .bench.env import provenance
from .bench.grads import DIRECTIONS, GRAD_METHODS
from .bench.methods import METHODS
from .bench.report import ResultWriter, format_table
from .bench.run import LAYOUTS, BenchPlan, run_bench
from .bench.suites import LAYERS_BY_NAME, MINI, SUITES, select_layers
from .bench.tiers import TIERS

GPU_DEFAULTS = dict(batch=128, tiers="fp32,tf32,bf16", repeats=20, quick_repeats=5)
CPU_DEFAULTS = dict(batch=2, tiers="fp32,bf16", repeats=3, quick_repeats=2)
NO_GPU_NOTICE = (
    "No CUDA GPU: running a reduced CPU benchmark ({how}), not representative of GPU speed.\n"
    "Miniature copies of the layers (NAME-mini), batch {batch}; on a GPU `im2win bench` runs "
    "them at full size, batch 128."
)
MODEL_BATCHES = model_suite.DEFAULT_BATCHES  # --suite models without --batch
MODELS_NEED_CUDA = (
    "im2win bench --suite models: needs a CUDA GPU (torch.cuda.is_available() is False); "
    "whole networks in Triton's interpreter would take hours. Without a GPU, "
    "`im2win bench` runs the layer suites' miniatures"
)
RUNS_DIR = Path("bench-runs")  # the default --out's parent, relative to the current directory


def _names(choices: list[str], shown: str | None = None) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list, each item one of `choices` (an error
    lists `shown`, else the choices)."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {shown or ', '.join(choices)}")
        return items

    return parse


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    error = argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    try:
        value = int(text)
    except ValueError:
        raise error from None
    if value < 1:
        raise error
    return value


def _add_run_options(parser: argparse.ArgumentParser, models: bool = False) -> None:
    """The options `bench` and `ablate` share (`models`: --suite models too)."""
    parser.add_argument(
        "--suite",
        choices=[*SUITES, "models"] if models else list(SUITES),
        default="paper",
        help="layer set: the paper's 12, ResNet-50's convolutions, or depthwise/dilated/"
        "grouped extras (default paper)"
        + ("; or models: whole networks, stock against im2win.convert" if models else ""),
    )
    layer_names = [*LAYERS_BY_NAME, *(name + MINI for name in LAYERS_BY_NAME)]
    parser.add_argument(
        "--layers",
        type=_names(layer_names, f"{', '.join(LAYERS_BY_NAME)} (each also as NAME{MINI})"),
        help=f"comma-separated layers of any suite; NAME{MINI} is NAME's miniature, the size a "
        "CPU run uses (default: the suite's, all on a GPU, 3 with --quick or on a CPU)",
    )
    gpu, cpu = GPU_DEFAULTS, CPU_DEFAULTS
    parser.add_argument(
        "--batch",
        type=_positive_int,
        help=f"batch size (default {gpu['batch']} on a GPU, {cpu['batch']} on a CPU"
        + (f"; --suite models: {' and '.join(map(str, MODEL_BATCHES))})" if models else ")"),
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        help=f"timed runs per measurement, median taken (default {gpu['repeats']} on a GPU, "
        f"{cpu['repeats']} on a CPU; {gpu['quick_repeats']} and {cpu['quick_repeats']} "
        "with bench --quick)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"output directory, new or empty (default {RUNS_DIR}/<UTC date-time>/ in the "
        "current directory)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out, replacing the files of the same name",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="im2win",
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"im2win {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser(
        "bench",
        help="time and check im2win against every cuDNN algorithm and other baselines",
        description="Time im2win and the methods it is compared with (every cuDNN forward "
        "algorithm, torch's conv2d, im2col + cuBLAS, unfold + matmul, the paper's CUDA kernel, "
        "its ablation and its direct and im2win baselines; see --methods) on a suite's layers, "
        "in each precision tier and layout. Each result is checked against a float64 reference "
        "within its tier's error bound and becomes a row of results.jsonl and results.csv; "
        "the run ends with a table, figures and summary.md. All of it goes to --out (default "
        f"{RUNS_DIR}/<UTC date-time>/). Without a GPU it runs miniature layers on the CPU, "
        "where the CUDA-only methods are recorded as unsupported.",
    )
    _add_run_options(bench, models=True)
    bench.add_argument(
        "--quick",
        action="store_true",
        help="3 layers unless --layers is given (paper: conv1,conv5,conv11); fewer repeats",
    )
    bench.add_argument(
        "--tiers",
        type=_names(list(TIERS)),
        help=f"precision tiers (default {GPU_DEFAULTS['tiers']} on a GPU, "
        f"{CPU_DEFAULTS['tiers']} on a CPU); fp32 includes im2win-tf32x3",
    )
    bench.add_argument(
        "--layouts",
        type=_names(LAYOUTS),
        default=list(LAYOUTS),
        help="NCHW and/or NHWC (channels_last) (default both)",
    )
    defaults = [name for name, method in METHODS.items() if method.default]
    bench.add_argument(
        "--methods",
        type=_names(list(METHODS)),
        default=defaults,
        help=f"comma-separated methods to compare, from {', '.join(METHODS)} (default all "
        f"but {', '.join(name for name in METHODS if name not in defaults)})",
    )
    bench.add_argument(
        "--directions",
        type=_names(list(DIRECTIONS)),
        default=["fprop"],
        help="fprop (the forward, default), dgrad (input gradient), wgrad (weight gradient); "
        f"the gradients compare {' and '.join(GRAD_METHODS)}, whatever --methods says",
    )
    bench.add_argument(
        "--models",
        type=_names(list(model_suite.MODELS)),
        help="with --suite models: comma-separated networks, from "
        f"{', '.join(model_suite.MODELS)} (default all; torchvision and timm, random weights)",
    )
    bench.add_argument(
        "--modes",
        type=_names(list(model_suite.MODES)),
        help="with --suite models: comma-separated ways to run them, from "
        f"{', '.join(model_suite.MODES)} (default all)",
    )
    bench.set_defaults(run=_bench)

    ablate = commands.add_parser(
        "ablate",
        help="the paper kernel with each optimisation removed in turn (fp32, NCHW; needs a GPU)",
        description="Time the paper's CUDA kernel (paper-kernel) and its variants without "
        "prefetching, vector loads, the register micro-kernel or shared memory, in fp32 NCHW "
        "on a suite's layers; then draw ablation.png and write ablation.md, in --out as for "
        "bench. Takes bench's --suite, --layers, --batch, --repeats, --out and --overwrite. "
        "Without a GPU every measurement is recorded as unsupported.",
    )
    _add_run_options(ablate)
    ablate.set_defaults(
        run=_ablate,
        quick=False,
        tiers=["fp32"],
        layouts=["NCHW"],
        methods=ABLATION_METHODS,
        directions=["fprop"],
    )

    figures = commands.add_parser(
        "figures",
        help="redraw figures and summary tables from a finished run's results.jsonl",
        description="Read a run's results.jsonl and write next to it: TFLOPS and extra-memory "
        "figures per tier and layout (PNG, needs matplotlib), summary.md, and ablation.png "
        "and ablation.md when the paper kernel's variants were measured. Only rows with "
        "status ok are drawn.",
    )
    figures.add_argument("results", type=Path, help="a results.jsonl or the directory holding it")
    figures.set_defaults(run=_figures)
    return parser


ABLATION_METHODS = [name for name in METHODS if name.startswith("paper-kernel")]


def _out_dir(args: argparse.Namespace) -> Path:
    """--out, or a new RUNS_DIR/<UTC stamp>; an existing one must be an empty directory
    unless --overwrite. Checked before the run, which may take hours."""
    out = args.out
    if out is None:
        out = RUNS_DIR / datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise SystemExit(f"im2win {args.command}: --out {out} is a file; expected a directory")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(
            f"im2win {args.command}: --out {out} is not empty; expected a new or empty "
            "directory (or pass --overwrite)"
        )
    return out


def _bench(args: argparse.Namespace, command: str) -> int:
    if args.suite == "models":
        return _bench_models(args, command)
    for option in ("models", "modes"):
        if getattr(args, option, None) is not None:
            raise SystemExit(f"im2win {args.command}: --{option} needs --suite models")
    gpu = torch.cuda.is_available()
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    out = _out_dir(args)
    suite, layers = select_layers(args.layers, quick=args.quick, gpu=gpu, suite=args.suite)
    repeats = args.repeats
    if repeats is None:
        repeats = defaults["quick_repeats" if args.quick else "repeats"]
    batch = defaults["batch"] if args.batch is None else args.batch
    tiers = args.tiers or defaults["tiers"].split(",")
    plan = BenchPlan(
        suite=suite,
        layers=layers,
        tiers=[TIERS[name] for name in tiers],
        layouts=args.layouts,
        methods=[METHODS[name] for name in args.methods],
        batch=batch,
        repeats=repeats,
        device=torch.device("cuda" if gpu else "cpu"),
        directions=tuple(args.directions),
    )
    if not plan.cases():
        raise SystemExit(
            f"im2win {args.command}: none of --methods {','.join(args.methods)} serves "
            f"--tiers {','.join(tiers)}"
        )
    if not gpu:
        how = f"im2win backend: {METHODS['im2win'].backend(plan.device)}"
        print(NO_GPU_NOTICE.format(how=how, batch=batch), flush=True)
    info = provenance(plan.device, command)
    with ResultWriter(out) as writer:
        rows = run_bench(plan, info, writer)
    table = format_table(rows)
    (out / "table.txt").write_text(table)
    forward = [row for row in rows if row["direction"] == "fprop"]  # the figures' subject
    _draw(forward, out, ablation=args.run is _ablate)
    versions = f"torch {info['torch']} | triton {info['triton']} | cuDNN {info['cudnn']}"
    print(f"\nGPU {info['gpu']} | {versions} | commit {info['commit']} | {suite}, batch {batch}")
    print(table, end="")
    print(f"results: {writer.jsonl_path} and {writer.csv_path}")
    return 1 if any(row["error"] for row in rows) else 0


def _bench_models(args: argparse.Namespace, command: str) -> int:
    """--suite models: each network, stock and converted, per mode and batch."""
    if args.directions != ["fprop"]:
        raise SystemExit("im2win bench: --directions does not apply to --suite models")
    for option in ("layers", "tiers"):
        if getattr(args, option) is not None:
            raise SystemExit(
                f"im2win bench: --{option} does not apply to --suite models (it takes --models, "
                "--modes, --batch, --repeats)"
            )
    device = model_suite.bench_device()
    if device is None:
        raise SystemExit(MODELS_NEED_CUDA)
    out = _out_dir(args)
    repeats = args.repeats
    if repeats is None:
        repeats = GPU_DEFAULTS["quick_repeats" if args.quick else "repeats"]
    plan = model_suite.ModelsPlan(
        models=args.models or list(model_suite.MODELS),
        modes=args.modes or list(model_suite.MODES),
        batches=list(MODEL_BATCHES) if args.batch is None else [args.batch],
        repeats=repeats,
        device=device,
    )
    for model, reason in model_suite.missing_packages(plan.models).items():
        print(f"skipping {model}: {reason}", flush=True)
    info = provenance(device, command)
    with ResultWriter(out, model_suite.FIELDS) as writer:
        rows = model_suite.run_models(plan, info, writer)
    table = model_suite.format_table(rows)
    (out / "table.txt").write_text(table)
    (out / "summary.md").write_text(model_suite.summary(rows, info))
    versions = f"torch {info['torch']} | triton {info['triton']} | cuDNN {info['cudnn']}"
    batches = ",".join(map(str, plan.batches))
    print(f"\nGPU {info['gpu']} | {versions} | commit {info['commit']} | models, batch {batches}")
    print(table, end="")
    print(f"results: {writer.jsonl_path} and {writer.csv_path}")
    return 1 if any(row["error"] for row in rows) else 0


def _ablate(args: argparse.Namespace, command: str) -> int:
    return _bench(args, command)


def _draw(rows: list[dict], out: Path, ablation: bool = False) -> None:
    """Figures and markdown summaries next to the results; a note if matplotlib is absent."""
    from .bench import figures

    (out / "summary.md").write_text(figures.summary_table(rows))
    ok = [row for row in rows if figures.row_status(row) == "ok"]
    if not ok:
        print("figures: none, no measurement is ok")
        return
    try:
        drawn = [figures.draw_ablation(rows, out)] if ablation else figures.draw_all(rows, out)
        if any(row["method"] in ABLATION_METHODS[1:] for row in rows) and not ablation:
            drawn.append(figures.draw_ablation(rows, out))
    except (RuntimeError, ValueError) as exc:  # no matplotlib, or nothing drawable
        print(f"figures skipped: {exc}")
        return
    if any(row["method"] in ABLATION_METHODS for row in ok):
        (out / "ablation.md").write_text(figures.ablation_table(rows))
    print(f"figures: {', '.join(path.name for path in drawn)}")


def _figures(args: argparse.Namespace, command: str) -> int:
    from .bench import figures

    try:
        rows = figures.load_rows(args.results)
    except (OSError, ValueError) as exc:  # missing, unreadable or malformed
        raise SystemExit(f"im2win figures: {exc}") from None
    if not rows:
        raise SystemExit(f"im2win figures: {args.results} holds no result rows")
    out = args.results if args.results.is_dir() else args.results.parent
    _draw(rows, out)
    return 0


def _restart_with_interpreter(argv: list[str]) -> None:
    """Re-run this command with TRITON_INTERPRET=1, so that without a GPU it times the Triton
    kernels (in the interpreter) rather than the reference. The variable only works when set
    before Triton is imported, which the package's import has already done."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    os.execve(sys.executable, [sys.executable, "-m", "im2win.cli", *argv], env)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `im2win` console script; `argv` defaults to the command line."""
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    # An explicit TRITON_INTERPRET (even 0) is respected; only an unset one is filled in.
    unset = "TRITON_INTERPRET" not in os.environ
    interpret = args.command == "bench" and args.suite != "models"  # models need CUDA
    if from_command_line and unset and interpret and not torch.cuda.is_available():
        _restart_with_interpreter(argv)
    return args.run(args, shlex.join(["im2win", *argv]))


if __name__ == "__main__":
    sys.exit(main())
