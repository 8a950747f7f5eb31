"""Host time of one cached conv call: im2win.conv2d against F.conv2d, batch 1, on the GPU.

Each call is timed in a loop of small launches, so the GPU never limits the loop: the
per-call wall time is host time. Then a cProfile of the im2win loop, its top functions.
Usage: PYTHONPATH=src python3 notes/operator/host_time.py
"""

import cProfile
import pstats
import time

import torch
import torch.nn.functional as F

import im2win
from im2win.bench.env import provenance

torch.backends.cudnn.benchmark = True
CASES = [  # (name, dtype, channels_last, C, K, HW, R)
    ("64ch 56x56 3x3", torch.bfloat16, True, 64, 64, 56, 3),
    ("256ch 14x14 1x1", torch.bfloat16, True, 256, 256, 14, 1),
    ("3ch 224 7x7/2 stem", torch.bfloat16, True, 3, 64, 224, 7),
    ("64ch 56x56 3x3 fp32", torch.float32, False, 64, 64, 56, 3),
]


def per_call_us(fn, calls=2000) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def compare(name, dtype, cl, c, k, hw, r) -> None:
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(1, c, hw, hw, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(k, c, r, r, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
    b = torch.randn(k, device="cuda", dtype=dtype)
    kw = dict(stride=2 if r == 7 else 1, padding=r // 2)
    with torch.no_grad():
        auto = per_call_us(lambda: im2win.conv2d(x, w, b, **kw))
        kernels = per_call_us(lambda: im2win.conv2d(x, w, b, **kw, backend="triton"))
        stock = per_call_us(lambda: F.conv2d(x, w, b, **kw))
    runs = im2win.explain(x, w, b, **kw).choice.variant.name
    print(
        f"{name:22s} auto {auto:6.1f} us ({runs:13s}) kernels {kernels:6.1f} us  "
        f"F.conv2d {stock:6.1f} us"
    )


info = provenance(torch.device("cuda"), "PYTHONPATH=src python3 notes/operator/host_time.py")
print(" | ".join(f"{key} {info[key]}" for key in ("gpu", "torch", "triton", "cudnn", "commit")))
for case in CASES:
    compare(*case)

x = torch.randn(1, 64, 56, 56, device="cuda", dtype=torch.bfloat16).to(
    memory_format=torch.channels_last
)
w = torch.randn(64, 64, 3, 3, device="cuda", dtype=torch.bfloat16).to(
    memory_format=torch.channels_last
)
profile = cProfile.Profile()
with torch.no_grad():
    profile.enable()
    for _ in range(2000):
        im2win.conv2d(x, w, None, padding=1)
    profile.disable()
pstats.Stats(profile).sort_stats("tottime").print_stats(12)
