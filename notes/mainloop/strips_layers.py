"""Kernel time of the library's strips variant, every table config pinned, against
F.conv2d (cuDNN, cudnn.benchmark) on named benchmark layers, channels-last, plain and
with a fused bias + ReLU (cuDNN's arm: F.conv2d with the bias, then relu_). Also what
`auto` picks and how long it runs. Each arm is checked against F.conv2d first.

    IM2WIN_COMMIT=<sha> PYTHONPATH=src python3 notes/mainloop/strips_layers.py \\
        r50-l2-3x3-s2,r50-l3-down-s2 128,32 bf16,tf32

Rows go to $OUT/strips_layers.jsonl with provenance; the table is printed and logged.
"""

import itertools
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from kernel_time import gpu_ms  # noqa: E402

import im2win  # noqa: E402
from im2win.baselines.common import set_fp32_precision  # noqa: E402
from im2win.bench.env import provenance  # noqa: E402
from im2win.bench.layers import EXTRA_LAYERS, PAPER_LAYERS, RESNET50_LAYERS  # noqa: E402
from im2win.bench.timing import FLUSH_BYTES  # noqa: E402
from im2win.variants.base import target_of  # noqa: E402

TIERS = {"bf16": (torch.bfloat16, None, 2e-2), "tf32": (torch.float32, "tf32", 5e-3)}
LAYERS = {layer.name: layer for layer in (*PAPER_LAYERS, *RESNET50_LAYERS, *EXTRA_LAYERS)}


def main():
    names, batches, tiers = (sys.argv[i].split(",") for i in (1, 2, 3))
    out = os.environ.get("OUT", ".")
    log = open(os.path.join(out, "strips_layers.log"), "w")  # noqa: SIM115

    def say(text):
        print(text, flush=True)
        log.write(text + "\n")

    torch.backends.cudnn.benchmark = True
    meta = provenance(torch.device("cuda"), " ".join(["python3", *sys.argv]))
    say(json.dumps(meta))
    target = target_of(torch.device("cuda"), False)
    table = target.table["strips"]
    configs = [dict(zip(table["candidates_keys"], row, strict=True)) for row in table["candidates"]]
    for entry in table["tiles"]:
        config = {key: entry[key] for key in table["candidates_keys"]}
        configs += [] if config in configs else [config]
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    budget = float(os.environ.get("BUDGET_S", 400))
    start = time.time()
    rows = []
    for tier, batch, name in itertools.product(tiers, map(int, batches), names):
        if time.time() - start > budget:
            say(f"time guard: stopped before {name} {tier} batch {batch}")
            break
        dtype, precision, tol = TIERS[tier]
        set_fp32_precision(dtype == torch.float32)
        layer = LAYERS[name]
        xshape, wshape = layer.shapes(batch)
        kw = layer.conv_kwargs()
        cl = torch.channels_last
        x = torch.randn(xshape, device="cuda").to(dtype=dtype, memory_format=cl)
        w = (torch.randn(wshape, device="cuda") / (wshape[1] * wshape[2] * wshape[3]) ** 0.5).to(
            dtype=dtype, memory_format=cl
        )
        b = torch.randn(wshape[0], device="cuda").to(dtype)
        ref = F.conv2d(x, w, None, **kw).float()
        ref_fused = F.relu(ref + b.float().view(-1, 1, 1))
        row = dict(meta, layer=name, tier=tier, batch=batch, layout="NHWC", ms={}, err={})

        def timed(key, fn, want, row=row, tol=tol):
            if not check(row, key, fn, want, tol):
                say(f"WRONG {row['layer']} {row['tier']} batch {row['batch']} {key}: "
                    f"relative error {row['err'][key]:.3g}")  # fmt: skip
            else:
                row["ms"][key] = gpu_ms(fn, flush)

        timed("cudnn", lambda: F.conv2d(x, w, None, **kw), ref)  # noqa: B023
        timed("cudnn+bias+relu", lambda: F.conv2d(x, w, b, **kw).relu_(), ref_fused)  # noqa: B023
        plan = im2win.explain(x, w, None, **kw, precision=precision)
        row["auto"] = str(plan).splitlines()[1].strip() if "\n" in str(plan) else str(plan)
        timed("auto", lambda: im2win.conv2d(x, w, None, **kw, precision=precision), ref)  # noqa: B023
        for i, config in enumerate(configs):
            pinned = {"VARIANT": "strips", **config}
            try:
                im2win.explain(x, w, None, **kw, precision=precision, config=pinned)
            except ValueError:  # a ring too short for these strips, or past shared memory
                continue

            def run(pinned=pinned):
                return im2win.conv2d(x, w, None, **kw, precision=precision, config=pinned)  # noqa: B023

            timed(f"strips{i}", run, ref)
        ms = row["ms"]
        strips = {k: v for k, v in ms.items() if k.startswith("strips") and v == v}
        if strips:
            best = min(strips, key=strips.get)
            config = configs[int(best[6:])]
            row["best"] = config
            pinned = {"VARIANT": "strips", **config}

            def fused(pinned=pinned):
                return im2win.conv2d_fused(x, w, b, **kw, activation="relu",  # noqa: B023
                                           precision=precision, config=pinned)  # noqa: B023 # fmt: skip

            timed("strips+bias+relu", fused, ref_fused)
            say(f"{name:20s} {tier} b{batch:<4d} cudnn {ms['cudnn']:.4f} ms  auto {ms['auto']:.4f}"
                f"  strips {ms[best]:.4f} ({cudnn_ratio(ms, best)})  fused: cudnn "
                f"{ms['cudnn+bias+relu']:.4f} strips {ms['strips+bias+relu']:.4f} "
                f"({cudnn_ratio(ms, 'strips+bias+relu', 'cudnn+bias+relu')})  "
                f"{config}  auto: {row['auto']}")  # fmt: skip
        else:
            say(f"{name:20s} {tier} b{batch}: no strips config runs; auto {row['auto']}")
        rows.append(row)
    with open(os.path.join(out, "strips_layers.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def check(row: dict, key: str, fn, want: torch.Tensor, tol: float) -> bool:
    """Runs `fn` once; its relative error against `want` goes to row["err"][key], and a NaN
    time to row["ms"][key] when the error is past `tol`."""
    err = ((fn().float() - want).norm() / want.norm()).item()
    row["err"][key] = err
    if not err < tol:
        row["ms"][key] = float("nan")
    return err < tol


def cudnn_ratio(ms: dict, key: str, bar: str = "cudnn") -> str:
    return f"{ms[bar] / ms[key]:.2f}x"


if __name__ == "__main__":
    main()
