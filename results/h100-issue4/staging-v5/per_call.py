"""Per-call times of staged NCHW calls (conv10, conv11 bf16), Triton copy vs torch copy."""
import sys, time, torch
sys.path.insert(0, "src")
import im2win
from im2win import kernels, plan, ops
from im2win.bench.layers import PAPER_LAYERS
from im2win.bench.timing import FLUSH_BYTES
L = {l.name: l for l in PAPER_LAYERS}
flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
orig = kernels.copy_to_channels_last
def torch_copy(x, out, *, interpreted, slot=None):
    return out.copy_(x)
def per_call(fn, n=20):
    for _ in range(3): fn()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    host = []
    torch.cuda.synchronize()
    for s, e in ev:
        flush.zero_(); s.record(); t = time.perf_counter(); fn(); host.append((time.perf_counter() - t) * 1e6); e.record()
    torch.cuda.synchronize()
    return [round(s.elapsed_time(e), 3) for s, e in ev], [round(h) for h in host]
for name in ("conv10", "conv11", "conv12", "conv9"):
    for dt in (torch.bfloat16, torch.float16):
        l = L[name]; xs, ws = l.shapes(128)
        x = torch.randn(xs, device="cuda").to(dt); w = torch.randn(ws, device="cuda").to(dt)
        for mode, fn in (("triton-copy", orig), ("torch-copy", torch_copy)):
            kernels.copy_to_channels_last = fn; plan._PLANS.clear()
            t, h = per_call(lambda: im2win.conv2d(x, w))
            print(name, str(dt)[6:], mode, "gpu ms", t, "host us", h, flush=True)
        kernels.copy_to_channels_last = orig
