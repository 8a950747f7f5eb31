"""The depthwise row-tile kernel on EfficientNet-B0's 32-channel 112x112 layer (batch 64,
channels-last, 32 x 32 tiles, every filter row unrolled), three calls, for Nsight Compute:

    ncu --kernel-name regex:dw_rows --launch-skip 2 --launch-count 1 --section SpeedOfLight \\
        --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \\
        --section LaunchStats python3 notes/depthwise/profile_rows.py bf16   # or fp32

with `src` on PYTHONPATH. `ncu-rows-{bf16,fp32}-h200.txt` are that command's output on the
H200 (PyTorch 2.11, Triton 3.6), at b334277 with the row kernel of 086f443, which then
unrolled every row in both types (here UNROLL_ROWS=True says so).
"""

import sys

import torch

from im2win.kernels import conv2d_fwd_dw
from im2win.params import conv_params
from im2win.problem import ConvProblem, MathMode

dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[sys.argv[1]]
x = torch.randn(64, 32, 112, 112, device="cuda", dtype=dtype)
x = x.to(memory_format=torch.channels_last)
w = torch.randn(32, 1, 3, 3, device="cuda", dtype=dtype)
y = torch.empty_like(x)
math = MathMode.of(dtype, "ieee" if dtype == torch.float32 else None)
problem = ConvProblem.of(x, w, conv_params(1, 1, 1, 32, kernel_size=(3, 3)), math)
config = dict(BLOCK_Q=32, BLOCK_C=32, num_warps=4, UNROLL_ROWS=True)
for _ in range(3):
    conv2d_fwd_dw(x, w, None, y, problem, config=config)
torch.cuda.synchronize()
