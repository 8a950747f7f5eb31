"""The variant registry against the code before it, in one process on one GPU: for each case,
whether both produce the same bits, their GPU time (CUDA events, median of 20) and the host
time of a cached call (back to back, mean of 50; median of 5 rounds, old and new
alternating). The code before is imported as the package `im2win_old`:

    git worktree add /tmp/before 5907e7a
    mkdir /tmp/old && cp -r /tmp/before/src/im2win /tmp/old/im2win_old
    PYTHONPATH=src python3 notes/registry/host_ab.py /tmp/old
"""

import statistics
import sys
import time

import torch

sys.path.insert(0, sys.argv[1])  # the folder holding im2win_old
import im2win_old  # noqa: E402, I001

import im2win  # noqa: E402

BF16, FP32 = torch.bfloat16, torch.float32

CASES = {  # name: (input shape, weight shape, dtype, precision, channels_last, conv kwargs)
    "tma c64 56x56 b1": ((1, 64, 56, 56), (64, 64, 3, 3), BF16, None, True, dict(padding=1)),
    "raster conv8 b128": ((128, 64, 112, 112), (128, 64, 3, 3), BF16, None, True, {}),
    "stem conv1 b1 NCHW": ((1, 3, 227, 227), (96, 3, 11, 11), BF16, None, False, dict(stride=4)),
    "staged c64 56x56 b32": ((32, 64, 56, 56), (128, 64, 3, 3), BF16, None, False,
                             dict(padding=1)),
    "packed g32 28x28 b1": ((1, 256, 28, 28), (256, 8, 3, 3), BF16, None, True,
                            dict(padding=1, groups=32)),
    "depthwise 112 b1": ((1, 32, 112, 112), (32, 1, 3, 3), FP32, None, True,
                         dict(padding=1, groups=32)),
    "wide tf32 conv5 b128": ((128, 96, 24, 24), (256, 96, 5, 5), FP32, "tf32", True, {}),
    "split-k c512 7x7 b1": ((1, 512, 7, 7), (512, 512, 3, 3), BF16, None, True, dict(padding=1)),
    "tf32x3 stem conv3 b1": ((1, 3, 227, 227), (64, 3, 7, 7), FP32, "tf32x3", False,
                             dict(stride=2)),
}  # fmt: skip


def host_us(fn, calls=50):
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def gpu_ms(fn, reps=20):
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
print(f"{'case':24s} {'same bits':9s} {'gpu ms old/new':>15s} {'host us old/new':>16s}  variant")
for name, (xs, ws, dtype, precision, cl, kw) in CASES.items():
    torch.manual_seed(0)
    x = torch.randn(xs, device="cuda").to(dtype)
    if cl:
        x = x.to(memory_format=torch.channels_last)
    w, b = torch.randn(ws, device="cuda").to(dtype), torch.randn(ws[0], device="cuda").to(dtype)
    run = dict(bias=b, **kw, precision=precision)
    old = lambda x=x, w=w, run=run: im2win_old.conv2d(x, w, **run)  # noqa: E731
    new = lambda x=x, w=w, run=run: im2win.conv2d(x, w, **run)  # noqa: E731
    same = torch.equal(old(), new())
    rounds = {"old": [], "new": []}
    for _ in range(5):
        for key, fn in (("old", old), ("new", new)):
            rounds[key].append(host_us(fn))
    g_old, g_new = gpu_ms(old), gpu_ms(new)
    h_old, h_new = (statistics.median(rounds[k]) for k in ("old", "new"))
    choice = im2win.explain(x, w, **run).choice
    runs = choice.inner[0] if choice.inner else choice  # a staged input: its chunks' choice
    variant = choice.variant.name + (f" > {runs.variant.name}" if choice.inner else "")
    print(
        f"{name:24s} {str(same):9s} {g_old:7.3f}/{g_new:7.3f} {h_old:7.1f}/{h_new:7.1f}  "
        f"{variant} SPLIT_K={runs.config.get('SPLIT_K')}",
        flush=True,
    )
