"""Kernel time of the Winograd variant, every candidate pinned, against cuDNN in the
fp32-accurate tier on 3x3 unit-stride layers (the paper's conv6, conv8-12, ResNet-50's):
F.conv2d with cudnn.benchmark (IEEE), cuDNN's WINOGRAD_NONFUSED and FFT_TILING engines
alone, what `auto` runs, and each Winograd tile with 3xTF32 GEMMs; NCHW and NHWC. Every
arm is checked against float64 first (the tier's 1e-5); a wrong arm gets no time.

    IM2WIN_COMMIT=<sha> PYTHONPATH=src python3 notes/winograd/winograd_layers.py \\
        conv6,conv10,conv11,conv12,r50-l3-3x3 128,32 nchw,nhwc

Rows go to $OUT/winograd_layers.jsonl with provenance; the table is printed and logged.
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
from im2win.baselines import cudnn  # noqa: E402
from im2win.baselines.common import Unsupported, set_fp32_precision  # noqa: E402
from im2win.bench.env import provenance  # noqa: E402
from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS  # noqa: E402
from im2win.bench.timing import FLUSH_BYTES  # noqa: E402
from im2win.variants.base import target_of  # noqa: E402

LAYERS = {layer.name: layer for layer in (*PAPER_LAYERS, *RESNET50_LAYERS)}
BOUND = 1e-5  # the fp32-accurate tier's
ENGINES = ("WINOGRAD_NONFUSED", "FFT_TILING")


def main():
    names, batches, layouts = (sys.argv[i].split(",") for i in (1, 2, 3))
    out = os.environ.get("OUT", ".")
    log = open(os.path.join(out, "winograd_layers.log"), "w")  # noqa: SIM115

    def say(text):
        print(text, flush=True)
        log.write(text + "\n")

    torch.backends.cudnn.benchmark = True
    set_fp32_precision(False)  # cuDNN fp32 without TF32: the fp32-accurate tier
    meta = provenance(torch.device("cuda"), " ".join(["python3", *sys.argv]))
    say(json.dumps(meta))
    table = target_of(torch.device("cuda"), False).table["winograd"]
    configs = [dict(zip(table["candidates_keys"], row, strict=True)) for row in table["candidates"]]
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    budget = float(os.environ.get("BUDGET_S", 400))
    start = time.time()
    rows = []
    for layout, batch, name in itertools.product(layouts, map(int, batches), names):
        if time.time() - start > budget:
            say(f"time guard: stopped before {name} {layout} batch {batch}")
            break
        layer = LAYERS[name]
        xshape, wshape = layer.shapes(batch)
        kw = layer.conv_kwargs()
        fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
        x = torch.randn(xshape, device="cuda").contiguous(memory_format=fmt)
        w = torch.randn(wshape, device="cuda") / (wshape[1] * 9) ** 0.5
        ref = F.conv2d(x.double(), w.double(), None, **kw)
        row = dict(meta, layer=name, batch=batch, layout=layout.upper(), ms={}, err={})

        def timed(key, fn, row=row, ref=ref):
            err = ((fn().double() - ref).norm() / ref.norm()).item()
            row["err"][key] = err
            row["ms"][key] = gpu_ms(fn, flush) if err < BOUND else float("nan")
            if not err < BOUND:
                say(f"WRONG {row['layer']} {row['layout']} b{row['batch']} {key}: {err:.3g}")

        timed("F.conv2d", lambda: F.conv2d(x, w, None, **kw))  # noqa: B023
        for engine in ENGINES:
            try:
                prepared = cudnn.make(x, w, None, **kw, tier="fp32", algo=engine)
                timed(engine, prepared.run)
            except (Unsupported, cudnn.CudnnError) as why:  # not for this layout or shape
                row["err"][engine] = str(why)
        plan = im2win.explain(x, w, None, **kw, precision="tf32x3")
        row["auto"] = str(plan).splitlines()[1].strip()
        timed("auto", lambda: im2win.conv2d(x, w, None, **kw, precision="tf32x3"))  # noqa: B023
        for i, config in enumerate(configs):
            pinned = dict(config, VARIANT="winograd")
            timed(f"winograd{i}", lambda pinned=pinned: im2win.conv2d(  # noqa: B023
                x, w, None, **kw, precision="tf32x3", config=pinned))  # noqa: B023 # fmt: skip
        ms = row["ms"]
        bars = [v for k, v in ms.items() if not k.startswith(("winograd", "auto")) and v == v]
        bar = min(bars, default=float("nan"))
        ours = {k: v for k, v in ms.items() if k.startswith("winograd") and v == v}
        if ours:
            best = min(ours, key=ours.get)
            row["best"] = configs[int(best[8:])]
            say(f"{name:12s} {layout} b{batch:<4d} cudnn best {bar:.4f} ms  auto {ms['auto']:.4f}"
                f"  winograd {ms[best]:.4f} ({bar / ms[best]:.2f}x)  {row['best']}  "
                f"auto: {row['auto']}")  # fmt: skip
        else:
            say(f"{name:12s} {layout} b{batch}: no Winograd tile within the bound")
        rows.append(row)
    with open(os.path.join(out, "winograd_layers.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
