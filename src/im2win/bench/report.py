"""Result rows on disk (JSON lines and CSV, written as they come) and as a plain-text table."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path

# One row per measurement. Provenance goes in every row, so a row copied out of its file
# still says where it came from.
FIELDS = (
    "suite", "layer", "method", "tier", "layout", "direction", "batch", "dtype", "backend",
    "device",
    "c", "hw", "k", "rs", "stride", "padding", "dilation", "groups", "flop",
    "ms", "host_us", "tflops", "rel_err", "max_rel_err", "within_tier", "status",
    "input_mib", "weight_mib", "output_mib", "peak_mib", "extra_mib", "analytic_extra_mib",
    "ceiling_tflops", "copy_gbps", "roofline_tflops", "pct_of_roofline",
    "repeats", "error", "note",
    "gpu", "torch", "triton", "cudnn", "commit", "date", "command",
)  # fmt: skip


class ResultWriter:
    """Appends each row to `results.jsonl` and `results.csv` in `out_dir` and flushes it,
    so a run that dies half-way still leaves every finished measurement on disk."""

    def __init__(self, out_dir: Path, fields: tuple[str, ...] = FIELDS) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = out_dir / "results.jsonl"
        self.csv_path = out_dir / "results.csv"
        self._jsonl = self.jsonl_path.open("w")
        self._csv_file = self.csv_path.open("w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=fields)
        self._csv.writeheader()

    def write(self, row: dict) -> None:
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        self._csv.writerow(row)
        self._csv_file.flush()

    def close(self) -> None:
        self._jsonl.close()
        self._csv_file.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _number(key: str, spec: str) -> Callable[[dict], str]:
    return lambda row: "-" if row[key] is None else format(row[key], spec)


def _check(row: dict) -> str:
    return row["status"].upper() if row["status"] != "ok" else "ok"


# (header, cell) for each column of the printed table.
COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    *((key, itemgetter(key)) for key in ("layer", "tier", "layout", "method", "direction")),
    ("backend", itemgetter("backend")),
    ("ms", _number("ms", ".3f")),
    ("host us", _number("host_us", ".1f")),
    ("TFLOPS", _number("tflops", ".3g")),
    ("% roofline", _number("pct_of_roofline", ".0f")),
    ("rel_err", _number("rel_err", ".1e")),
    ("peak MiB", _number("peak_mib", ".1f")),
    ("extra MiB", _number("extra_mib", ".1f")),
    ("check", _check),
)


def format_table(rows: list[dict]) -> str:
    """A fixed-width table, one line per measurement, then one line per error message.

    Unsupported cases (a method that cannot serve a shape, tier or layout) stay in the
    result files only; when every case was unsupported, a line says so, with the reasons.
    """
    shown = [row for row in rows if row["status"] != "unsupported"]
    if rows and not shown:
        devices = ", ".join(dict.fromkeys(str(row["device"]) for row in rows))
        reasons = dict.fromkeys(row["note"] for row in rows)  # deduplicated, in run order
        head = f"Nothing to show: every requested measurement was unsupported on {devices}:"
        return "\n".join([head, *(f"  {reason}" for reason in reasons)]) + "\n"
    rows = shown
    cells = [[header for header, _ in COLUMNS]]
    cells += [[str(cell(row)) for _, cell in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [
        f"{row['layer']} {row['tier']} {row['layout']} {row['method']}: {row['error']}"
        for row in rows
        if row["error"]
    ]
    return "\n".join(lines) + "\n"
