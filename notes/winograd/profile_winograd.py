"""One fp32-accurate conv11 (NCHW, batch 128) by the Winograd variant (3xTF32 GEMMs, the
table's `tiles`, else a candidate: argv[1], default 2) and one by cuDNN's WINOGRAD_NONFUSED
engine, twice, for Nsight Compute to put the four kernels beside cuDNN's:

    PYTHONPATH=src ncu --kernel-name "regex:winograd|Winograd|gemm|sgemm" --launch-skip 5 \\
        --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis \\
        python3 notes/winograd/profile_winograd.py [candidate]

(`--launch-skip` passes the first round, which compiles; the second round's kernels follow.)
"""

import sys

import torch
import torch.nn.functional as F

import im2win
from im2win.baselines import cudnn
from im2win.baselines.common import set_fp32_precision
from im2win.bench.layers import PAPER_LAYERS
from im2win.variants import target_of

layer = next(layer for layer in PAPER_LAYERS if layer.name == "conv11")
xshape, wshape = layer.shapes(128)
kw = layer.conv_kwargs()
set_fp32_precision(False)  # cuDNN in fp32 without TF32: the fp32-accurate tier
x = torch.randn(xshape, device="cuda")
w = torch.randn(wshape, device="cuda") / (wshape[1] * 9) ** 0.5
table = target_of(x.device, False).table["winograd"]
row = table["candidates"][int(sys.argv[1]) if len(sys.argv) > 1 else 2]
tiles = table["tiles"] or dict(zip(table["candidates_keys"], row, strict=True))
config = dict(tiles, VARIANT="winograd")
engine = cudnn.make(x, w, None, **kw, tier="fp32", algo="WINOGRAD_NONFUSED")
ref = F.conv2d(x.double(), w.double(), None, **kw)
for _ in range(2):  # the first round compiles
    y = im2win.conv2d(x, w, None, **kw, precision="tf32x3", config=config)
    engine.run()
torch.cuda.synchronize()
print(f"conv11 NCHW b128 winograd {tiles}: relative error "
      f"{((y.double() - ref).norm() / ref.norm()).item():.3g}")  # fmt: skip
