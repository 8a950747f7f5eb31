"""conv8 (bf16, channels-last, batch 128) once through the strips kernel and once through
F.conv2d (cuDNN), for Nsight Compute:

    ncu -k regex:"strips|xmma|cutlass" -c 2 --section SpeedOfLight --section Occupancy \
        --section WarpStateStats --section LaunchStats \
        python3 notes/mainloop/profile_conv8.py

Each is run (and compiled, and cuDNN's algorithm chosen) before the profiler's launches.
"""

import torch
import torch.nn.functional as F

import im2win

torch.backends.cudnn.benchmark = True
x = torch.randn(128, 64, 112, 112, device="cuda", dtype=torch.bfloat16)
x = x.to(memory_format=torch.channels_last)
w = torch.randn(128, 64, 3, 3, device="cuda", dtype=torch.bfloat16)
w = w.to(memory_format=torch.channels_last)
ours = im2win.conv2d(x, w, backend="triton")
theirs = F.conv2d(x, w)
torch.cuda.synchronize()
assert ((ours.float() - theirs.float()).norm() / theirs.float().norm()).item() < 1e-2
ours = im2win.conv2d(x, w, backend="triton")  # the profiled launches
theirs = F.conv2d(x, w)
torch.cuda.synchronize()
