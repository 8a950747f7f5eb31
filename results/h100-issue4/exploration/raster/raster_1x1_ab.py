"""Why ResNet-50's bf16 1x1 layers at 14x14 and 7x7 timed 0.56-1.22x with raster
tiles end to end (v8-2efaf7a) where their kernels ran 8-44% faster (raster.log): in one
process, window and raster tiles alternated three times per layer, each timed three ways:
end to end as the bench does (CudaTimer: L2 flushed, median of 30), the kernels alone
(torch.profiler, cold L2) and the host alone (calls back to back). The raster arm forces
the tiles `tuning.raster_tiles` gives (the rule of ce96e4b for these layers); plans are
cleared between arms.

    PYTHONPATH=src:notes/scripts python3 results/h100-issue4/exploration/raster/raster_1x1_ab.py
"""

import functools
import json
import os
import statistics
import sys

import torch
from kernel_time import gpu_ms, host_us

import im2win
from im2win import kernels, plan
from im2win.bench.env import provenance
from im2win.bench.timing import FLUSH_BYTES, CudaTimer
from im2win.kernels import tuning

LAYERS = {  # name: C, H = W, K (1x1, stride 1, batch 128)
    "r50-l3-1x1-1024": (256, 14, 1024),
    "r50-l3-1x1-reduce": (1024, 14, 256),
    "r50-l4-1x1-2048": (512, 7, 2048),
    "r50-l4-1x1-reduce": (2048, 7, 512),
    "r50-l4-1x1-reduce14": (1024, 14, 512),
}
window_rule = tuning.tma_config


def raster_rule(p, q, kg, block_k, dtype, precision, padded, taps, interpreted, raster_hw=None,
                **kwargs):
    if raster_hw is not None and block_k == 64:
        return tuning.raster_tiles(kg, block_k, dtype)
    return window_rule(p, q, kg, block_k, dtype, precision, padded, taps, interpreted, raster_hw,
                       **kwargs)  # fmt: skip


timer = CudaTimer(torch.device("cuda"))
flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
rows = []
for name, (c, hw, k) in LAYERS.items():
    x = torch.randn(128, c, hw, hw, device="cuda", dtype=torch.bfloat16)
    x = x.to(memory_format=torch.channels_last)
    w = torch.randn(k, c, 1, 1, device="cuda", dtype=torch.bfloat16)
    times = {arm: {"e2e_ms": [], "gpu_ms": [], "host_us": []} for arm in ("window", "raster")}
    for _ in range(3):
        for arm, rule in (("window", window_rule), ("raster", raster_rule)):
            kernels.tma_config = rule  # ops reads it through the kernels module
            plan._PLANS.clear()
            fn = functools.partial(im2win.conv2d, x, w)
            times[arm]["e2e_ms"].append(timer(fn, 30))
            times[arm]["gpu_ms"].append(gpu_ms(fn, flush))
            times[arm]["host_us"].append(host_us(fn))
    kernels.tma_config = window_rule
    rows.append(dict(layer=name, **{arm: t for arm, t in times.items()}))
    med = {arm: {key: statistics.median(v) for key, v in t.items()} for arm, t in times.items()}
    print(name, " ".join(f"{arm}: e2e {m['e2e_ms']:.4f} ms gpu {m['gpu_ms']:.4f} ms "
                         f"host {m['host_us']:.0f} us" for arm, m in med.items()), flush=True)
out = os.path.join(os.environ.get("OUT", "."), "raster_1x1_ab.json")
with open(out, "w") as f:
    meta = provenance(torch.device("cuda"), " ".join(["python3", *sys.argv]))
    json.dump(dict(provenance=meta, rows=rows), f, indent=1)
