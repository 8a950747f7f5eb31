"""Issue 4's target table from `im2win bench` results: im2win against the best cuDNN pick.

For every (suite, batch, tier, layout) in the given results (directories or results.jsonl
files; where a row repeats, the later file wins): per layer the library's TFLOPS (fp32 tier:
the faster of IEEE `im2win` and `im2win-tf32x3`, both fp32-accurate), the best cuDNN
method's, their ratio, the roofline and the library's share of it, and the extra memory of
each; then the geomean, the worst layer and the stems (conv1, 2, 3, 7). Prints markdown.

    S=results/h100-0a4e98e/standings
    PYTHONPATH=src python3 notes/scripts/targets.py $S/paper $S/paper-b1 $S/extra
"""

import sys
from collections import defaultdict
from statistics import geometric_mean

from im2win.bench.figures import load_rows

STEMS = ("conv1", "conv2", "conv3", "conv7")
OURS = ("im2win", "im2win-tf32x3")


def is_cudnn(method: str) -> bool:
    return method.startswith("cudnn-") or method == "torch-conv2d"


def best(rows: list[dict], pick) -> dict | None:
    ok = [r for r in rows if r["status"] == "ok" and pick(r["method"])]
    return max(ok, key=lambda r: r["tflops"]) if ok else None


def group_table(layers: dict[str, list[dict]]) -> tuple[list[str], dict]:
    lines = [
        "| layer | im2win TF | best cuDNN TF | ratio | roofline TF | im2win % roof "
        "| extra MiB im2win / cuDNN best |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    ratios, memory_ok = {}, 0
    for layer, rows in layers.items():
        ours = best(rows, lambda m: m in OURS)
        theirs = best(rows, is_cudnn)
        if ours is None or theirs is None:
            lines.append(f"| {layer} | missing | | | | | |")
            continue
        ratio = ours["tflops"] / theirs["tflops"]
        ratios[layer] = ratio
        memory_ok += ours["extra_mib"] <= theirs["extra_mib"] + 1.0  # 1 MiB: allocator noise
        roof = ours.get("roofline_tflops")
        lines.append(
            f"| {layer} | {ours['tflops']:.1f} ({ours['method']}) | {theirs['tflops']:.1f} "
            f"({theirs['method'].removeprefix('cudnn-')}) | {ratio:.2f}x "
            f"| {roof:.0f} | {ours['pct_of_roofline']:.0f}% "
            f"| {ours['extra_mib']:.1f} / {theirs['extra_mib']:.1f} |"
            if roof
            else f"| {layer} | {ours['tflops']:.1f} | {theirs['tflops']:.1f} | {ratio:.2f}x "
            f"| - | - | {ours['extra_mib']:.1f} / {theirs['extra_mib']:.1f} |"
        )
    summary = dict(
        geomean=geometric_mean(ratios.values()) if ratios else float("nan"),
        worst=min(ratios.items(), key=lambda kv: kv[1]) if ratios else ("-", float("nan")),
        stems=[ratios[s] for s in STEMS if s in ratios],
        memory=f"{memory_ok}/{len(ratios)}",
        layers=len(ratios),
    )
    return lines, summary


def main(paths: list[str]) -> None:
    latest: dict[tuple, dict] = {}
    for path in paths:
        for row in load_rows(path):
            key = (row["suite"], row["batch"], row["tier"], row["layout"], row["layer"])
            latest[key + (row["method"],)] = row
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for (suite, batch, tier, layout, layer, _), row in latest.items():
        groups[(suite, batch, tier, layout)][layer].append(row)
    overview = [
        "| suite | batch | tier | layout | geomean | worst layer | stems (min) | memory ok "
        "| commits |",
        "|---|--:|---|---|--:|---|--:|--:|---|",
    ]
    details = []
    for key in sorted(groups):
        suite, batch, tier, layout = key
        lines, s = group_table(groups[key])
        commits = sorted({r["commit"][:7] for rows in groups[key].values() for r in rows})
        stems = f"{min(s['stems']):.2f}x" if s["stems"] else "-"
        overview.append(
            f"| {suite} | {batch} | {tier} | {layout} | {s['geomean']:.2f}x "
            f"| {s['worst'][0]} {s['worst'][1]:.2f}x | {stems} | {s['memory']} "
            f"| {', '.join(commits)} |"
        )
        details += [f"\n### {suite} · batch {batch} · {tier} · {layout}\n", *lines]
    print("\n".join(overview + details))


if __name__ == "__main__":
    main(sys.argv[1:])
