"""Split-K on and off, alternated in one process: the paper's 12 layers at batch 1 and the
small-output ones (conv6, conv11, conv12) at batch 128, plus ResNet-50's stage-4 layers at
batch 32, bf16 / tf32 / fp32 (3xTF32), NHWC and NCHW. The off arm patches
`split_k.default_splits` to 1; plans are cleared between arms. Each arm: the library's
default call end to end as the bench times it (CudaTimer: L2 flushed, median of 20), the
slices it took, its relative error against float64 F.conv2d; cuDNN (`F.conv2d`,
cudnn.benchmark) alongside. Three alternations; the table holds each arm's median.
SPLIT_ONLY=1: only the batch-1 layers that took slices in the first run.

    PYTHONPATH=src python3 split_ab.py compile <i> <n>   # n processes at once: compiles only
    PYTHONPATH=src python3 split_ab.py time [out.json]
"""

import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

import im2win
from im2win import plan
from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS
from im2win.bench.timing import CudaTimer
from im2win.kernels import split_k

TIERS = {"bf16": (torch.bfloat16, None), "tf32": (torch.float32, "tf32"),
         "fp32": (torch.float32, "tf32x3")}  # fmt: skip
JOBS = [(layer, 1) for layer in PAPER_LAYERS]
JOBS += [(layer, 128) for layer in PAPER_LAYERS if layer.name in ("conv6", "conv11", "conv12")]
JOBS += [(layer, 32) for layer in RESNET50_LAYERS if layer.name.startswith("r50-l4")]
if os.environ.get("SPLIT_ONLY"):  # the batch-1 layers that took slices in the first run
    JOBS = [
        (layer, 1)
        for layer in PAPER_LAYERS
        if layer.name in ("conv5", "conv6", "conv10", "conv11", "conv12")
    ]
DEFAULT_SPLITS = split_k.default_splits


def main(mode, shard, out):
    torch.backends.cudnn.benchmark = True
    timer = CudaTimer(torch.device("cuda"))
    rows = []
    jobs = [(layer, batch, tier, layout) for layer, batch in JOBS for tier in TIERS
            for layout in ("NHWC", "NCHW")]  # fmt: skip
    for layer, batch, tier, layout in jobs[shard[0] :: shard[1]]:
        dtype, precision = TIERS[tier]
        torch.manual_seed(0)
        (xs, ws), kw = layer.shapes(batch), layer.conv_kwargs()
        x = torch.randn(xs, device="cuda").to(dtype)
        w = (torch.randn(ws, device="cuda") / (ws[1] * ws[2] * ws[3]) ** 0.5).to(dtype)
        if layout == "NHWC":
            x, w = (t.to(memory_format=torch.channels_last) for t in (x, w))
        ref = F.conv2d(x.double(), w.double(), **kw)
        torch.backends.cudnn.allow_tf32 = tier == "tf32"
        times = {"on": [], "off": [], "cudnn": []}
        slices = {}
        for _ in range(3 if mode == "time" else 1):
            for arm in ("on", "off"):
                split_k.default_splits = DEFAULT_SPLITS if arm == "on" else (
                    lambda *args: 1)  # fmt: skip
                plan._PLANS.clear()
                taken = []
                fresh = split_k.workspace
                split_k.workspace = lambda s, y: taken.append(s) or fresh(s, y)  # noqa: E731
                call = lambda: im2win.conv2d(x, w, **kw, precision=precision)  # noqa: E731
                y = call()
                split_k.workspace = fresh
                err = ((y.double() - ref).norm() / ref.norm()).item()
                slices[arm] = (taken[0] if taken else 1, err)
                if mode == "time":
                    times[arm].append(timer(call, 20))
            if mode == "time":
                times["cudnn"].append(timer(lambda: F.conv2d(x, w, **kw), 20))
        split_k.default_splits = DEFAULT_SPLITS
        if mode != "time":
            continue
        med = {k: statistics.median(v) for k, v in times.items()}
        row = dict(layer=layer.name, batch=batch, tier=tier, layout=layout, ms=med,
                   slices=slices["on"][0], err_on=slices["on"][1],
                   err_off=slices["off"][1], runs=times)  # fmt: skip
        rows.append(row)
        if row["slices"] > 1:
            print(f"{layer.name:20s} b{batch:<3d} {tier} {layout}: split {row['slices']:2d} "
                  f"on {med['on']:.4f} off {med['off']:.4f} ms ({med['off'] / med['on']:.2f}x) "
                  f"cudnn {med['cudnn']:.4f} | vs cudnn {med['cudnn'] / med['off']:.2f} -> "
                  f"{med['cudnn'] / med['on']:.2f} | err {row['err_on']:.1e}", flush=True)  # fmt: skip
    if out:
        meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__)
        with open(out, "w") as f:
            json.dump(dict(**meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    if sys.argv[1] == "compile":
        main("compile", (int(sys.argv[2]), int(sys.argv[3])), None)
    else:
        main("time", (0, 1), sys.argv[2] if len(sys.argv) > 2 else None)
