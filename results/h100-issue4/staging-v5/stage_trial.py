"""Scratch: NCHW staging as shipped vs staging every NCHW layer with Cg >= 16, one run.
  python3 run_tmp/stage_trial.py compile <i> <n> | time"""
import itertools, json, os, sys, torch
sys.path.insert(0, "src")
import im2win
from im2win import ops, plan, kernels
from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS
from im2win.baselines.common import set_fp32_precision

SHIPPED = ops.staged_images
def every(x, weight_shape, params, channels_last):
    k, cg, r, s = weight_shape
    if channels_last or cg < 16 or params.groups >= x.shape[1] or x[0].numel() == 0:
        return 0
    return max(1, min(x.shape[0], kernels.MAX_COPY_IMAGES, ops.CHUNK_BYTES // (x[0].numel() * x.element_size())))
TIERS = {"bf16": (torch.bfloat16, "ieee"), "tf32": (torch.float32, "tf32")}
CASES = [(l, t, 128) for l in PAPER_LAYERS + RESNET50_LAYERS for t in TIERS] + [(l, "bf16", 32) for l in RESNET50_LAYERS]
CASES = [c for c in CASES if c[0].c // c[0].groups >= 16]

def setup(l, tier, batch):
    dt, prec = TIERS[tier]
    xs, ws = l.shapes(batch)
    x = torch.randn(xs, device="cuda").to(dt); w = torch.randn(ws, device="cuda").to(dt)
    return x, w, prec

def call(x, w, l, prec, mode):
    ops.staged_images = SHIPPED if mode == "shipped" else every
    plan._PLANS.clear()
    return lambda: im2win.conv2d(x, w, None, **l.conv_kwargs(), precision=prec)

if sys.argv[1] == "compile":
    i, n = int(sys.argv[2]), int(sys.argv[3])
    for j, (l, tier, batch) in enumerate(CASES):
        if j % n != i: continue
        x, w, prec = setup(l, tier, batch)
        for mode in ("shipped", "every"):
            try: call(x, w, l, prec, mode)()
            except Exception as e: print("CERR", l.name, tier, mode, repr(e)[:100], flush=True)
    torch.cuda.synchronize(); raise SystemExit
from im2win.bench.timing import CudaTimer
timer = CudaTimer(torch.device("cuda"))
rows = []
for l, tier, batch in CASES:
    x, w, prec = setup(l, tier, batch)
    set_fp32_precision(False)
    ref = torch.nn.functional.conv2d(x.float(), w.float(), None, **l.conv_kwargs()).double()
    set_fp32_precision(tier == "tf32"); torch.backends.cudnn.benchmark = True
    fl = l.flop(batch)
    r = dict(layer=l.name, tier=tier, batch=batch)
    r["cudnn"] = fl / timer(lambda: torch.nn.functional.conv2d(x, w, None, **l.conv_kwargs()), 10) / 1e9
    for mode in ("shipped", "every"):
        fn = call(x, w, l, prec, mode)
        y = fn()
        r[mode + "_err"] = ((y.double() - ref).abs().max() / ref.abs().max()).item()
        r[mode + "_staged"] = bool(ops.staged_images(x, w.shape, im2win.params.conv_params(**{k: v for k, v in l.conv_kwargs().items()}, kernel_size=w.shape[2:]), False))
        r[mode] = fl / timer(fn, 10) / 1e9
    rows.append(r)
    print(f"{l.name:22s} {tier} b{batch} cudnn={r['cudnn']:.0f} shipped={r['shipped']:.0f}{'s' if r['shipped_staged'] else ''} every={r['every']:.0f} err={r['every_err']:.1e}", flush=True)
    del x, w, ref; torch.cuda.empty_cache()
json.dump(dict(rows=rows, gpu=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("IM2WIN_COMMIT")),
          open(os.path.join(os.environ.get("OUT", "."), "stage_trial.json"), "w"))
