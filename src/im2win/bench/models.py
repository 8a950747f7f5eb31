"""`im2win bench --suite models`: whole networks, stock PyTorch against `im2win.convert`.

For each model, mode and batch, two arms run in the same process from the same random
weights: stock (PyTorch's own convolution, `cudnn.benchmark` on) and im2win (a deep copy of
the stock model through `im2win.convert`). fp32 is IEEE in both arms: TF32 is off for the
whole run. Each comparison is one result row: median time of each arm and the speedup (stock
time over im2win time), the logits' relative difference (parity), the first call's wall time,
the allocator peak of one call, and the share of the convolution FLOPs that im2win kernels
computed. The models come from torchvision and timm (the `models` extra); a model whose
package is missing is reported and skipped, the others run.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

import im2win
from im2win.fusion import FusedConv2d
from im2win.plan import trace

from .arms import autocast_context, make_arm
from .measure import MIB, relative_error
from .timing import host_ms, timer_for

DEFAULT_BATCHES = (1, 64)
INSTALL_HINT = "pip install 'im2win[models]'"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    package: str  # the module `build` imports ('' for none): checked before the run
    build: Callable[[], torch.nn.Module]  # random weights, nothing downloaded
    resolution: int = 224  # input height and width, 3 channels
    classes: int = 1000


def _torchvision(name: str) -> Callable[[], torch.nn.Module]:
    return lambda: getattr(importlib.import_module("torchvision.models"), name)(weights=None)


def _timm(name: str) -> Callable[[], torch.nn.Module]:
    return lambda: importlib.import_module("timm").create_model(name, pretrained=False)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("resnet50", "torchvision", _torchvision("resnet50")),
        ModelSpec("vgg16", "torchvision", _torchvision("vgg16")),
        ModelSpec("alexnet", "torchvision", _torchvision("alexnet")),
        ModelSpec("convnext_tiny", "timm", _timm("convnext_tiny")),
        ModelSpec("efficientnet_b0", "timm", _timm("efficientnet_b0")),
        ModelSpec("regnety_016", "timm", _timm("regnety_016")),
    )
}


@dataclass(frozen=True)
class Mode:
    name: str
    runner: str  # 'eager', 'graph', 'compile', 'train', 'frozen' or 'frozen-graph' (bench/arms.py)
    dtype: torch.dtype  # parameters and input
    channels_last: bool
    tolerance: float  # parity bound: random-init deep nets amplify rounding
    autocast: torch.dtype | None = None
    about: str = ""
    optimized: bool = False  # the im2win arm is `im2win.optimize(stock)`, not `convert`
    stock_runner: str | None = None  # the stock arm's runner, where not `runner`
    backward: str = "pytorch"  # the im2win arm's IM2WIN_BACKWARD (autograd.py) while it runs

    def runner_of(self, arm: str) -> str:
        return self.stock_runner or self.runner if arm == "stock" else self.runner


# Random-init deep nets amplify rounding, batch statistics (training) most: two correct bf16
# convolutions of different summation order differ by up to these bounds at the logits.
_FP32, _BF16, _TRAIN = 1e-4, 5e-2, 1e-1
MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("eager-bf16-cl", "eager", torch.bfloat16, True, _BF16,
             about="bf16 model and input, channels_last, no_grad"),
        Mode("eager-fp32", "eager", torch.float32, False, _FP32,
             about="fp32 model and input, NCHW, IEEE (TF32 off), no_grad"),
        Mode("autocast-bf16", "eager", torch.float32, False, _BF16, autocast=torch.bfloat16,
             about="fp32 NCHW model and input under torch.autocast(bfloat16), no_grad"),
        Mode("graph-bf16-cl", "graph", torch.bfloat16, True, _BF16,
             about="eager-bf16-cl captured in a CUDA graph (torch.cuda.CUDAGraph), replayed"),
        Mode("compile-bf16-cl", "compile", torch.bfloat16, True, _BF16,
             about="eager-bf16-cl through torch.compile (default mode)"),
        Mode("train-bf16-cl", "train", torch.bfloat16, True, _TRAIN,
             about="one SGD step (forward, cross-entropy, backward, step), bf16 channels_last"),
        Mode("train-im2win-bf16-cl", "train", torch.bfloat16, True, _TRAIN, backward="im2win",
             about="train-bf16-cl, the im2win arm's backward on im2win's kernels too"),
        Mode("optimized-bf16-cl", "eager", torch.bfloat16, True, _BF16, optimized=True,
             about="eager-bf16-cl, the im2win arm im2win.optimize'd (fused conv chains)"),
        Mode("optimized-graph-bf16-cl", "graph", torch.bfloat16, True, _BF16, optimized=True,
             about="optimized-bf16-cl captured in a CUDA graph, replayed"),
        Mode("optimized-vs-frozen-bf16-cl", "eager", torch.bfloat16, True, _BF16,
             optimized=True, stock_runner="frozen",
             about="optimized-bf16-cl against stock through torch.compile with freezing"),
        Mode("optimized-graph-vs-frozen-bf16-cl", "graph", torch.bfloat16, True, _BF16,
             optimized=True, stock_runner="frozen-graph",
             about="optimized-graph-bf16-cl against the frozen stock in a CUDA graph"),
        Mode("optimized-frozen-bf16-cl", "frozen", torch.bfloat16, True, _BF16, optimized=True,
             about="both arms through torch.compile with freezing, the im2win arm optimized"),
        Mode("optimized-frozen-graph-bf16-cl", "frozen-graph", torch.bfloat16, True, _BF16,
             optimized=True, about="optimized-frozen-bf16-cl captured in CUDA graphs"),
    )
}  # fmt: skip

# One row per (model, mode, batch). Provenance goes in every row, as in the layer suites.
FIELDS = (
    "suite", "model", "mode", "batch", "dtype", "layout", "device",
    "stock_ms", "im2win_ms", "speedup", "parity", "parity_tol", "parity_ok",
    "stock_host_ms", "im2win_host_ms", "stock_first_s", "im2win_first_s",
    "stock_peak_mib", "im2win_peak_mib",
    "im2win_flop_share", "conv_gflop", "status", "repeats", "error", "note",
    "gpu", "torch", "triton", "cudnn", "commit", "date", "command",
)  # fmt: skip


@dataclass(frozen=True)
class ModelsPlan:
    models: list[str]
    modes: list[str]
    batches: list[int]
    repeats: int
    device: torch.device

    def cases(self) -> list[tuple[str, str, int]]:
        """Every (model, mode, batch) to compare, in run order."""
        return [(m, mode, b) for m in self.models for mode in self.modes for b in self.batches]


def bench_device() -> torch.device | None:
    """The device the suite runs on: the current CUDA GPU, or None without one."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None


def package_problem(package: str) -> str | None:
    """Why `package` cannot be used (not installed, or fails to import), or None."""
    if not package:
        return None
    try:
        importlib.import_module(package)
    except ImportError:
        return f"{package} is not installed ({INSTALL_HINT})"
    except Exception as exc:  # installed but broken (built for another torch, say)
        return f"{package} fails to import: {type(exc).__name__}: {exc}"[:300]
    return None


def missing_packages(models: list[str]) -> dict[str, str]:
    """{model: why it is skipped} for the models whose package cannot be used."""
    problems = {pkg: package_problem(pkg) for pkg in {MODELS[m].package for m in models}}
    return {m: problems[MODELS[m].package] for m in models if problems[MODELS[m].package]}


@contextlib.contextmanager
def stock_settings():
    """cuDNN's benchmark search on, TF32 off for convolutions and matmuls (fp32 is IEEE in
    both arms: im2win's fp32 follows the matmul precision); restored after. Through
    PyTorch's per-op precision API only, as im2win itself sets it: mixing it with the legacy
    `allow_tf32` flags raises."""
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.conv.fp32_precision, torch.get_float32_matmul_precision()
    cudnn.benchmark, cudnn.conv.fp32_precision = True, "ieee"
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.conv.fp32_precision = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def _inputs(spec: ModelSpec, mode: Mode, batch: int, device: torch.device):
    """The same images and labels for both arms and every run (CPU generator, seed 0)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, spec.resolution, spec.resolution, generator=gen)
    target = torch.randint(0, spec.classes, (batch,), generator=gen)
    fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
    return x.to(device, mode.dtype, memory_format=fmt), target.to(device)


def _arms(base: torch.nn.Module, mode: Mode, device: torch.device):
    """Stock and converted (or optimized) models for one comparison, each with its own
    parameters."""
    fmt = torch.channels_last if mode.channels_last else torch.contiguous_format
    stock = copy.deepcopy(base).to(device=device, dtype=mode.dtype, memory_format=fmt)
    if mode.optimized:  # a new model from a copy; what it leaves alone is in its warning
        return stock, im2win.optimize(stock.eval())
    return stock, im2win.convert(copy.deepcopy(stock))


@contextlib.contextmanager
def im2win_backward_set_to(name: str):
    """IM2WIN_BACKWARD set to `name` inside, as it was after."""
    saved = os.environ.get("IM2WIN_BACKWARD")
    os.environ["IM2WIN_BACKWARD"] = name
    try:
        yield
    finally:
        if saved is None:
            del os.environ["IM2WIN_BACKWARD"]
        else:
            os.environ["IM2WIN_BACKWARD"] = saved


def _run_arm(model, runner: str, mode: Mode, x, target, repeats: int, timer) -> dict:
    """First call (seconds, logits), then median time and peak of one call."""
    if _compiles(runner):
        torch._dynamo.reset()  # each arm compiles from scratch: its first call pays it all
    arm = make_arm(runner, model, x, target, mode.autocast)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else lambda: None
    sync()
    torch.manual_seed(0)  # same dropout masks in both arms' first training step
    start = time.perf_counter()
    y = arm.first()
    sync()
    first_s = time.perf_counter() - start
    ms = timer(arm.step, repeats)
    host = host_ms(arm.step, repeats, x.device)
    peak = arm.peak_bytes()
    return {"first_s": first_s, "ms": ms, "host_ms": host,
            "peak_mib": None if peak is None else peak / MIB, "y": y.detach().float()}  # fmt: skip


def flop_share(model: torch.nn.Module, x: torch.Tensor, mode: Mode) -> tuple[float | None, float]:
    """(share of the convolution FLOPs an im2win kernel computed, convolution GFLOP) in one
    eager forward of the converted `model`.

    The total counts every `nn.Conv2d` and fused conv (those left alone too); the im2win part,
    the calls `im2win.plan.trace()` saw that ran an im2win kernel (not PyTorch's own
    convolution as a fallback). The share is None for a model without convolutions.
    """
    total = 0

    def count(module, inputs, output):
        nonlocal total
        total += 2 * output.numel() * math.prod(module.weight.shape[1:])  # 2 N K P Q Cg R S

    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, FusedConv2d))]
    hooks = [conv.register_forward_hook(count) for conv in convs]
    try:
        with trace() as plans, torch.no_grad(), autocast_context(x.device, mode.autocast):
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    if total == 0:
        return None, 0.0
    ours = sum(2 * p.problem.outputs * p.problem.reduction for p in plans if p.uses_im2win)
    return ours / total, total / 1e9


def _row(plan: ModelsPlan, model: str, mode: Mode, batch: int) -> dict:
    return dict.fromkeys(FIELDS) | {
        "suite": "models", "model": model, "mode": mode.name, "batch": batch,
        "dtype": str(mode.dtype).removeprefix("torch.")
        + (f"+autocast-{str(mode.autocast).removeprefix('torch.')}" if mode.autocast else ""),
        "layout": "NHWC" if mode.channels_last else "NCHW", "device": plan.device.type,
        "parity_tol": mode.tolerance, "parity_ok": False, "status": "error",
        "repeats": plan.repeats, "error": "", "note": "",
    }  # fmt: skip


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".split("\n")[0][:300]


def compare(base: torch.nn.Module, spec: ModelSpec, mode: Mode, batch: int, plan, timer) -> dict:
    """Both arms of one (model, mode, batch): the row's measured fields."""
    x, target = _inputs(spec, mode, batch, plan.device)
    stock, converted = _arms(base, mode, plan.device)
    result, errors = {}, []
    for arm, model in (("stock", stock), ("im2win", converted)):
        backward = mode.backward if arm == "im2win" else "pytorch"
        try:
            with im2win_backward_set_to(backward):
                result[arm] = _run_arm(model, mode.runner_of(arm), mode, x, target,
                                       plan.repeats, timer)  # fmt: skip
        except Exception as exc:  # one arm failing must not cost the other, or the run
            errors.append(f"{arm}: {_error(exc)}")
            _free(plan.device)
    fields = {"error": "; ".join(errors)[:600], "status": "error" if errors else "ok"}
    for arm, r in result.items():
        fields |= {f"{arm}_ms": r["ms"], f"{arm}_host_ms": r["host_ms"],
                   f"{arm}_first_s": r["first_s"],
                   f"{arm}_peak_mib": r["peak_mib"]}  # fmt: skip
    if len(result) == 2:
        fields["speedup"] = result["stock"]["ms"] / result["im2win"]["ms"]
        fields["parity"] = relative_error(result["im2win"]["y"], result["stock"]["y"])
        fields["parity_ok"] = fields["parity"] <= mode.tolerance  # False for NaN too
    if "im2win" in result:  # else the same forward would fail again
        try:
            fields["im2win_flop_share"], fields["conv_gflop"] = flop_share(converted, x, mode)
        except Exception as exc:  # a column, not the comparison
            fields["note"] = f"im2win_flop_share: {_error(exc)}"[:300]
    if _compiles(mode.runner) or _compiles(mode.runner_of("stock")):
        torch._dynamo.reset()  # let go of both compiled models and their graphs
    return fields


def _compiles(runner: str) -> bool:
    return runner == "compile" or runner.startswith("frozen")


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _build(spec: ModelSpec) -> torch.nn.Module:
    torch.manual_seed(0)  # the same random weights in every run
    return spec.build().eval()


def run_models(plan: ModelsPlan, provenance: dict[str, str], writer) -> list[dict]:
    """Compare every case of `plan`; each row is written as soon as it is measured.

    A model whose package is missing gets rows with status 'skipped' and the reason as note.
    """
    skipped = missing_packages(plan.models)
    timer = timer_for(plan.device)
    cases = plan.cases()
    progress = tqdm(total=len(cases), file=sys.stderr, unit="case", dynamic_ncols=True)
    rows: list[dict] = []
    base, built, build_error = None, None, ""
    with stock_settings():
        for name, mode_name, batch in cases:
            spec, mode = MODELS[name], MODES[mode_name]
            progress.set_description(f"{name} {mode_name} batch {batch}")
            row = _row(plan, name, mode, batch)
            if name in skipped:
                row |= {"status": "skipped", "note": skipped[name]}
            else:
                if built != name:  # cases run model by model: build each once
                    base, build_error = None, ""
                    _free(plan.device)
                    try:
                        base = _build(spec)
                    except Exception as exc:
                        build_error = f"building {name}: {_error(exc)}"
                    built = name
                if base is None:
                    row["error"] = build_error
                else:
                    row |= compare(base, spec, mode, batch, plan, timer)
                    _free(plan.device)
            row |= provenance
            writer.write(row)
            rows.append(row)
            progress.update()
    progress.close()
    return rows


# ---------------------------------------------------------------------------- reporting


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pair(row: dict, key: str, spec: str) -> str:
    return f"{_num(row['stock_' + key], spec)}/{_num(row['im2win_' + key], spec)}"


def _check(row: dict) -> str:
    if row["error"]:
        return "ERROR"
    return "ok" if row["parity_ok"] else "PARITY"


COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("model", lambda r: r["model"]),
    ("mode", lambda r: r["mode"]),
    ("batch", lambda r: str(r["batch"])),
    ("stock ms", lambda r: _num(r["stock_ms"], ".3f")),
    ("im2win ms", lambda r: _num(r["im2win_ms"], ".3f")),
    ("speedup", lambda r: _num(r["speedup"], ".2f") + ("x" if r["speedup"] else "")),
    ("parity", lambda r: _num(r["parity"], ".1e")),
    ("host ms", lambda r: _pair(r, "host_ms", ".2f")),
    ("first s", lambda r: _pair(r, "first_s", ".2f")),
    ("peak MiB", lambda r: _pair(r, "peak_mib", ".0f")),
    ("im2win FLOP %", lambda r: _num(r["im2win_flop_share"] and 100 * r["im2win_flop_share"],
                                     ".0f")),
    ("check", _check),
)  # fmt: skip


def _skips(rows: list[dict]) -> list[str]:
    """'skipped MODEL, ...: reason', one line per reason."""
    by_reason: dict[str, list[str]] = {}
    for row in rows:
        if row["status"] == "skipped" and row["model"] not in by_reason.get(row["note"], []):
            by_reason.setdefault(row["note"], []).append(row["model"])
    return [f"skipped {', '.join(models)}: {reason}" for reason, models in by_reason.items()]


def format_table(rows: list[dict]) -> str:
    """A fixed-width table, one line per comparison, then errors and skipped models.

    'host ms' (until a call returns: its host time on a GPU), 'first s' and 'peak MiB' are
    stock/im2win; check is ok, PARITY (logits differ beyond
    the mode's bound) or ERROR (an arm raised: its message follows the table).
    """
    shown = [row for row in rows if row["status"] != "skipped"]
    lines = []
    if shown:
        cells = [[header for header, _ in COLUMNS]]
        cells += [[cell(row) for _, cell in COLUMNS] for row in shown]
        widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in cells
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += [f"{r['model']} {r['mode']} batch {r['batch']}: {r['error']}"
                  for r in shown if r["error"]]  # fmt: skip
    return "\n".join(lines + _skips(rows)) + "\n"


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def summary(rows: list[dict], provenance: dict[str, str]) -> str:
    """Markdown: speedup per model, mode and batch, its geomean per mode and batch."""
    ok = [r for r in rows if r["speedup"] is not None]
    batches = sorted({r["batch"] for r in ok})
    lines = [
        "# im2win bench --suite models",
        "",
        f"GPU {provenance['gpu']} | torch {provenance['torch']} | triton "
        f"{provenance['triton']} | cuDNN {provenance['cudnn']} | commit {provenance['commit']} "
        f"| {provenance['date']}",
        "",
        "Speedup = stock time / im2win time (above 1.0x im2win is faster); stock is PyTorch "
        "with cudnn.benchmark, TF32 off. `*`: logits differ beyond the mode's bound.",
        "",
    ]
    if ok:
        header = ["model", "mode", *(f"batch {b}" for b in batches)]
        lines += ["| " + " | ".join(header) + " |", "|---|---|" + "--:|" * len(batches)]
        keys = dict.fromkeys((r["model"], r["mode"]) for r in ok)
        for model, mode in keys:
            cells = []
            for b in batches:
                hit = [r for r in ok if (r["model"], r["mode"], r["batch"]) == (model, mode, b)]
                flag = "" if not hit or hit[0]["parity_ok"] else "*"
                cells.append(f"{hit[0]['speedup']:.2f}x{flag}" if hit else "-")
            lines.append(f"| {model} | {mode} | " + " | ".join(cells) + " |")
        for mode in dict.fromkeys(r["mode"] for r in ok):
            cells = []
            for b in batches:
                values = [r["speedup"] for r in ok if (r["mode"], r["batch"]) == (mode, b)]
                cells.append(f"{_geomean(values):.2f}x" if values else "-")
            lines.append(f"| **geomean** | {mode} | " + " | ".join(cells) + " |")
    else:
        lines.append("No comparison finished in both arms.")
    notes = [f"- {r['model']} {r['mode']} batch {r['batch']}: {r['error']}"
             for r in rows if r["error"]]  # fmt: skip
    notes += [f"- {line}" for line in _skips(rows)]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"
