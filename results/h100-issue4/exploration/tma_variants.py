"""Scratch: TMA kernel variants (persistent, TMA-store epilogue, BLOCK_N 256, warp
specialization) against the library default and cuDNN, one run. Usage:
  python3 results/h100-issue4/exploration/tma_variants.py compile <i> <n>   # worker: compile every n-th variant from i
  python3 results/h100-issue4/exploration/tma_variants.py time              # time all (after the workers filled the cache)
"""
import itertools, json, os, sys, time
import torch, triton, triton.language as tl
import torch.nn.functional as F
from triton.tools.tensor_descriptor import TensorDescriptor

sys.path.insert(0, "src")
import im2win
from im2win.kernels.conv2d_fwd import kernel_filter
from im2win.kernels.conv2d_fwd_tma import tma_block_k
from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS, EXTRA_LAYERS
from im2win.baselines.common import set_fp32_precision


@triton.jit
def _coords(tile, num_pid_n, tiles_q, tiles_p, N, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr):
    pid_n = tile % num_pid_n
    t = tile // num_pid_n
    q0 = (t % tiles_q) * BLOCK_Q
    p0 = (t // tiles_q % tiles_p) * BLOCK_P
    n = t // tiles_q // tiles_p % N
    group = t // tiles_q // tiles_p // N
    return pid_n, q0, p0, n, group


@triton.jit
def _tile(x_desc, filt_desc, y_desc, y_ptr, tile, num_pid_n, tiles_q, tiles_p, N, CG, KG, R, S,
          P, Q, stride_yn, stride_yk, stride_yp, stride_yq, pad_top, pad_left, dh, dw,
          TMA_STORE: tl.constexpr, WS: tl.constexpr, PRECISION: tl.constexpr,
          BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    BLOCK_M: tl.constexpr = BLOCK_P * BLOCK_Q
    pid_n, q0, p0, n, group = _coords(tile, num_pid_n, tiles_q, tiles_p, N, BLOCK_P, BLOCK_Q)
    k0 = group * KG + pid_n * BLOCK_N
    num_c = CG // BLOCK_K
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for it in tl.range(0, S * R * num_c, warp_specialize=WS):
        rf = it // num_c
        r = rf // S
        f = rf % S
        c = (it % num_c) * BLOCK_K
        a = x_desc.load([n, p0 + r * dh - pad_top, q0 + f * dw - pad_left, group * CG + c]).reshape(BLOCK_M, BLOCK_K)
        b = filt_desc.load([k0, rf * CG + c])
        acc = tl.dot(a, b.T, acc, input_precision=PRECISION)
    out = acc.to(y_ptr.dtype.element_ty)
    if TMA_STORE:
        y_desc.store([n, p0, q0, k0], out.reshape(1, BLOCK_P, BLOCK_Q, BLOCK_N))
    else:
        kn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m = tl.arange(0, BLOCK_M)
        p = p0 + m // BLOCK_Q
        q = q0 + m % BLOCK_Q
        pix = n.to(tl.int64) * stride_yn + p.to(tl.int64) * stride_yp + q.to(tl.int64) * stride_yq
        y_off = pix[:, None] + ((group * KG + kn).to(tl.int64) * stride_yk)[None, :]
        tl.store(y_ptr + y_off, out, mask=((p < P) & (q < Q))[:, None] & (kn < KG)[None, :])


@triton.jit
def _k(x_desc, filt_desc, y_desc, y_ptr, N, CG, KG, R, S, P, Q, G,
       stride_yn, stride_yk, stride_yp, stride_yq, pad_top, pad_left, dh, dw,
       NUM_PROGS: tl.constexpr, PERSIST: tl.constexpr, TMA_STORE: tl.constexpr, WS: tl.constexpr,
       PRECISION: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    num_pid_n = tl.cdiv(KG, BLOCK_N)
    tiles_q = tl.cdiv(Q, BLOCK_Q)
    tiles_p = tl.cdiv(P, BLOCK_P)
    if PERSIST:
        num_tiles = G * N * tiles_p * tiles_q * num_pid_n
        for tile in tl.range(tl.program_id(0), num_tiles, NUM_PROGS, flatten=True):
            _tile(x_desc, filt_desc, y_desc, y_ptr, tile, num_pid_n, tiles_q, tiles_p, N, CG, KG,
                  R, S, P, Q, stride_yn, stride_yk, stride_yp, stride_yq, pad_top, pad_left, dh, dw,
                  TMA_STORE, WS, PRECISION, BLOCK_P, BLOCK_Q, BLOCK_N, BLOCK_K)
    else:
        _tile(x_desc, filt_desc, y_desc, y_ptr, tl.program_id(0), num_pid_n, tiles_q, tiles_p, N,
              CG, KG, R, S, P, Q, stride_yn, stride_yk, stride_yp, stride_yq, pad_top, pad_left,
              dh, dw, TMA_STORE, WS, PRECISION, BLOCK_P, BLOCK_Q, BLOCK_N, BLOCK_K)


SMS = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 4


def run(x, w, y, l, prec, v):
    bp, bq, bn, warps, stages, persist, tma_store, ws = v
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    _, _, p, q = y.shape
    kg = k // l.groups
    bk = tma_block_k(cg, x.dtype)
    filt = kernel_filter(w, "rfc")
    sn, sc, sh, sw = x.stride()
    x_desc = TensorDescriptor(x, [n, h, wd, c], [sn, sh, sw, sc], [1, bp, bq, bk])
    f_desc = TensorDescriptor(filt, list(filt.shape), list(filt.stride()), [bn, bk])
    yn, yk, yp, yq = y.stride()
    y_desc = TensorDescriptor(y, [n, p, q, k], [yn, yp, yq, yk], [1, bp, bq, bn]) if tma_store else None
    tiles = l.groups * n * triton.cdiv(p, bp) * triton.cdiv(q, bq) * triton.cdiv(kg, bn)
    progs = min(tiles, SMS * persist) if persist else tiles
    _k[(progs,)](x_desc, f_desc, y_desc, y, n, cg, kg, r, s, p, q, l.groups, yn, yk, yp, yq,
                 l.padding, l.padding, l.dilation, l.dilation, NUM_PROGS=progs, PERSIST=bool(persist),
                 TMA_STORE=tma_store, WS=ws, PRECISION=prec, BLOCK_P=bp, BLOCK_Q=bq, BLOCK_N=bn,
                 BLOCK_K=bk, num_warps=warps, num_stages=stages)
    return y


L = {l.name: l for l in PAPER_LAYERS + RESNET50_LAYERS + EXTRA_LAYERS}
LAYERS = ["conv8", "conv5", "conv6", "conv9", "conv10", "conv11", "conv12", "r50-l3-1x1-reduce"]
TIERS = {"bf16": (torch.bfloat16, "ieee"), "tf32": (torch.float32, "tf32")}
TILES = [(8, 16, 128, 4, 4), (8, 16, 128, 8, 4), (8, 16, 256, 8, 3), (16, 8, 256, 8, 3),
         (16, 16, 128, 8, 3), (4, 32, 256, 8, 3), (16, 16, 64, 8, 3)]
BATCH = int(os.environ.get("BATCH", 128))


def variants(l, tier):
    out = []
    for t in TILES:
        if t[2] > max(64, triton.next_power_of_2(l.k)):
            continue
        if tier == "tf32" and t[2] == 256 and t[4] > 2:
            t = (*t[:4], 2)  # shared memory
        for persist, ts, ws in ((0, False, False), (0, True, False), (1, False, False),
                                (1, True, False), (0, False, True)):
            out.append((*t, persist, ts, ws))
    return out


def jobs():
    return [(name, tier, v) for name in LAYERS for tier in TIERS for v in variants(L[name], tier)]


def tensors(l, tier):
    dt, prec = TIERS[tier]
    xs, ws = l.shapes(BATCH)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(xs, device="cuda", generator=g).to(dt).to(memory_format=torch.channels_last)
    w = torch.randn(ws, device="cuda", generator=g).to(dt)
    y = torch.empty((BATCH, l.k, l.out_hw, l.out_hw), device="cuda", dtype=dt).to(memory_format=torch.channels_last)
    return x, w, y, prec


def compile_worker(i, n):
    cur = None
    for j, (name, tier, v) in enumerate(jobs()):
        if j % n != i:
            continue
        if cur != (name, tier):
            cur = (name, tier)
            x, w, y, prec = tensors(L[name], tier)
        try:
            run(x, w, y, L[name], prec, v)
        except Exception as e:
            print("CERR", name, tier, v, repr(e)[:120], flush=True)
    torch.cuda.synchronize()


def time_all():
    from im2win.bench.timing import CudaTimer
    timer = CudaTimer(torch.device("cuda"))
    rows, summary = [], []
    for name, tier in itertools.product(LAYERS, TIERS):
        l = L[name]
        x, w, y, prec = tensors(l, tier)
        kw = l.conv_kwargs()
        set_fp32_precision(False)
        ref = F.conv2d(x.float(), w.float(), None, **kw).double()
        scale = ref.abs().max().item()
        fl = l.flop(BATCH)
        torch.backends.cudnn.benchmark = True
        set_fp32_precision(tier == "tf32")
        res = dict(layer=name, tier=tier)
        res["cudnn"] = fl / timer(lambda: F.conv2d(x, w, None, **kw), 10) / 1e9
        lib = lambda: im2win.conv2d(x, w, None, **kw, precision=prec)
        yl = lib()
        res["lib_err"] = ((yl.double() - ref).abs().max() / scale).item()
        res["lib"] = fl / timer(lib, 10) / 1e9
        best = None
        for v in variants(l, tier):
            fn = lambda: run(x, w, y, l, prec, v)
            try:
                y.fill_(float("nan"))
                fn()
                err = ((y.double() - ref).abs().max() / scale).item()
                tf = fl / timer(fn, 10) / 1e9
            except Exception as e:
                print("ERR", name, tier, v, repr(e)[:120], flush=True)
                continue
            ok = err == err and err <= 2 * res["lib_err"] + 1e-6
            rows.append(dict(layer=name, tier=tier, v=v, tflops=tf, err=err, ok=ok))
            print(f"  {name} {tier} {v} {tf:.0f} err={err:.1e}{'' if ok else ' BAD'}", flush=True)
            if ok and (best is None or tf > best[0]):
                best = (tf, v)
        res["best"] = best
        summary.append(res)
        print(f"SUM {name} {tier} cudnn={res['cudnn']:.0f} lib={res['lib']:.0f} best={best}", flush=True)
        del x, w, y, ref
        torch.cuda.empty_cache()
    json.dump(dict(rows=rows, summary=summary, gpu=torch.cuda.get_device_name(),
                   torch=torch.__version__, triton=triton.__version__,
                   commit=os.environ.get("IM2WIN_COMMIT")),
              open(os.path.join(os.environ.get("OUT", "."), "tma-variants.json"), "w"), default=str)


if __name__ == "__main__":
    if sys.argv[1] == "compile":
        compile_worker(int(sys.argv[2]), int(sys.argv[3]))
    else:
        time_all()
