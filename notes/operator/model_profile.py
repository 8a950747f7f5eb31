"""Where a converted model's eager forward spends its host time: plan misses, GPU
synchronizations and a cProfile of a few forwards, for one model and mode of the models suite.

Usage: PYTHONPATH=src python3 notes/operator/model_profile.py resnet50 eager-bf16-cl 64
"""

import cProfile
import pstats
import sys
import time

import torch

from im2win import plan as plans
from im2win.bench import models as suite

name, mode_name, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec, mode = suite.MODELS[name], suite.MODES[mode_name]
with suite.stock_settings():
    x, _ = suite._inputs(spec, mode, batch, torch.device("cuda"))
    stock, converted = suite._arms(suite._build(spec), mode, torch.device("cuda"))
    made = []
    make_plan = plans.make_plan
    plans.make_plan = lambda *a, **k: made.append(1) or make_plan(*a, **k)

    def forward(model):
        with torch.no_grad(), suite.autocast_context(x.device, mode.autocast):
            return model(x)

    for model in (stock, converted):
        for _ in range(3):
            forward(model)
    made.clear()
    torch.cuda.set_sync_debug_mode("warn")
    forward(converted)
    torch.cuda.set_sync_debug_mode(0)
    for label, model in (("stock", stock), ("im2win", converted)):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            forward(model)
        host = (time.perf_counter() - start) / 10 * 1e3
        torch.cuda.synchronize()
        print(f"{label}: {host:.2f} ms until 10 forwards returned, per forward")
    print(f"plans made in warm forwards: {len(made)}")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(5):
        forward(converted)
    profile.disable()
    torch.cuda.synchronize()
    pstats.Stats(profile).sort_stats("tottime").print_stats(18)
