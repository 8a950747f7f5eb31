"""The `im2win` command: measure im2win against every baseline, and redraw the paper's figures.

Examples:
  im2win bench             all 12 paper layers, every default method, figures at the end
  im2win bench --quick     3 layers, fewer repeats
  im2win bench --layers conv1,conv8 --tiers fp32,bf16 --layouts NHWC --batch 64
  im2win ablate            the paper kernel's ablation (fp32, NCHW) and its figure
  im2win figures DIR       figures and summary tables from a finished run's results.jsonl
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

from .bench.env import provenance
from .bench.methods import METHODS
from .bench.report import ResultWriter, format_table
from .bench.run import LAYOUTS, BenchPlan, run_bench
from .bench.suites import LAYERS_BY_NAME, SUITES, select_layers
from .bench.tiers import TIERS

GPU_DEFAULTS = dict(batch=128, tiers="fp32,tf32,bf16", repeats=20, quick_repeats=5)
CPU_DEFAULTS = dict(batch=2, tiers="fp32,bf16", repeats=3, quick_repeats=2)
NO_GPU_NOTICE = (
    "No CUDA GPU: running a reduced CPU benchmark ({how}), not representative of GPU speed.\n"
    "Miniature copies of the paper's layers, batch {batch}; on a GPU `im2win bench` runs all "
    "12 layers at batch 128."
)


def _names(choices: list[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list, each item one of `choices`."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(choices)}")
        return items

    return parse


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options `bench` and `ablate` share."""
    parser.add_argument(
        "--suite",
        choices=list(SUITES),
        default="paper",
        help="layer set: the paper's 12, ResNet-50's convolutions, or depthwise/dilated/"
        "grouped extras (default paper)",
    )
    parser.add_argument(
        "--layers",
        type=_names(list(LAYERS_BY_NAME)),
        help="comma-separated layers of any suite (default: the suite's, all on a GPU)",
    )
    parser.add_argument("--batch", type=int, help="batch size (default 128 on a GPU, 2 on a CPU)")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (median taken)")
    parser.add_argument(
        "--out", type=Path, help="output directory (default results/bench-<UTC date and time>)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="im2win", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser(
        "bench",
        help="time im2win and torch's conv2d on the paper's layers",
        description="Time, check and record im2win against torch.nn.functional.conv2d. "
        "Each measurement becomes a row of results.jsonl and results.csv in --out.",
    )
    _add_run_options(bench)
    bench.add_argument(
        "--quick",
        action="store_true",
        help="layers conv1,conv5,conv11 unless --layers is given; fewer repeats",
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
        help=f"methods to compare, from {','.join(METHODS)} (default {','.join(defaults)})",
    )
    bench.set_defaults(run=_bench)

    ablate = commands.add_parser(
        "ablate",
        help="the paper kernel's ablation: each optimisation removed in turn (fp32, NCHW)",
        description="Time paper-kernel and its variants on the paper's layers, then draw "
        "ablation.png. Takes --layers, --batch, --repeats and --out like bench.",
    )
    _add_run_options(ablate)
    ablate.set_defaults(
        run=_ablate, quick=False, tiers=["fp32"], layouts=["NCHW"], methods=ABLATION_METHODS
    )

    figures = commands.add_parser(
        "figures", help="draw figures and summary tables from a results directory"
    )
    figures.add_argument("results", type=Path, help="a results.jsonl or the directory holding it")
    figures.set_defaults(run=_figures)
    return parser


ABLATION_METHODS = [name for name in METHODS if name.startswith("paper-kernel")]


def _bench(args: argparse.Namespace, command: str) -> int:
    gpu = torch.cuda.is_available()
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    suite, layers = select_layers(args.layers, quick=args.quick, gpu=gpu, suite=args.suite)
    repeats = args.repeats or defaults["quick_repeats" if args.quick else "repeats"]
    batch = args.batch or defaults["batch"]
    if batch < 1 or repeats < 1:
        raise SystemExit("im2win bench: --batch and --repeats must be at least 1")
    plan = BenchPlan(
        suite=suite,
        layers=layers,
        tiers=[TIERS[name] for name in args.tiers or defaults["tiers"].split(",")],
        layouts=args.layouts,
        methods=[METHODS[name] for name in args.methods],
        batch=batch,
        repeats=repeats,
        device=torch.device("cuda" if gpu else "cpu"),
    )
    if not gpu:
        how = f"im2win backend: {METHODS['im2win'].backend(plan.device)}"
        print(NO_GPU_NOTICE.format(how=how, batch=batch), flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("results") / f"bench-{stamp}"
    info = provenance(plan.device, command)
    with ResultWriter(out) as writer:
        rows = run_bench(plan, info, writer)
    table = format_table(rows)
    (out / "table.txt").write_text(table)
    _draw(rows, out, ablation=args.run is _ablate)
    versions = f"torch {info['torch']} | triton {info['triton']} | cuDNN {info['cudnn']}"
    print(f"\nGPU {info['gpu']} | {versions} | commit {info['commit']} | {suite}, batch {batch}")
    print(table, end="")
    print(f"results: {writer.jsonl_path} and {writer.csv_path}")
    return 1 if any(row["error"] for row in rows) else 0


def _ablate(args: argparse.Namespace, command: str) -> int:
    return _bench(args, command)


def _draw(rows: list[dict], out: Path, ablation: bool = False) -> None:
    """Figures and markdown summaries next to the results; a note if matplotlib is absent."""
    from .bench import figures

    (out / "summary.md").write_text(figures.summary_table(rows))
    try:
        drawn = [figures.draw_ablation(rows, out)] if ablation else figures.draw_all(rows, out)
        if any(row["method"] in ABLATION_METHODS[1:] for row in rows) and not ablation:
            drawn.append(figures.draw_ablation(rows, out))
    except (RuntimeError, ValueError) as exc:  # no matplotlib, or nothing drawable (CPU)
        print(f"figures skipped: {exc}")
        return
    if any(row["method"] in ABLATION_METHODS and row["status"] == "ok" for row in rows):
        (out / "ablation.md").write_text(figures.ablation_table(rows))
    print(f"figures: {', '.join(path.name for path in drawn)}")


def _figures(args: argparse.Namespace, command: str) -> int:
    from .bench import figures

    rows = figures.load_rows(args.results)
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
    if from_command_line and unset and args.command == "bench" and not torch.cuda.is_available():
        _restart_with_interpreter(argv)
    return args.run(args, shlex.join(["im2win", *argv]))


if __name__ == "__main__":
    sys.exit(main())
