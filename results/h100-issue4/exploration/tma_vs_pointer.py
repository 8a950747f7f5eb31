"""Call B: TMA vs pointer configs (valid BK), errors per config. Scratch."""
import os, sys, json, time, itertools, torch, torch.nn.functional as F, triton
sys.path.insert(0, "src")
import im2win
from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS, EXTRA_LAYERS
from im2win.bench.timing import CudaTimer
from im2win.kernels.conv2d_fwd_tma import conv2d_fwd_tma, tma_supported, tma_block_k
from im2win.baselines.common import set_fp32_precision
OUT = os.environ.get("OUT", ".")
T0 = time.time(); BUDGET = float(os.environ.get("BUDGET", 500))
timer = CudaTimer(torch.device("cuda"))
rows = []
def save(): json.dump(rows, open(os.path.join(OUT, "explore2.json"), "w"))
L = {l.name: l for l in PAPER_LAYERS + RESNET50_LAYERS + EXTRA_LAYERS}
TIERS = {"bf16": (torch.bfloat16, "ieee"), "tf32": (torch.float32, "tf32"), "tf32x3": (torch.float32, "tf32x3")}
BOUND = {"bf16": 2.0e-3, "tf32": 1.0e-3, "tf32x3": 2e-6}
TMA = [(8,16,128,4,4),(8,16,128,4,3),(16,8,128,4,4),(4,32,128,4,4),(16,16,128,8,3),(16,16,128,8,4),
       (8,16,256,8,3),(8,16,64,4,4),(16,16,64,8,3),(8,8,128,4,4),(4,16,128,4,4),(2,32,128,4,4),(8,32,128,8,3),(8,16,128,8,3)]
PTR = [(64,128,4,3),(128,128,8,3),(128,64,4,3),(128,128,8,4),(256,128,8,3),(64,64,4,4),(256,64,8,3)]
def ref_fp32(x, w, kw):
    set_fp32_precision(False)
    return F.conv2d(x.float(), w.float(), None, **kw).double()
def err(y, ref): return ((y.double()-ref).norm()/ref.norm()).item()
def over(): return time.time() - T0 > BUDGET
layers = ["conv8","conv5","conv10","conv9","conv11","conv6","conv12","r50-l1-3x3","r50-l1-1x1-64","r50-l3-1x1-reduce","r50-l2-1x1-512","r50-l2-3x3","r50-l3-3x3","r50-l4-3x3","dilated3x3-d2-28"]
for name, tier in itertools.product(layers, ["bf16","tf32"]):
    if over(): break
    l = L[name]; dt, prec = TIERS[tier]; kw = l.conv_kwargs()
    xs, ws = l.shapes(128)
    x = torch.randn(xs, device="cuda").to(dt).to(memory_format=torch.channels_last)
    w = torch.randn(ws, device="cuda").to(dt)
    ref = ref_fp32(x, w, kw); fl = l.flop(128)
    torch.backends.cudnn.benchmark = True; set_fp32_precision(tier == "tf32")
    res = dict(layer=name, tier=tier, cudnn=fl/timer(lambda: F.conv2d(x, w, None, **kw), 10)/1e9)
    y = torch.empty((128, l.k, l.out_hw, l.out_hw), device="cuda", dtype=dt).to(memory_format=torch.channels_last)
    bk = tma_block_k(l.c // l.groups, dt)
    for kind, cfgs in (("tma", TMA), ("ptr", PTR)):
        best = None; bad = []
        for c in cfgs:
            if kind == "tma":
                bp, bq, bn, nw, ns = c
                if bn > max(64, triton.next_power_of_2(l.k)): continue
                cfg = dict(BLOCK_P=bp, BLOCK_Q=bq, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw, num_stages=ns)
                g = lambda: conv2d_fwd_tma(x, w, None, y, groups=l.groups, dilation=(l.dilation,)*2,
                        pad_top_left=(l.padding,)*2, precision=prec, config=cfg, interpreted=False)
            else:
                bm, bn, nw, ns = c
                if bn > max(64, triton.next_power_of_2(l.k)): continue
                cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=64 if dt.itemsize == 2 else 32, num_warps=nw, num_stages=ns, LOOP="channels")
                g = lambda: im2win.conv2d(x, w, None, **kw, precision=prec, config=cfg)
            try:
                y.fill_(float("nan")); e = err(g(), ref)
                t = fl/timer(g, 10)/1e9
            except Exception as ex:
                print("ERR", name, tier, kind, c, repr(ex)[:200], flush=True); continue
            rows.append(dict(part=kind, layer=name, tier=tier, cfg=c, tflops=t, err=e))
            if not e <= BOUND[tier]: bad.append((c, round(e, 5))); continue
            if best is None or t > best[0]: best = (t, c)
        res[kind] = best[0] if best else 0; res[kind + "_cfg"] = best[1] if best else None
        if bad: res[kind + "_BAD"] = bad
    rows.append(dict(part="summary", **res)); save()
    print(" ".join(f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), f"[{time.time()-T0:.0f}s]", flush=True)
    del x, w, ref, y; torch.cuda.empty_cache()
save()
