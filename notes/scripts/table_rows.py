"""Rows for notes/scripts/targets.py from a printed `im2win bench` table (its log).

For a run whose results.jsonl was lost but whose printed table survives
(results/h200-bbb58c6/paper.log): each table line becomes a row with the fields
targets.py reads (TFLOPS to the table's three digits, no roofline).

    python3 notes/scripts/table_rows.py LOG SUITE BATCH OUT_DIR
    python3 notes/scripts/targets.py OUT_DIR
"""

import json
import re
import sys
from pathlib import Path


def main(log: str, suite: str, batch: str, out: str) -> None:
    text = Path(log).read_text()
    commit = re.search(r"\| commit (\w+) \|", text).group(1)
    rows = []
    for line in text.splitlines():
        f = line.split()
        if len(f) != 12 or f[0] == "layer" or set(f[0]) == {"-"}:
            continue
        layer, tier, layout, method, _, _, tflops, _, _, _, extra, check = f
        if tflops == "-":
            continue
        rows.append(dict(
            suite=suite, batch=int(batch), layer=layer, tier=tier, layout=layout,
            method=method, tflops=float(tflops), extra_mib=float(extra), commit=commit,
            status="ok" if check == "ok" else check.lower(), roofline_tflops=None,
        ))  # fmt: skip
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / "results.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"{len(rows)} rows")


if __name__ == "__main__":
    main(*sys.argv[1:])
