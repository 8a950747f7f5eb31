"""One weight gradient of conv8 (bf16, channels-last, batch 128) by the TMA kernel and one by
cuDNN (its heuristic's choice), twice, for Nsight Compute to compare:

    PYTHONPATH=src ncu --kernel-name regex:wgrad --launch-count 4 --section SpeedOfLight \\
        --section WarpStateStats python3 notes/backward/profile_wgrad.py
"""

import torch
import torch.nn.functional as F

from im2win import grad
from im2win.bench.layers import PAPER_LAYERS

layer = next(layer for layer in PAPER_LAYERS if layer.name == "conv8")
xshape, wshape = layer.shapes(128)
kw = layer.conv_kwargs()
torch.backends.cudnn.benchmark = False  # the heuristic's kernel: no search under the profiler
x = torch.randn(xshape, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
w = torch.randn(wshape, device="cuda", dtype=torch.bfloat16)
dy = torch.randn_like(F.conv2d(x, w, **kw))
args = (dy, x, w, None, [layer.stride] * 2, [layer.padding] * 2, [layer.dilation] * 2, False,
        [0, 0], 1, [False, True, False])  # fmt: skip
for _ in range(2):  # the first pair compiles
    grad.conv2d_weight(x, w.shape, dy, **kw)
    torch.ops.aten.convolution_backward.default(*args)
torch.cuda.synchronize()
