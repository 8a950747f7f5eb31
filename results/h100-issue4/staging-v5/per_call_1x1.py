"""Per-call GPU ms and host us of staged NCHW 1x1 layers (bf16), vs NHWC, as in the bench."""
import sys, time, torch
sys.path.insert(0, "src")
import im2win
from im2win.bench.layers import RESNET50_LAYERS, PAPER_LAYERS
from im2win.bench.timing import FLUSH_BYTES
L = {l.name: l for l in RESNET50_LAYERS + PAPER_LAYERS}
flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
def per_call(fn, n=12, do_flush=True):
    for _ in range(3): fn()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    host = []
    torch.cuda.synchronize()
    for s, e in ev:
        if do_flush: flush.zero_()
        s.record(); t = time.perf_counter(); fn(); host.append((time.perf_counter() - t) * 1e6); e.record()
    torch.cuda.synchronize()
    g = sorted(s.elapsed_time(e) for s, e in ev); h = sorted(host)
    return round(g[n // 2], 3), round(h[n // 2])
for name in ("r50-l2-1x1-512", "r50-l3-1x1-1024", "r50-l4-1x1-2048", "conv6"):
    for batch in (128, 32):
        l = L[name]; xs, ws = l.shapes(batch)
        g = torch.Generator("cuda").manual_seed(0)
        x = torch.randn(xs, device="cuda", generator=g).to(torch.bfloat16); w = torch.randn(ws, device="cuda", generator=g).to(torch.bfloat16)
        xc, wc = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
        for tag, fn in (("nchw", lambda: im2win.conv2d(x, w, **l.conv_kwargs())),
                        ("nhwc", lambda: im2win.conv2d(xc, wc, **l.conv_kwargs())),
                        ("cudnn-nchw", lambda: torch.nn.functional.conv2d(x, w, **l.conv_kwargs()))):
            torch.backends.cudnn.benchmark = True
            (gm, hu), (gm2, hu2) = per_call(fn), per_call(fn, do_flush=False)
            print(f"{name:18s} b{batch:3d} {tag:10s} flushed: gpu {gm} ms host {hu} us | back-to-back: gpu {gm2} ms host {hu2} us", flush=True)
