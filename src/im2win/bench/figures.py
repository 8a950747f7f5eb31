"""Figures and markdown tables from benchmark result rows (`results.jsonl`).

Only rows with status "ok" are drawn or ranked: over-bound, unsupported and failed
measurements belong in the plain-text results table (`report.format_table`), never in a
figure, and every figure's footnote says so. If a (tier, layout, batch, layer, method) was
measured more than once, the last row wins.

matplotlib (the `bench` extra) is imported only when a figure is drawn, so the package and
the table functions work without it.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import geometric_mean, mean

from .env import format_cudnn_version

CUDNN_BEST = "cudnn-best"
# Series of every figure and of the summary table, in legend order (at most 10, for legibility).
SERIES = (
    "im2win", "im2win-materialized", "im2win-tf32x3", CUDNN_BEST, "torch-conv2d",
    "im2col-cublas", "paper-kernel", "direct", "direct-naive",
)  # fmt: skip
ABLATION_BASE = "paper-kernel"
ABLATION_VARIANTS = tuple(
    f"paper-kernel-no-{part}" for part in ("prefetch", "vector", "microkernel", "smem")
)
TIER_MEANING = {
    "fp32": "IEEE-fp32-accurate",
    "tf32": "TF32 tensor cores",
    "fp16": "fp16 data, fp32 accumulation",
    "bf16": "bf16 data, fp32 accumulation",
}
_TIER_ORDER = tuple(TIER_MEANING)
_LAYOUT_ORDER = ("NCHW", "NHWC")
_CUDNN_SHORT = {
    "IMPLICIT_GEMM": "IG", "IMPLICIT_PRECOMP_GEMM": "IPG", "GEMM": "GEMM", "DIRECT": "DIR",
    "FFT": "FFT", "FFT_TILING": "FFT-T", "WINOGRAD": "WG", "WINOGRAD_NONFUSED": "WG-NF",
    "torch-conv2d": "torch",
}  # fmt: skip
_LEFT_OUT = (
    "Status ok only; over-bound, unsupported and failed rows are left out (see results table)"
)
_MISSING = "—"

Group = tuple[str, str, int]  # (tier, layout, batch)
Table = dict[str, dict[str, dict]]  # layer -> series -> the row that series shows


# --- rows -------------------------------------------------------------------------------


# The keys every figure and table groups or labels rows by.
ROW_KEYS = ("layer", "method", "tier", "layout", "batch")


def load_rows(path: str | Path) -> list[dict]:
    """Rows of a `results.jsonl` file, or of the `results.jsonl` inside directory `path`.

    Raises FileNotFoundError when there is no such file, ValueError (naming the line) when a
    line is not a JSON object with the ROW_KEYS, OSError when the file cannot be read.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"no results file at {path} (expected a results.jsonl or a directory holding one)"
        )
    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    rows.append(_parse_row(line, f"{path}:{number}"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text (expected JSON lines)") from None
    return [row for row in rows if not row.get("header")]


def _parse_row(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc.msg}); expected one result row") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a JSON {type(row).__name__}, expected an object")
    missing = [key for key in ROW_KEYS if key not in row]
    if missing and not row.get("header"):
        raise ValueError(f"{where}: a row without {', '.join(missing)}")
    return row


def row_status(row: dict) -> str:
    """The row's status; rows from before the status field are classified by error/bound."""
    if row.get("status"):
        return row["status"]
    if row.get("error"):
        return "error"
    return "ok" if row.get("within_tier") else "over-bound"


def _layer_key(name: str) -> list:
    """Natural order: conv2 before conv10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _order(value: str, known: tuple[str, ...]) -> tuple[int, str]:
    return (known.index(value) if value in known else len(known), value)


def _groups(rows: Iterable[dict]) -> dict[Group, list[dict]]:
    """Rows split by (tier, layout, batch), in tier, layout, batch order."""
    groups: dict[Group, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["tier"], row["layout"], row["batch"])].append(row)
    order = lambda g: (_order(g[0], _TIER_ORDER), _order(g[1], _LAYOUT_ORDER), g[2])
    return {key: groups[key] for key in sorted(groups, key=order)}


def _ok_index(rows: Iterable[dict]) -> dict[str, dict[str, dict]]:
    """layer -> method -> last ok row."""
    index: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        if row_status(row) == "ok":
            index[row["layer"]][row["method"]] = row
    return {layer: index[layer] for layer in sorted(index, key=_layer_key)}


def _is_cudnn(method: str) -> bool:
    """Every legacy cuDNN algorithm, and F.conv2d with cudnn.benchmark (the graph API's best)."""
    return method.startswith("cudnn-") or method == "torch-conv2d"


def _best_cudnn(by_method: dict[str, dict]) -> dict | None:
    """The fastest ok cuDNN row (its memory is what cudnn-best's memory means)."""
    timed = [r for m, r in by_method.items() if _is_cudnn(m) and r.get("tflops")]
    return max(timed, key=lambda r: r["tflops"], default=None)


def _select(rows: Iterable[dict]) -> Table:
    """layer -> series -> row, for the SERIES that have an ok row on that layer."""
    table: Table = {}
    for layer, by_method in _ok_index(rows).items():
        picked = {s: by_method[s] for s in SERIES if s in by_method}
        if (best := _best_cudnn(by_method)) is not None:
            picked[CUDNN_BEST] = best
        if picked:
            table[layer] = {s: picked[s] for s in SERIES if s in picked}
    return table


def _values(table: Table, key: str) -> dict[str, list[float | None]]:
    """series -> row[key] per layer (None where missing), for series with at least one value."""
    values = {s: [table[layer].get(s, {}).get(key) for layer in table] for s in SERIES}
    return {s: v for s, v in values.items() if any(x is not None for x in v)}


def _ratios(values: dict[str, list[float | None]], base: str) -> dict[str, list[float | None]]:
    """Each series divided by `base`, layer by layer; None where either is missing or base <= 0."""
    ref = values[base]
    divide = lambda x, b: None if x is None or b is None or b <= 0 else x / b
    ratios = {s: [divide(x, b) for x, b in zip(v, ref, strict=True)] for s, v in values.items()}
    return {s: v for s, v in ratios.items() if s != base and any(x is not None for x in v)}


# --- labels -------------------------------------------------------------------------------


def _sci(x: float) -> str:
    """1e-05 -> 1e-5."""
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{x:.0e}")


def _tier_text(tier: str, rows: list[dict]) -> str:
    """'fp32 (IEEE-fp32-accurate, rel. err <= 1e-5)', the bound taken from the rows."""
    bounds = {r["max_rel_err"] for r in rows if r.get("max_rel_err") is not None}
    parts = [TIER_MEANING.get(tier, "")] + [f"rel. err ≤ {_sci(b)}" for b in sorted(bounds)]
    parts = [p for p in parts if p]
    return f"{tier} ({', '.join(parts)})" if parts else tier


def _cudnn_version(value) -> str:
    """A row's cuDNN version: a string as recorded, or an integer as torch reports it."""
    return format_cudnn_version(value) if isinstance(value, int) else str(value)


def _distinct(rows: list[dict], key: str, fmt=str) -> str:
    values = sorted({fmt(r[key]) for r in rows if r.get(key) not in (None, "")})
    return ", ".join(values) if values else "?"


def _provenance(rows: list[dict]) -> str:
    """'torch 2.11.0 · cuDNN 9.19.0 · triton 3.6.0 · commit ed97c8b0b3 · 2026-11-26'."""
    return " · ".join((
        f"torch {_distinct(rows, 'torch')}",
        f"cuDNN {_distinct(rows, 'cudnn', _cudnn_version)}",
        f"triton {_distinct(rows, 'triton')}",
        f"commit {_distinct(rows, 'commit', lambda c: str(c)[:10])}",
        _distinct(rows, "date", lambda d: str(d)[:10]),
    ))  # fmt: skip


def _cudnn_algo(row: dict) -> str:
    return row["method"].removeprefix("cudnn-")


def _left_out(rows: list[dict]) -> str:
    """'2 over-bound, 1 unsupported' (rows not shown), or '' when every row is ok."""
    counts = Counter(row_status(r) for r in rows if row_status(r) != "ok")
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


# --- figures ------------------------------------------------------------------------------


def _matplotlib():
    """(Figure, FigureCanvasAgg): Agg without switching pyplot's global backend."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise RuntimeError(
            "figures need matplotlib, from the `bench` extra: pip install 'im2win[bench]'"
        ) from exc
    return Figure, FigureCanvasAgg


@dataclass
class _Chart:
    """One grouped bar chart: a group per x label, a bar per series (None: no bar)."""

    title: str
    ylabel: str
    xlabels: list[str]
    values: dict[str, list[float | None]]
    footnote: str
    scale: str = "log"  # "log", "symlog" (linear below 1) or "linear"
    hline: float | None = None  # dashed reference line, e.g. at ratio 1
    labels: dict[str, str] = field(default_factory=dict)  # legend text, when not the name


def _color_index(series: str, position: int) -> int:
    """A series keeps its color in every figure: its place in SERIES or ABLATION_VARIANTS."""
    for order in (SERIES, ABLATION_VARIANTS):
        if series in order:
            return order.index(series)
    return position


def _draw(chart: _Chart, path: Path) -> Path:
    """Render `chart` to the PNG `path`; zero values are marked '0' on the x axis."""
    Figure, FigureCanvasAgg = _matplotlib()
    from matplotlib import colormaps
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    palette = colormaps["tab10"].colors
    fig = Figure(figsize=(max(8.0, 1.05 * len(chart.xlabels) + 3), 5.2), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    n, width, handles = len(chart.values), 0.84 / max(len(chart.values), 1), []
    for i, (series, ys) in enumerate(chart.values.items()):
        color = palette[_color_index(series, i) % len(palette)]
        for j, y in enumerate(ys):
            x = j + (i - (n - 1) / 2) * width
            if y is not None and y > 0:
                ax.bar(x, y, width, color=color)
            elif y is not None:
                mark = dict(xycoords=("data", "axes fraction"), textcoords="offset points")
                ax.annotate(
                    "0", (x, 0), xytext=(0, 2), ha="center", fontsize=7, color=color, **mark
                )
        handles.append(Patch(color=color, label=chart.labels.get(series, series)))
    if chart.scale == "symlog":
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0)
    else:
        ax.set_yscale(chart.scale)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if chart.hline is not None:
        ax.axhline(chart.hline, color="black", linewidth=0.9, linestyle="--")
    ax.set_xticks(range(len(chart.xlabels)), chart.xlabels, fontsize=8)
    ax.set_xlim(-0.6, len(chart.xlabels) - 0.4)
    ax.set_ylabel(chart.ylabel)
    ax.set_title(chart.title, fontsize=10)
    ax.grid(axis="y", alpha=0.35)
    ax.set_axisbelow(True)
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False
    )
    fig.text(0.01, -0.02, chart.footnote, fontsize=7, va="top", color="dimgray")
    fig.savefig(path, bbox_inches="tight")
    return path


def _cudnn_short(row: dict) -> str:
    algo = _cudnn_algo(row)
    return _CUDNN_SHORT.get(algo, algo)


def _xlabels(table: Table) -> list[str]:
    """'conv1' plus the fastest cuDNN algorithm's short name on a second line."""
    best = {layer: t[CUDNN_BEST] for layer, t in table.items() if CUDNN_BEST in t}
    return [f"{layer}\n{_cudnn_short(best[layer])}" if layer in best else layer for layer in table]


def _cudnn_key(table: Table) -> str:
    """'cudnn-best: fastest ok cuDNN algorithm per layer (IG = IMPLICIT_GEMM, ...)'."""
    algos = sorted({_cudnn_algo(t[CUDNN_BEST]) for t in table.values() if CUDNN_BEST in t})
    if not algos:
        return ""
    key = ", ".join(f"{_CUDNN_SHORT.get(a, a)} = {a}" for a in algos)
    return (
        "cudnn-best: fastest ok cuDNN algorithm or torch-conv2d (cudnn.benchmark) per layer, "
        f"named under the layer ({key})"
    )


def _group_charts(key: Group, rows: list[dict]) -> dict[str, _Chart]:
    """File prefix -> chart, for one (tier, layout, batch) group: TFLOPS, TFLOPS relative to
    im2win, extra memory, extra memory relative to im2win-materialized (else im2win)."""
    tier, layout, batch = key
    table = _select(rows)
    head = f"{_tier_text(tier, rows)}, {layout}, batch {batch}, {_distinct(rows, 'gpu')}"
    left_out = _left_out(rows)
    notes = [
        _provenance(rows),
        _cudnn_key(table),
        _LEFT_OUT + (f": {left_out}" if left_out else ""),
    ]
    note = "\n".join(n for n in notes if n)

    def chart(title: str, ylabel: str, values: dict, footnote: str = note, **kw) -> _Chart:
        return _Chart(f"{title}\n{head}", ylabel, _xlabels(table), values, footnote, **kw)

    tflops, memory = _values(table, "tflops"), _values(table, "extra_mib")
    charts = {}
    if tflops:
        charts["tflops"] = chart("TFLOPS per layer", "TFLOPS (log scale)", tflops)
    if "im2win" in tflops:
        ratios = _ratios(tflops, "im2win")
        charts["tflops-vs-im2win"] = chart(
            "Speed relative to im2win", "TFLOPS ÷ im2win TFLOPS (>1: faster)", ratios, hline=1.0
        )
    if memory:
        charts["memory"] = chart(
            "Extra memory per layer (beyond input, weight and output)",
            "extra MiB (symlog: linear below 1)", memory, scale="symlog",
            footnote=f"{note}\n0: no extra memory",
        )  # fmt: skip
    if base := next((b for b in ("im2win-materialized", "im2win") if b in memory), None):
        charts["memory-vs-im2win"] = chart(
            f"Extra memory relative to {base}", f"extra MiB ÷ {base} extra MiB (<1: less)",
            _ratios(memory, base), hline=1.0,
            footnote=f"{note}\n0: no extra memory; no bar: not measured, not ok, or {base} "
            "needs no extra memory on that layer",
        )  # fmt: skip
    return {prefix: c for prefix, c in charts.items() if c.values}


def draw_all(rows: list[dict], out_dir: str | Path) -> list[Path]:
    """TFLOPS, speed relative to im2win, extra memory, and memory relative to
    im2win-materialized (else im2win), per (tier, layout) with data: `tflops-fp32-NCHW.png`,
    `tflops-vs-im2win-fp32-NCHW.png`, `memory-fp32-NCHW.png`, `memory-vs-im2win-fp32-NCHW.png`.
    Names get a `-b{batch}` suffix when the rows hold several batches. Returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = _groups(rows)
    several_batches = len({batch for _, _, batch in groups}) > 1
    paths = []
    for key, group in groups.items():
        name = f"{key[0]}-{key[1]}" + (f"-b{key[2]}" if several_batches else "")
        for prefix, chart in _group_charts(key, group).items():
            paths.append(_draw(chart, out_dir / f"{prefix}-{name}.png"))
    return paths


# --- ablation -----------------------------------------------------------------------------


def _slowdowns(rows: list[dict]) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """variant -> layer -> paper-kernel TFLOPS ÷ variant TFLOPS (fp32, NCHW, ok rows), and the
    rows used. Raises ValueError when there are none or they span several batches."""
    names = (ABLATION_BASE, *ABLATION_VARIANTS)
    used = [
        r for r in rows if (r["tier"], r["layout"]) == ("fp32", "NCHW") and r["method"] in names
    ]
    batches = sorted({r["batch"] for r in used})
    if len(batches) > 1:
        raise ValueError(f"ablation rows span batches {batches}: pass rows of one batch")
    index = _ok_index(used)
    slowdowns: dict[str, dict[str, float]] = {}
    for variant in ABLATION_VARIANTS:
        per_layer = {
            layer: by[ABLATION_BASE]["tflops"] / by[variant]["tflops"]
            for layer, by in index.items()
            if by.get(ABLATION_BASE, {}).get("tflops") and by.get(variant, {}).get("tflops")
        }
        if per_layer:
            slowdowns[variant] = per_layer
    if not slowdowns:
        raise ValueError("no ok fp32 NCHW rows of paper-kernel together with any of its variants")
    return slowdowns, used


def ablation_table(rows: list[dict]) -> str:
    """Markdown: per variant, its slowdown vs paper-kernel over the layers (fp32, NCHW):
    mean, geomean, and min and max with their layer."""
    slowdowns, _ = _slowdowns(rows)
    cells = [["variant", "layers", "mean", "geomean", "min", "max"]]
    for variant, per_layer in slowdowns.items():
        lo, hi = min(per_layer, key=per_layer.get), max(per_layer, key=per_layer.get)
        values = list(per_layer.values())
        cells.append([
            variant, str(len(values)), f"{mean(values):.2f}×", f"{geometric_mean(values):.2f}×",
            f"{per_layer[lo]:.2f}× ({lo})", f"{per_layer[hi]:.2f}× ({hi})",
        ])  # fmt: skip
    return "\n".join(_markdown(cells, [False] + [True] * 5)) + "\n"


def draw_ablation(rows: list[dict], out_dir: str | Path) -> Path:
    """`ablation.png` in `out_dir`: per layer, the slowdown of each paper-kernel variant
    relative to paper-kernel (fp32, NCHW, ok rows), with each variant's geomean slowdown in
    the legend. Raises ValueError when there are no such rows (see `ablation_table`)."""
    slowdowns, used = _slowdowns(rows)
    layers = sorted({layer for per in slowdowns.values() for layer in per}, key=_layer_key)
    geomean = lambda per: geometric_mean(per.values())
    chart = _Chart(
        title="Ablation: slowdown when one optimization is removed from paper-kernel\n"
        f"{_tier_text('fp32', used)}, NCHW, batch {_distinct(used, 'batch')}, "
        f"{_distinct(used, 'gpu')}",
        ylabel="paper-kernel TFLOPS ÷ variant TFLOPS (>1: slower)",
        xlabels=layers,
        values={v: [per.get(layer) for layer in layers] for v, per in slowdowns.items()},
        footnote=f"{_provenance(used)}\n{_LEFT_OUT}",
        scale="linear",
        hline=1.0,
        labels={
            v: f"{v.removeprefix(ABLATION_BASE + '-')} (geomean {geomean(per):.2f}×)"
            for v, per in slowdowns.items()
        },
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _draw(chart, out_dir / "ablation.png")


# --- summary table ------------------------------------------------------------------------

_HEADERS = {CUDNN_BEST: "best cuDNN"}
_SPEEDUP = "im2win ÷ best cuDNN"


def _num(x: float) -> str:
    """Three significant digits without exponent: 123, 12.3, 1.23, 0.0123."""
    return f"{x:.{max(0, 2 - math.floor(math.log10(abs(x))))}f}" if x else "0"


def _tflops_cell(row: dict | None, series: str) -> str:
    if row is None or row.get("tflops") is None:
        return _MISSING
    name = f" ({_cudnn_algo(row)})" if series == CUDNN_BEST else ""
    return _num(row["tflops"]) + name


def _geomean_cell(values: list[float], n_layers: int, fmt=_num) -> str:
    """Geomean of `values`, with '(k of n)' when some layers have no value."""
    if not values:
        return _MISSING
    count = "" if len(values) == n_layers else f" ({len(values)} of {n_layers})"
    return fmt(geometric_mean(values)) + count


def _speedup(by_series: dict[str, dict]) -> float | None:
    """im2win TFLOPS ÷ best cuDNN TFLOPS on one layer, None unless both were measured."""
    im2win, best = by_series.get("im2win", {}), by_series.get(CUDNN_BEST, {})
    if not im2win.get("tflops") or not best.get("tflops"):
        return None
    return im2win["tflops"] / best["tflops"]


def _times(x: float | None) -> str:
    return _MISSING if x is None else f"{x:.2f}×"


def _markdown(cells: list[list[str]], right: list[bool]) -> list[str]:
    """A markdown table padded to aligned columns: header row, rule, body rows."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(right))]
    rule = [("-" * (w - 1) + ":") if r else "-" * w for w, r in zip(widths, right, strict=True)]
    pad = lambda row: [
        c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
    ]
    return ["| " + " | ".join(line) + " |" for line in (pad(cells[0]), rule, *map(pad, cells[1:]))]


def _group_table(key: Group, rows: list[dict]) -> list[str]:
    """One section of `summary_table`: heading, note, table (empty without ok rows)."""
    tier, layout, batch = key
    table = _select(rows)
    tflops = _values(table, "tflops")  # only series with at least one value: no empty column
    if not tflops:
        return []
    speedups = [_speedup(t) for t in table.values()]
    cells = [["layer", *(_HEADERS.get(s, s) for s in tflops), _SPEEDUP]]
    for layer, speedup in zip(table, speedups, strict=True):
        row = [_tflops_cell(table[layer].get(s), s) for s in tflops]
        cells.append([layer, *row, _times(speedup)])
    geomeans = [_geomean_cell([x for x in v if x is not None], len(table)) for v in tflops.values()]
    speedup = _geomean_cell([x for x in speedups if x is not None], len(table), _times)
    cells.append(["**geomean**", *geomeans, speedup])
    left_out = _left_out(rows)
    note = (
        f"{_tier_text(tier, rows)}. TFLOPS on {_distinct(rows, 'gpu')}; {_provenance(rows)}. "
        f"Only rows with status ok{f' (left out: {left_out})' if left_out else ''}."
    )
    header = f"### {tier} · {layout} · batch {batch}"
    return [header, "", note, "", *_markdown(cells, [False] + [True] * (len(cells[0]) - 1))]


def summary_table(rows: list[dict]) -> str:
    """Markdown, one section per (tier, layout, batch) with ok rows: TFLOPS per layer of
    im2win, im2win-materialized, im2win-tf32x3, the best cuDNN algorithm (named), torch-conv2d,
    im2col-cublas, paper-kernel, direct and direct-naive, then im2win ÷ best cuDNN; a last
    row of geomeans. Columns without any ok row are left out; '—' marks a missing value."""
    sections = [_group_table(key, group) for key, group in _groups(rows).items()]
    text = "\n\n".join("\n".join(s) for s in sections if s)
    return text + "\n" if text else ""
