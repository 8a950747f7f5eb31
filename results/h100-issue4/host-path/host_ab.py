"""Host us per call (GPU held busy, so only the CPU's work counts) of im2win.conv2d and F.conv2d."""
import sys, time, json
import torch, torch.nn.functional as F
import im2win
from im2win.bench.layers import PAPER_LAYERS

def host_us(fn, reps=100):
    for _ in range(10): fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(5):
        torch.cuda._sleep(100_000_000)  # ~60 ms of GPU spin: the queue never drains meanwhile
        t = time.perf_counter()
        for _ in range(reps): fn()
        out.append((time.perf_counter() - t) / reps * 1e6)
        torch.cuda.synchronize()
    return sorted(out)[len(out) // 2]

layers = {l.name: l for l in PAPER_LAYERS}
for name, batch, dtype, prec, cl in [("conv12", 128, torch.bfloat16, None, True),
                                     ("conv11", 128, torch.bfloat16, None, True),
                                     ("conv12", 128, torch.bfloat16, None, False),
                                     ("conv12", 128, torch.float32, "tf32x3", False),
                                     ("conv12", 1, torch.bfloat16, None, True),
                                     ("conv9", 1, torch.float32, None, False),
                                     ("conv1", 1, torch.bfloat16, None, False)]:
    L = layers[name]
    xs, ws = L.shapes(batch)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(xs, device="cuda").to(dtype=dtype, memory_format=fmt)
    w = torch.randn(ws, device="cuda").to(dtype)
    kw = L.conv_kwargs()
    tag = f"{name} b{batch} {str(dtype)[6:]} {'NHWC' if cl else 'NCHW'}"
    r = dict(case=tag, src=sys.argv[1],
             im2win=host_us(lambda: im2win.conv2d(x, w, precision=prec, **kw)),
             torch=host_us(lambda: F.conv2d(x, w, **kw)))
    print(json.dumps(r), flush=True)
