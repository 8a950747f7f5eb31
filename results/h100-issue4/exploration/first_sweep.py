"""Call A: TMA kernel configs vs pointer kernel vs cuDNN; rows loop on stems. Scratch."""
import os, sys, json, time, itertools, torch, torch.nn.functional as F, triton
sys.path.insert(0, "src")
import im2win
from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS, EXTRA_LAYERS
from im2win.bench.timing import CudaTimer
from im2win.kernels.conv2d_fwd_tma import conv2d_fwd_tma, tma_supported
from im2win.baselines.common import set_fp32_precision
OUT = os.environ.get("OUT", ".")
T0 = time.time(); BUDGET = float(os.environ.get("BUDGET", 500))
timer = CudaTimer(torch.device("cuda"))
print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
rows = []
def save(): json.dump(rows, open(os.path.join(OUT, "explore.json"), "w"))
L = {l.name: l for l in PAPER_LAYERS + RESNET50_LAYERS + EXTRA_LAYERS}
TIERS = {"bf16": (torch.bfloat16, "ieee"), "tf32": (torch.float32, "tf32"), "tf32x3": (torch.float32, "tf32x3")}
def tma_cfgs(dt, k):
    bk = 64 if dt.itemsize == 2 else 32
    base = [((8,16),128,8,3),((8,16),128,4,4),((8,16),256,8,3),((16,16),128,8,3),((4,16),128,4,4),
            ((4,32),128,8,3),((16,8),128,8,3),((8,8),128,4,4),((8,16),64,4,4),((16,16),64,8,3)]
    out = []
    for (bp,bq),bn,w,s in base:
        if bn > max(64, triton.next_power_of_2(k)): continue
        out.append(dict(BLOCK_P=bp,BLOCK_Q=bq,BLOCK_N=bn,BLOCK_K=bk,num_warps=w,num_stages=s))
    return out
def ref_fp32(x, w, kw):
    set_fp32_precision(False)
    return F.conv2d(x.float(), w.float(), None, **kw).double()
def err(y, ref): return ((y.double()-ref).norm()/ref.norm()).item()
def cudnn_ms(x, w, kw, tier):
    torch.backends.cudnn.benchmark = True
    set_fp32_precision(tier == "tf32")
    if tier == "tf32x3": set_fp32_precision(False)
    return timer(lambda: F.conv2d(x, w, None, **kw), 10)
def over(): return time.time() - T0 > BUDGET
# Part 1: TMA on stride-1 layers, NHWC
part1 = ["conv5","conv6","conv8","conv9","conv10","conv11","conv12","r50-l1-3x3","r50-l3-1x1-reduce","dilated3x3-d2-28"]
for name, tier in itertools.product(part1, ["bf16","tf32","tf32x3"]):
    if over(): break
    l = L[name]; dt, prec = TIERS[tier]; kw = l.conv_kwargs()
    xs, ws = l.shapes(128)
    x = torch.randn(xs, device="cuda").to(dt).to(memory_format=torch.channels_last)
    w = torch.randn(ws, device="cuda").to(dt)
    ref = ref_fp32(x, w, kw)
    fl = l.flop(128)
    res = dict(layer=name, tier=tier)
    res["cudnn"] = fl/cudnn_ms(x, w, kw, tier)/1e9
    f = lambda: im2win.conv2d(x, w, None, **kw, precision=prec)
    res["default"] = fl/timer(f, 10)/1e9; res["default_err"] = err(f(), ref)
    y = torch.empty((128, l.k, l.out_hw, l.out_hw), device="cuda", dtype=dt).to(memory_format=torch.channels_last)
    best = None
    assert tma_supported(x, l.c // l.groups, (l.stride, l.stride))
    for cfg in tma_cfgs(dt, l.k):
        g = lambda: conv2d_fwd_tma(x, w, None, y, groups=l.groups, dilation=(l.dilation,)*2,
                pad_top_left=(l.padding,)*2, precision=prec, config=cfg, interpreted=False)
        try:
            y.fill_(float("nan")); g(); e = err(y, ref)
            t = fl/timer(g, 10)/1e9
        except Exception as ex:
            print("ERR", name, tier, cfg, repr(ex)[:300], flush=True); continue
        rows.append(dict(part="tma", layer=name, tier=tier, cfg=cfg, tflops=t, err=e))
        if best is None or t > best[0]: best = (t, cfg, e)
    # NCHW input: channels_last copy + TMA, NCHW output
    if best:
        xn = x.contiguous(); yn = torch.empty((128, l.k, l.out_hw, l.out_hw), device="cuda", dtype=dt)
        cfg = best[1]
        def h():
            xc = xn.contiguous(memory_format=torch.channels_last)
            conv2d_fwd_tma(xc, w, None, yn, groups=l.groups, dilation=(l.dilation,)*2,
                pad_top_left=(l.padding,)*2, precision=prec, config=cfg, interpreted=False)
        h(); res["nchw_via_copy"] = fl/timer(h, 10)/1e9; res["nchw_via_copy_err"] = err(yn, ref)
        res["cudnn_nchw"] = fl/cudnn_ms(xn, w, kw, tier)/1e9
        fdn = lambda: im2win.conv2d(xn, w, None, **kw, precision=prec)
        res["default_nchw"] = fl/timer(fdn, 10)/1e9
        res["tma"] = best[0]; res["tma_err"] = best[2]; res["tma_cfg"] = "%dx%d n%d w%d s%d" % (best[1]["BLOCK_P"], best[1]["BLOCK_Q"], best[1]["BLOCK_N"], best[1]["num_warps"], best[1]["num_stages"])
    rows.append(dict(part="summary1", **res)); save()
    print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), f"[{time.time()-T0:.0f}s]", flush=True)
    del x, w, ref, y; torch.cuda.empty_cache()
# Part 2: stems, flat vs rows loops, pointer kernel
def ptr_cfgs(dt):
    out = []
    for bm, bn, bk, w in [(128,128,64,8),(128,64,64,4),(256,64,64,8),(128,32,64,4),(64,128,64,4),(256,128,64,8),(128,128,32,8),(128,64,32,4),(256,32,32,4),(128,128,128,8)]:
        if dt.itemsize == 4 and bk == 128: continue
        out.append(dict(BLOCK_M=bm,BLOCK_N=bn,BLOCK_K=bk,num_warps=w,num_stages=3))
    return out
for name, tier, cl in itertools.product(["conv1","conv2","conv3","conv7","r50-stem-7x7"], ["bf16","tf32"], [True, False]):
    if over(): break
    l = L[name]; dt, prec = TIERS[tier]; kw = l.conv_kwargs()
    xs, ws = l.shapes(128)
    x = torch.randn(xs, device="cuda").to(dt)
    if cl: x = x.to(memory_format=torch.channels_last)
    w = torch.randn(ws, device="cuda").to(dt)
    ref = ref_fp32(x, w, kw); fl = l.flop(128)
    res = dict(layer=name, tier=tier, layout="NHWC" if cl else "NCHW")
    res["cudnn"] = fl/cudnn_ms(x, w, kw, tier)/1e9
    f = lambda: im2win.conv2d(x, w, None, **kw, precision=prec)
    res["default"] = fl/timer(f, 10)/1e9
    for loop in ("flat", "rows"):
        best = None
        for cfg in ptr_cfgs(dt):
            c2 = dict(cfg, LOOP=loop)
            g = lambda: im2win.conv2d(x, w, None, **kw, precision=prec, config=c2)
            try:
                e = err(g(), ref); t = fl/timer(g, 10)/1e9
            except Exception as ex:
                print("ERR", name, tier, c2, repr(ex)[:300], flush=True); continue
            rows.append(dict(part="stem", layer=name, tier=tier, layout=res["layout"], cfg=c2, tflops=t, err=e))
            if best is None or t > best[0]: best = (t, cfg, e)
        if best:
            res[loop] = best[0]; res[loop+"_err"] = best[2]; res[loop+"_cfg"] = "%dx%dx%d" % (best[1]["BLOCK_M"], best[1]["BLOCK_N"], best[1]["BLOCK_K"])
    rows.append(dict(part="summary2", **res)); save()
    print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), f"[{time.time()-T0:.0f}s]", flush=True)
    del x, w, ref; torch.cuda.empty_cache()
save()
