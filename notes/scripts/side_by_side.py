"""Side-by-side bench runs: new code against old, each row's median over the runs.

A folder holds `<suite>-run*/` directories, each with `<suite>/` (the new code, every
method) and `<suite>-before/` (the old code, the library's methods only), measured in the
same call as `results/h100-issue4/v6-2fc4d8b/bench_v6.sh` writes them. Per row: the medians
over runs of im2win old and new and of each run's best cuDNN method, their ratios; then the
geomean of best-cuDNN / im2win per tier and layout. Prints markdown.

    PYTHONPATH=src python3 notes/scripts/side_by_side.py results/h100-issue4/v6-2fc4d8b \\
        resnet50-b128 paper
"""

import math
import statistics
import sys
from pathlib import Path

from targets import OURS, is_cudnn

from im2win.bench.figures import load_rows, row_status


def run_times(rows: list[dict]) -> tuple[dict, dict]:
    """(im2win ms, best cuDNN ms) per (tier, layout, layer) of one run's valid rows; im2win
    is the faster of its methods there (`targets.OURS`: fp32 has two)."""
    ours, cudnn = {}, {}
    for r in rows:
        if row_status(r) != "ok":
            continue
        key = (r["tier"], r["layout"], r["layer"])
        if r["method"] in OURS:
            ours[key] = min(ours.get(key, math.inf), r["ms"])
        elif is_cudnn(r["method"]):
            cudnn[key] = min(cudnn.get(key, math.inf), r["ms"])
    return ours, cudnn


def suite_table(folder: Path, suite: str) -> None:
    runs = sorted(folder.glob(f"{suite}-run*"))
    times: dict[tuple, dict[str, list[float]]] = {}
    for run in runs:
        new, cudnn = run_times(load_rows(run / suite))
        old, _ = run_times(load_rows(run / f"{suite}-before"))
        for name, values in (("new", new), ("old", old), ("cudnn", cudnn)):
            for key, ms in values.items():
                times.setdefault(key, {}).setdefault(name, []).append(ms)
    print(f"## {suite}: {len(runs)} runs ({', '.join(run.name for run in runs)})\n")
    print("| tier | layout | layer | im2win old ms | im2win new ms | best cuDNN ms | new/old "
          "| cuDNN/old | cuDNN/new |\n|---|---|---|--:|--:|--:|--:|--:|--:|")  # fmt: skip
    logs: dict[tuple, tuple[list, list]] = {}
    for key in sorted(times):
        d = {name: statistics.median(v) for name, v in times[key].items()}
        if set(d) != {"new", "old", "cudnn"}:
            continue
        print(f"| {' | '.join(key)} | {d['old']:.4f} | {d['new']:.4f} | {d['cudnn']:.4f} | "
              f"{d['old'] / d['new']:.2f} | {d['cudnn'] / d['old']:.2f} | "
              f"{d['cudnn'] / d['new']:.2f} |")  # fmt: skip
        old_logs, new_logs = logs.setdefault(key[:2], ([], []))
        old_logs.append(math.log(d["cudnn"] / d["old"]))
        new_logs.append(math.log(d["cudnn"] / d["new"]))
    print("\n| tier | layout | layers | geomean cuDNN/im2win old | new |\n|---|---|--:|--:|--:|")
    for (tier, layout), (o, n) in sorted(logs.items()):
        print(f"| {tier} | {layout} | {len(o)} | {math.exp(sum(o) / len(o)):.2f}x | "
              f"{math.exp(sum(n) / len(n)):.2f}x |")  # fmt: skip
    print()


def main(folder: str, suites: list[str]) -> None:
    print(f"# {folder}: side-by-side runs, medians over runs\n")
    for suite in suites:
        suite_table(Path(folder), suite)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
