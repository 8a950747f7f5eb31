"""32-bit index arithmetic in the pointer kernel: the library's default call on the layers
the pointer kernel serves in the paper suite, timed with the code before (64-bit indices)
and after, each in its own process on the same GPU. Kernel plus host, as the bench times a
call: CudaTimer (L2 flushed), median of 30, three alternations of old and new. Each output
is checked against F.conv2d in fp32 'ieee'.

    python3 ab_index.py <label> <src dir> <out.jsonl>   # once per code state, alternating
"""

import json
import sys

label, src, out = sys.argv[1:4]
sys.path.insert(0, src)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import im2win  # noqa: E402
from im2win.bench.layers import PAPER_LAYERS  # noqa: E402
from im2win.bench.timing import CudaTimer  # noqa: E402

assert im2win.__file__.startswith(src), im2win.__file__
LAYERS = [l for l in PAPER_LAYERS if l.name in ("conv1", "conv2", "conv3", "conv7", "conv4", "conv5", "conv12")]
TIERS = {"bf16": (torch.bfloat16, "ieee"), "tf32": (torch.float32, "tf32")}
timer = CudaTimer(torch.device("cuda"))
with open(out, "a") as f:
    for layer in LAYERS:
        for tier, (dtype, precision) in TIERS.items():
            for layout in ("NCHW", "NHWC"):
                torch.manual_seed(0)
                (xs, ws), kw = layer.shapes(128), layer.conv_kwargs()
                x = torch.randn(xs, device="cuda").to(dtype)
                w = (torch.randn(ws, device="cuda") / (ws[1] * ws[2] * ws[3]) ** 0.5).to(dtype)
                if layout == "NHWC":
                    x = x.to(memory_format=torch.channels_last)
                call = lambda: im2win.conv2d(x, w, **kw, precision=precision)  # noqa: E731
                torch.backends.cudnn.allow_tf32 = False
                ref = F.conv2d(x.float(), w.float(), **kw)
                y = call()
                err = ((y.float() - ref).norm() / ref.norm()).item()
                ms = timer(call, 30)
                row = dict(label=label, layer=layer.name, tier=tier, layout=layout, ms=ms,
                           err=err, gpu=torch.cuda.get_device_name())
                f.write(json.dumps(row) + "\n")
                print(label, layer.name, tier, layout, f"{ms:.4f} ms err {err:.2e}", flush=True)
                del x, w, y, ref
                torch.cuda.empty_cache()
