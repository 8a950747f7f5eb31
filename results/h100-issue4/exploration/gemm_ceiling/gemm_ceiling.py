"""What a Triton GEMM reaches on the deep layers' GEMM shapes, against cuBLAS on the same
shapes and against cuDNN and im2win on the convolutions themselves, in one process.

Question: is the deep layers' gap to cuDNN (conv8 bf16 NHWC ~440 vs ~645 TFLOPS) a limit of
Triton's code for these GEMM shapes (M = N*P*Q pixels, N = K channels, K = R*S*C taps x
channels), or something of the convolution kernel's own? Each shape is timed as a dense
GEMM: cuBLAS (torch.mm), and a plain Triton TMA GEMM over a sweep of tiles, with a pointer
or a TMA-store epilogue, one tile a program or persistent. GPU time from torch.profiler, L2
flushed before each call (notes/scripts/kernel_time.gpu_ms). Every Triton result is
checked against cuBLAS's.

    PYTHONPATH=src:notes/scripts python3 results/h100-issue4/exploration/gemm_ceiling/gemm_ceiling.py
"""

import json
import os
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from kernel_time import gpu_ms
from triton.tools.tensor_descriptor import TensorDescriptor

import im2win
from im2win.baselines.common import set_fp32_precision
from im2win.bench.env import provenance
from im2win.bench.layers import PAPER_BATCH, PAPER_LAYERS
from im2win.bench.timing import FLUSH_BYTES

SHAPES = {  # layer: (M, N, K) of its GEMM at batch 128
    layer.name: (PAPER_BATCH * layer.out_hw**2, layer.k, layer.c * layer.rs**2)
    for layer in PAPER_LAYERS
    if layer.name in ("conv5", "conv6", "conv8", "conv9", "conv10", "conv11", "conv12")
}
SHAPES["r50-l3-1x1-1024"] = (128 * 14 * 14, 1024, 256)
SHAPES["r50-l4-1x1-reduce"] = (128 * 7 * 7, 512, 2048)
LAYERS = {layer.name: layer for layer in PAPER_LAYERS}


@triton.jit
def _gemm_tile(a_desc, b_desc, c_desc, c_ptr, M, N, K, tile, tiles_n,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
               TMA_STORE: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    m0 = tile // tiles_n * BM
    n0 = tile % tiles_n * BN
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, K, BK):
        a = a_desc.load([m0, k])
        b = b_desc.load([n0, k])
        acc = tl.dot(a, b.T, acc, input_precision=PRECISION)
    out = acc.to(c_ptr.dtype.element_ty)
    if TMA_STORE:
        c_desc.store([m0, n0], out)
    else:
        rm = m0 + tl.arange(0, BM)
        rn = n0 + tl.arange(0, BN)
        mask = (rm < M)[:, None] & (rn < N)[None, :]
        tl.store(c_ptr + rm.to(tl.int64)[:, None] * N + rn[None, :], out, mask=mask)


@triton.jit
def gemm_kernel(a_desc, b_desc, c_desc, c_ptr, M, N, K,
                BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                TMA_STORE: tl.constexpr, PERSISTENT: tl.constexpr, NUM_PROGRAMS: tl.constexpr,
                PRECISION: tl.constexpr):  # fmt: skip
    tiles_n = tl.cdiv(N, BN)
    if PERSISTENT:  # NUM_PROGRAMS programs walk the tiles; the loops flattened for pipelining
        tiles = tl.cdiv(M, BM) * tiles_n
        for tile in tl.range(tl.program_id(0), tiles, NUM_PROGRAMS, flatten=True):
            _gemm_tile(a_desc, b_desc, c_desc, c_ptr, M, N, K, tile, tiles_n,
                       BM, BN, BK, TMA_STORE, PRECISION)  # fmt: skip
    else:
        _gemm_tile(a_desc, b_desc, c_desc, c_ptr, M, N, K, tl.program_id(0), tiles_n,
                   BM, BN, BK, TMA_STORE, PRECISION)  # fmt: skip


def triton_gemm(a, b, c, bm, bn, bk, warps, stages, tma_store, persistent):
    m, k = a.shape
    n = b.shape[0]
    a_desc = TensorDescriptor(a, [m, k], [k, 1], [bm, bk])
    b_desc = TensorDescriptor(b, [n, k], [k, 1], [bn, bk])
    c_desc = TensorDescriptor(c, [m, n], [n, 1], [bm, bn])
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    sms = torch.cuda.get_device_properties(a.device).multi_processor_count
    programs = min(sms, tiles) if persistent else tiles
    precision = "tf32" if a.dtype == torch.float32 else "ieee"
    return lambda: gemm_kernel[(programs,)](
        a_desc, b_desc, c_desc, c, m, n, k, BM=bm, BN=bn, BK=bk, TMA_STORE=tma_store,
        PERSISTENT=persistent, NUM_PROGRAMS=programs, PRECISION=precision,
        num_warps=warps, num_stages=stages)  # fmt: skip


TILES = {  # BM, BN, BK, warps, stages
    "bf16": ((128, 128, 64, 4, 4), (128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 256, 64, 8, 3),
             (256, 128, 64, 8, 3), (64, 256, 64, 4, 4), (128, 64, 64, 4, 4)),
    "tf32": ((128, 128, 32, 4, 4), (128, 128, 32, 8, 3), (128, 256, 32, 8, 3), (64, 256, 32, 4, 3),
             (128, 64, 32, 4, 4)),
}  # fmt: skip
DTYPES = {"bf16": torch.bfloat16, "tf32": torch.float32}


def main():
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    torch.backends.cudnn.benchmark = True
    meta = provenance(torch.device("cuda"), " ".join(["python3", *sys.argv]))
    out = open(os.path.join(os.environ.get("OUT", "."), "gemm_ceiling.jsonl"), "w")
    out.write(json.dumps(dict(provenance=meta)) + "\n")
    table = []
    for tier, dtype in DTYPES.items():
        set_fp32_precision(tier == "tf32")
        for name, (m, n, k) in SHAPES.items():
            tflops = lambda ms: 2 * m * n * k / ms / 1e9  # noqa: E731
            a = torch.randn(m, k, device="cuda").to(dtype)
            b = torch.randn(n, k, device="cuda").to(dtype)
            ref = torch.mm(a, b.t())
            row = dict(tier=tier, shape=name, M=m, N=n, K=k)
            row["cublas"] = tflops(gpu_ms(lambda: torch.mm(a, b.t()), flush))
            if name in LAYERS:  # the convolution itself, NHWC: cuDNN's best and im2win
                layer = LAYERS[name]
                xs, ws = layer.shapes(PAPER_BATCH)
                x = torch.randn(xs, device="cuda").to(dtype).to(memory_format=torch.channels_last)
                w = torch.randn(ws, device="cuda").to(dtype)
                prec = "tf32" if tier == "tf32" else None
                row["cudnn_conv"] = tflops(gpu_ms(lambda: F.conv2d(x, w), flush))
                row["im2win_conv"] = tflops(gpu_ms(lambda: im2win.conv2d(x, w, precision=prec), flush))
            best = (0.0, None)
            for tile in TILES[tier]:
                for tma_store in (False, True):
                    for persistent in (False, True):
                        c = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
                        label = f"{tile} tma_store={tma_store} persistent={persistent}"
                        try:
                            fn = triton_gemm(a, b, c, *tile, tma_store, persistent)
                            fn()
                            torch.cuda.synchronize()
                            err = ((c.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
                            tf = tflops(gpu_ms(fn, flush))
                        except Exception as exc:  # noqa: BLE001 - a tile this GPU cannot run
                            out.write(json.dumps(dict(row, config=label, error=str(exc)[:200])) + "\n")
                            continue
                        ok = err < (2e-2 if tier == "bf16" else 5e-3)
                        out.write(json.dumps(dict(row, config=label, tflops=tf, err=err, ok=ok)) + "\n")
                        if ok and tf > best[0]:
                            best = (tf, label)
            row["triton_best"], row["triton_config"] = best
            out.write(json.dumps(dict(row, summary=True)) + "\n")
            out.flush()
            table.append(row)
            print(name, tier, {key: (round(v, 1) if isinstance(v, float) else v) for key, v in row.items()
                               if key not in ("tier", "shape")}, flush=True)  # fmt: skip
    print("\n| shape | tier | M | N | K | cuDNN conv | im2win conv | cuBLAS GEMM | Triton GEMM best | config |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|---|")
    for r in table:
        print(f"| {r['shape']} | {r['tier']} | {r['M']} | {r['N']} | {r['K']} | "
              f"{r.get('cudnn_conv', 0):.0f} | {r.get('im2win_conv', 0):.0f} | {r['cublas']:.0f} | "
              f"{r['triton_best']:.0f} | {r['triton_config']} |")  # fmt: skip


if __name__ == "__main__":
    main()
