"""The library's own Python per conv2d call, with the kernel launches stubbed out (CPU only).

Runs under Triton's interpreter so no GPU is needed; the launchers are replaced by no-ops,
so what is timed is argument checking, dispatch, configs and autograd. Usage, from a
checkout of the commit to measure:  PYTHONPATH=src python3 <this file>
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import im2win  # noqa: E402
from im2win import ops  # noqa: E402

ops.kernels.conv2d_fwd = lambda src, weight, bias, y, **kw: y
if hasattr(ops.kernels, "conv2d_fwd_tma"):
    ops.kernels.conv2d_fwd_tma = lambda x, weight, bias, y, **kw: y
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name'"], capture_output=True, text=True)
print(f"commit {commit.stdout.strip()}; {cpu.stdout.strip()}; python {platform.python_version()}"
      f"; torch {torch.__version__}")  # fmt: skip
x = torch.randn(128, 512, 7, 7).bfloat16()
w = torch.randn(512, 512, 3, 3).bfloat16()
for channels_last in (False, True):
    xx = x.to(memory_format=torch.channels_last) if channels_last else x
    for _ in range(5):
        im2win.conv2d(xx, w)
    start = time.perf_counter()
    for _ in range(200):
        im2win.conv2d(xx, w)
    us = (time.perf_counter() - start) / 200 * 1e6
    print(f"channels_last={channels_last}: {us:.1f} us a call")
