"""Prototype: persistent TMA kernel (flattened tile loop), optional TMA store. Scratch."""
import os, sys, time, json, itertools, torch, triton, triton.language as tl
import torch.nn.functional as F
from triton.tools.tensor_descriptor import TensorDescriptor
sys.path.insert(0, "src")
import im2win
from im2win.kernels.conv2d_fwd import kernel_filter
from im2win.kernels.conv2d_fwd_tma import conv2d_fwd_tma, tma_block_k
from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS, EXTRA_LAYERS
from im2win.bench.timing import CudaTimer
from im2win.baselines.common import set_fp32_precision

@triton.jit
def _tile_coords(tile, num_pid_n, tiles_q, tiles_p, N, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_n = tile % num_pid_n
    t = tile // num_pid_n
    q0 = (t % tiles_q) * BLOCK_Q
    p0 = (t // tiles_q % tiles_p) * BLOCK_P
    n = t // tiles_q // tiles_p % N
    group = t // tiles_q // tiles_p // N
    return pid_n, q0, p0, n, group

@triton.jit
def _persist(x_desc, filt_desc, y_desc, y_ptr, N, CG, KG, R, S, P, Q, G,
             stride_yn, stride_yk, stride_yp, stride_yq, pad_top, pad_left, dilation_h, dilation_w,
             NUM_PROGS: tl.constexpr, TMA_STORE: tl.constexpr, PRECISION: tl.constexpr,
             BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    BLOCK_M: tl.constexpr = BLOCK_P * BLOCK_Q
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    tiles_q = tl.cdiv(Q, BLOCK_Q)
    tiles_p = tl.cdiv(P, BLOCK_P)
    num_tiles = G * N * tiles_p * tiles_q * num_pid_n
    num_c_blocks = CG // BLOCK_K
    k_tiles = S * R * num_c_blocks
    start = tl.program_id(0)
    tile_c = start - NUM_PROGS
    for tile in tl.range(start, num_tiles, NUM_PROGS, flatten=True):
        pid_n, q0, p0, n, group = _tile_coords(tile, num_pid_n, tiles_q, tiles_p, N, BLOCK_P, BLOCK_Q, BLOCK_N)
        k0 = group * KG + pid_n * BLOCK_N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for it in range(0, k_tiles):
            fr = it // num_c_blocks
            f = fr // R
            r = fr % R
            c = (it % num_c_blocks) * BLOCK_K
            a = x_desc.load([n, p0 + r * dilation_h - pad_top, q0 + f * dilation_w - pad_left, group * CG + c]).reshape(BLOCK_M, BLOCK_K)
            b = filt_desc.load([k0, fr * CG + c])
            acc = tl.dot(a, b.T, acc, input_precision=PRECISION)
        tile_c += NUM_PROGS
        pid_n, q0, p0, n, group = _tile_coords(tile_c, num_pid_n, tiles_q, tiles_p, N, BLOCK_P, BLOCK_Q, BLOCK_N)
        out = acc.to(y_ptr.dtype.element_ty)
        if TMA_STORE:
            y_desc.store([n, p0, q0, group * KG + pid_n * BLOCK_N], out.reshape(1, BLOCK_P, BLOCK_Q, BLOCK_N))
        else:
            kn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            m = tl.arange(0, BLOCK_M)
            p = p0 + m // BLOCK_Q
            q = q0 + m % BLOCK_Q
            pix = n.to(tl.int64) * stride_yn + p.to(tl.int64) * stride_yp + q.to(tl.int64) * stride_yq
            y_off = pix[:, None] + ((group * KG + kn).to(tl.int64) * stride_yk)[None, :]
            tl.store(y_ptr + y_off, out, mask=((p < P) & (q < Q))[:, None] & (kn < KG)[None, :])

SMS = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 4
def persist(x, w, y, groups, dil, pad, prec, bp, bq, bn, bk, warps, stages, progs_per_sm, tma_store):
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    _, _, p, q = y.shape
    kg = k // groups
    filt = kernel_filter(w, channels_inner=True)
    sn, sc, sh, sw = x.stride()
    x_desc = TensorDescriptor(x, [n, h, wd, c], [sn, sh, sw, sc], [1, bp, bq, bk])
    f_desc = TensorDescriptor(filt, list(filt.shape), list(filt.stride()), [bn, bk])
    yn, yk, yp, yq = y.stride()
    y_desc = TensorDescriptor(y, [n, p, q, k], [yn, yp, yq, yk], [1, bp, bq, bn]) if tma_store else None
    tiles = groups * n * triton.cdiv(p, bp) * triton.cdiv(q, bq) * triton.cdiv(kg, bn)
    progs = min(tiles, SMS * progs_per_sm)
    _persist[(progs,)](x_desc, f_desc, y_desc, y, n, cg, kg, r, s, p, q, groups, yn, yk, yp, yq,
                       pad, pad, dil, dil, NUM_PROGS=progs, TMA_STORE=tma_store, PRECISION=prec,
                       BLOCK_P=bp, BLOCK_Q=bq, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
    return y

if __name__ != "__main__": raise SystemExit
timer = CudaTimer(torch.device("cuda"))
L = {l.name: l for l in PAPER_LAYERS + RESNET50_LAYERS + EXTRA_LAYERS}
TIERS = {"bf16": (torch.bfloat16, "ieee"), "tf32": (torch.float32, "tf32")}
CFG = [(8,16,128,4,4),(4,32,128,4,4),(16,16,64,8,3),(8,8,128,4,4),(16,8,128,4,4),(8,16,128,4,3),(16,16,128,8,3)]
rows = []
for name, tier in itertools.product(["conv8","conv10","conv11","conv5","conv9","r50-l1-3x3","r50-l3-1x1-reduce","r50-l2-3x3","r50-l4-3x3","dilated3x3-d2-28"], ["bf16","tf32"]):
    l = L[name]; dt, prec = TIERS[tier]; kw = l.conv_kwargs()
    xs, ws = l.shapes(128)
    x = torch.randn(xs, device="cuda").to(dt).to(memory_format=torch.channels_last)
    w = torch.randn(ws, device="cuda").to(dt)
    set_fp32_precision(False)
    ref = F.conv2d(x.float(), w.float(), None, **kw).double()
    fl = l.flop(128)
    torch.backends.cudnn.benchmark = True; set_fp32_precision(tier == "tf32")
    res = dict(layer=name, tier=tier, cudnn=fl/timer(lambda: F.conv2d(x, w, None, **kw), 10)/1e9)
    g = lambda: im2win.conv2d(x, w, None, **kw, precision=prec)
    res["lib"] = fl/timer(g, 10)/1e9
    y = torch.empty((128, l.k, l.out_hw, l.out_hw), device="cuda", dtype=dt).to(memory_format=torch.channels_last)
    bk = tma_block_k(l.c // l.groups, dt)
    best = {}
    for (bp, bq, bn, wp, st), pps, ts in itertools.product(CFG, (1, 2), (False, True)):
        if bn > max(64, triton.next_power_of_2(l.k)): continue
        mode = f"persist{'-tmastore' if ts else ''}"
        fn = lambda: persist(x, w, y, l.groups, l.dilation, l.padding, prec, bp, bq, bn, bk, wp, st, pps, ts)
        try:
            y.fill_(float("nan")); fn()
            d = (y.double() - ref); worst = (d.abs().max() / ref.abs().max()).item()
            t = fl/timer(fn, 10)/1e9
        except Exception as e:
            print("ERR", name, tier, (bp,bq,bn,wp,st,pps,ts), repr(e)[:150], flush=True); continue
        rows.append(dict(layer=name, tier=tier, cfg=(bp,bq,bn,wp,st,pps,ts), tflops=t, worst=worst))
        if worst > 1e-2 or not torch.isfinite(y).all():
            print("BAD", name, tier, (bp,bq,bn,wp,st,pps,ts), worst, flush=True); continue
        if mode not in best or t > best[mode][0]: best[mode] = (t, (bp,bq,bn,wp,st,pps))
    for k_, v in best.items(): res[k_] = f"{v[0]:.0f} {v[1]}"
    print(" ".join(f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), flush=True)
    del x, w, y, ref; torch.cuda.empty_cache()
json.dump(rows, open(os.path.join(os.environ.get("OUT", "."), "tma2.json"), "w"))
