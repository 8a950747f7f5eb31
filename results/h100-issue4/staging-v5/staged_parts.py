"""Scratch: where a staged NCHW call's time goes (bf16, batch 128), one run."""
import os, sys, time, json, statistics, torch
sys.path.insert(0, "src")
import im2win
from im2win import ops
from im2win.params import ConvParams
from im2win.bench.layers import PAPER_LAYERS
from im2win.bench.timing import CudaTimer
L = {l.name: l for l in PAPER_LAYERS}
timer = CudaTimer(torch.device("cuda"))
def host_us(fn, n=30):
    ts = []
    for _ in range(n):
        torch.cuda.synchronize(); t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    torch.cuda.synchronize(); return statistics.median(ts) * 1e6
out = []
for name in ["conv5", "conv6", "conv8", "conv10", "conv11", "conv12"]:
  for dt in (torch.bfloat16, torch.float32):
    l = L[name]; xs, ws = l.shapes(128)
    prec = "tf32" if dt == torch.float32 else "ieee"
    from im2win.baselines.common import set_fp32_precision; set_fp32_precision(dt == torch.float32)
    x = torch.randn(xs, device="cuda", dtype=dt); w = torch.randn(ws, device="cuda", dtype=dt)
    xcl = x.contiguous(memory_format=torch.channels_last)
    p = ConvParams((1, 1), (0, 0, 0, 0), (1, 1), 1)
    chunk = ops.staged_images(x, w.shape, p, False)
    if not chunk: continue
    y = torch.empty((128, l.k, l.out_hw, l.out_hw), device="cuda", dtype=dt)
    into = ops.plan_into(xcl, w, None, p, channels_last=True, precision=prec, windows=None, config=None)
    buf = torch.empty((chunk, *xs[1:]), device="cuda", dtype=dt).to(memory_format=torch.channels_last)
    fl = l.flop(128)
    def copies():
        for i in range(0, 128, chunk):
            b = buf[: min(chunk, 128 - i)]; b.copy_(x[i:i + chunk])
    def copies_triton():
        for i in range(0, 128, chunk):
            b = buf[: min(chunk, 128 - i)]; im2win.kernels.copy_to_channels_last(x[i:i + chunk], b, interpreted=False)
    r = dict(layer=name, dtype=str(dt)[6:], chunk=chunk)
    for key, fn in [("full_nchw", lambda: im2win.conv2d(x, w, precision=prec)), ("nhwc", lambda: im2win.conv2d(xcl, w, precision=prec)),
                    ("copies", copies), ("copies_triton", copies_triton), ("w_relay", lambda: w.contiguous(memory_format=torch.channels_last)),
                    ("kern_nchw_out", lambda: into(xcl, w, None, y)),
                    ("cudnn_nchw", lambda: torch.nn.functional.conv2d(x, w))]:
        torch.backends.cudnn.benchmark = True
        r[key + "_ms"] = timer(fn, 10); r[key + "_host_us"] = host_us(fn)
        r[key + "_tf"] = fl / r[key + "_ms"] / 1e9
    out.append(r)
    print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "staged_parts.json"), "w"))
