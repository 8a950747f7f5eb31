"""Host us of the pieces of one TMA-path call, on tiny tensors (GPU work negligible)."""
import time, sys, statistics, torch
sys.path.insert(0, "src")
import im2win
from im2win import kernels, plan
from im2win.kernels.conv2d_fwd import kernel_filter
from triton.tools.tensor_descriptor import TensorDescriptor
import torch.nn.functional as F

def us(fn, reps=200):
    for _ in range(20): fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps): fn()
        out.append((time.perf_counter() - t) / reps * 1e6)
        torch.cuda.synchronize()
    return min(out)
res = {}
for tag, xs, ws, cl in (("tma nhwc 512x7x7", (1, 512, 7, 7), (512, 512, 3, 3), True),
                        ("tma nhwc 64x16x16", (1, 64, 16, 16), (64, 64, 3, 3), True),
                        ("pointer nchw 64x16x16", (1, 64, 16, 16), (64, 64, 3, 3), False),
                        ("staged nchw 64x16x16 b32", (32, 64, 16, 16), (256, 64, 3, 3), False)):
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(xs, device="cuda").to(dtype=torch.bfloat16, memory_format=fmt)
    w = torch.randn(ws, device="cuda").to(torch.bfloat16)
    res[f"{tag}: F.conv2d"] = us(lambda: F.conv2d(x, w, padding=1))
    res[f"{tag}: im2win.conv2d"] = us(lambda: im2win.conv2d(x, w, padding=1))
    args = (x, w, None, 1, 1, 1, 1)
    kw = dict(precision=None, backend="auto", windows=None, config=None)
    p = plan.conv2d_plan(*args, **kw)
    res[f"{tag}: plan lookup"] = us(lambda: plan.conv2d_plan(*args, **kw))
    res[f"{tag}: signature"] = us(lambda: plan.signature(x, w, None, (1, 1, 1, 1, None, "auto", None)))
    res[f"{tag}: plan.launch"] = us(lambda: p.launch(x, w, None))
    res[f"{tag}: torch.empty out"] = us(lambda: torch.empty((xs[0], ws[0], xs[2], xs[3]), device="cuda", dtype=torch.bfloat16, memory_format=fmt))
    res[f"{tag}: kernel_filter rfc"] = us(lambda: kernel_filter(w, "rfc"))
    res[f"{tag}: weight.contiguous(cl)"] = us(lambda: w.contiguous(memory_format=torch.channels_last))
    if cl:
        n, c, h, wd = x.shape; sn, sc, sh, sw = x.stride()
        res[f"{tag}: TensorDescriptor x"] = us(lambda: TensorDescriptor(x, [n, h, wd, c], [sn, sh, sw, sc], [1, 8, 16, 64]))
for k, v in res.items():
    print(f"{k:50s} {v:7.1f} us", flush=True)
