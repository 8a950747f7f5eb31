"""Groups packed into block-diagonal tensor-core tiles (kernels/conv2d_grouped.py) in a sweep
of tiles, against what these layers took before (depthwise: the FMA kernel
kernels/conv2d_dw.py; other groups: the implicit-GEMM path, `windows="streamed"`) and cuDNN's
best (F.conv2d, benchmark mode): batch 128, bf16 (24 tiles, both thread orders) and tf32 (the default tiles, both orders), NCHW and NHWC, kernel time (L2
cold), every output's error against F.conv2d in fp32 (TF32 off) first.

    PYTHONPATH=src:notes/scripts python3 results/h100-issue4/exploration/grouped/grouped.py
"""

import itertools
import json
import os
import sys

import torch
import torch.nn.functional as F
from kernel_time import gpu_ms

import im2win
from im2win import kernels
from im2win.baselines.common import set_fp32_precision
from im2win.bench.env import provenance
from im2win.bench.layers import EXTRA_LAYERS, Layer
from im2win.kernels.conv2d_grouped import grouped_tiles

LAYERS = [la for la in EXTRA_LAYERS if la.groups > 1] + [
    Layer("resnext-g32-cg4-56", 128, 56, 128, 3, 1, padding=1, groups=32),
    Layer("g32-cg16-14", 512, 14, 512, 3, 1, padding=1, groups=32),
]
BATCH = 128
TIERS = {"bf16": (torch.bfloat16, None), "tf32": (torch.float32, "tf32")}


def sweep(layer, tier):
    """Both thread orders; in bf16 12 tiles around the default as well."""
    base = grouped_tiles(layer.c // layer.groups, layer.k // layer.groups)
    for inner in (True, False):
        yield dict(PIXELS_INNER=inner)
        if tier != "bf16":
            continue
        for bm, mult, stages in itertools.product((64, 128), (1, 2, 4), (2, 3)):
            if (bm, mult, stages) != (128, 1, 3):
                yield dict(BLOCK_M=bm, BLOCK_G=base["BLOCK_G"] * mult, num_warps=4,
                           num_stages=stages, PIXELS_INNER=inner)  # fmt: skip


def main():
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    torch.backends.cudnn.benchmark = True
    meta = provenance(torch.device("cuda"), " ".join(["python3", *sys.argv]))
    out = open(os.path.join(os.environ.get("OUT", "."), "grouped.jsonl"), "w")
    out.write(json.dumps(dict(provenance=meta)) + "\n")
    for layer, (tier, (dtype, precision)), layout in itertools.product(
        LAYERS, TIERS.items(), ("NCHW", "NHWC")
    ):
        xs, ws = layer.shapes(BATCH)
        kw = layer.conv_kwargs()
        fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
        x = torch.randn(xs, device="cuda").to(dtype).to(memory_format=fmt)
        w = torch.randn(ws, device="cuda").to(dtype)
        set_fp32_precision(False)
        ref = F.conv2d(x.float(), w.float(), **kw)
        set_fp32_precision(tier == "tf32")
        y = torch.empty_like(ref, dtype=dtype, memory_format=fmt)
        pad = (layer.padding, layer.padding)
        geometry = dict(stride=(layer.stride,) * 2, dilation=(layer.dilation,) * 2, pad_top_left=pad)
        calls = {"library": lambda: im2win.conv2d(x, w, **kw, precision=precision),
                 "cudnn": lambda: F.conv2d(x, w, **kw)}  # fmt: skip
        if layer.groups == layer.c:
            calls["before"] = lambda: kernels.conv2d_fwd_dw(x, w, None, y, **geometry,
                                                            channels_last=layout == "NHWC")  # fmt: skip
        else:
            calls["before"] = lambda: im2win.conv2d(x, w, **kw, precision=precision, windows="streamed")
        for tiles in sweep(layer, tier):
            calls[json.dumps(tiles)] = lambda tiles=tiles: kernels.conv2d_fwd_grouped(
                x, w, None, y, groups=layer.groups, **geometry, precision=precision or "ieee",
                channels_last=layout == "NHWC", interpreted=False, config=tiles)  # fmt: skip
        row = dict(layer=layer.name, tier=tier, layout=layout)
        best = (0.0, None)
        for name, fn in calls.items():
            try:
                y.fill_(float("nan"))
                got = fn()
                err = ((got.float() - ref).abs().max() / ref.abs().max()).item()
                tf = layer.flop(BATCH) / gpu_ms(fn, flush) / 1e9
            except Exception as exc:  # noqa: BLE001
                out.write(json.dumps(dict(row, method=name, error=str(exc)[:200])) + "\n")
                continue
            ok = err == err and err < 1e-2
            out.write(json.dumps(dict(row, method=name, tflops=tf, err=err, ok=ok)) + "\n")
            row[name] = round(tf, 2) if name in ("library", "cudnn", "before") else None
            if name.startswith("{") and ok and tf > best[0]:
                best = (tf, name)
        out.flush()
        print(f"{layer.name:20s} {tier} {layout} library {row.get('library')} before "
              f"{row.get('before')} cudnn {row.get('cudnn')} best {best[0]:.2f} {best[1]}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
