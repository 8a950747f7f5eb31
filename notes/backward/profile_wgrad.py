"""One weight gradient of conv8 (bf16, channels-last, batch 128) by the TMA kernel, one by the
warp-specialized kernel (the rule's `ws_tiles`, else its first candidate) and one by cuDNN
(its heuristic's choice), twice, for Nsight Compute to compare:

    PYTHONPATH=src ncu --kernel-name "regex:wgrad_(tma|ws)_kernel|xmma_wgrad" \\
        --launch-count 6 --section SpeedOfLight --section WarpStateStats \\
        python3 notes/backward/profile_wgrad.py
"""

import torch
import torch.nn.functional as F

from im2win import grad
from im2win.bench.layers import PAPER_LAYERS
from im2win.variants import target_of

layer = next(layer for layer in PAPER_LAYERS if layer.name == "conv8")
xshape, wshape = layer.shapes(128)
kw = layer.conv_kwargs()
torch.backends.cudnn.benchmark = False  # the heuristic's kernel: no search under the profiler
x = torch.randn(xshape, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
w = torch.randn(wshape, device="cuda", dtype=torch.bfloat16)
dy = torch.randn_like(F.conv2d(x, w, **kw))
args = (dy, x, w, None, [layer.stride] * 2, [layer.padding] * 2, [layer.dilation] * 2, False,
        [0, 0], 1, [False, True, False])  # fmt: skip
rule = target_of(x.device, False).table["wgrad"]
shipped = rule["ws_tiles"]
ws_tiles = shipped or dict(zip(rule["ws_candidates_keys"], rule["ws_candidates"][0], strict=True))
for _ in range(2):  # the first round compiles
    rule["ws_tiles"] = None
    grad.conv2d_weight(x, w.shape, dy, **kw)  # the TMA kernel
    rule["ws_tiles"] = ws_tiles
    grad.conv2d_weight(x, w.shape, dy, **kw)  # the warp-specialized kernel
    torch.ops.aten.convolution_backward.default(*args)
rule["ws_tiles"] = shipped
torch.cuda.synchronize()
