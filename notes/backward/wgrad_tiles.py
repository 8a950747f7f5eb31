"""Weight-gradient tiles: `grad.conv2d_weight` with a grid of tiles and slice counts for each
of its kernels (the gathers of `kernels/conv2d_wgrad.py`, the TMA kernel of
`kernels/conv2d_wgrad_tma.py` where it serves, the depthwise kernel), against
`aten.convolution_backward` (weight only, cudnn.benchmark), on paper, ResNet-50 and
depthwise and grouped layers, bf16 and tf32, channels-last (and NCHW on three).

Every result is checked against an fp32 (IEEE) weight gradient of the same inputs. Times:
`triton.testing.do_bench` (L2 cleared before each call), median ms of the whole call (the
kernel, the sum of the slices and any copy an NCHW input needs).

    PYTHONPATH=src python3 notes/backward/wgrad_tiles.py [out.jsonl] [gathers|tma|ws|all]

`tma` sweeps the TMA kernel and times the gathers at the rule's tile only; `gathers` the
reverse; `all` (the default) both grids. `ws` times every candidate of the warp-specialized
kernel (`kernels/conv2d_wgrad_ws.py`, 16-bit) against the TMA kernel at its rule's tile, on
the layers both serve.
"""

import json
import sys

import torch
from triton.testing import do_bench

from im2win import grad, kernels
from im2win.bench.env import provenance
from im2win.bench.layers import EXTRA_LAYERS, PAPER_LAYERS, RESNET50_LAYERS
from im2win.params import conv_params
from im2win.problem import ConvProblem, MathMode
from im2win.variants import target_of

LAYERS = {layer.name: layer for layer in (*PAPER_LAYERS, *RESNET50_LAYERS, *EXTRA_LAYERS)}
# name: batch
RUNS = {"conv1": 128, "conv5": 128, "conv8": 128, "conv11": 128, "r50-l1-3x3": 32,
        "r50-l2-1x1-512": 32, "r50-l3-3x3": 32, "r50-l4-1x1-reduce": 32,
        "r50-l4-3x3-s2": 32, "dw3x3-112": 64, "dw3x3-s2-56": 64, "dw3x3-14": 64,
        "dw7x7-56": 64, "grouped32-3x3-28": 64}  # fmt: skip
TILES = [
    dict(BLOCK_M=32, BLOCK_K=64, BLOCK_J=64, num_warps=4, num_stages=3),
    dict(BLOCK_M=64, BLOCK_K=64, BLOCK_J=64, num_warps=4, num_stages=3),
    dict(BLOCK_M=64, BLOCK_K=128, BLOCK_J=64, num_warps=4, num_stages=3),
    dict(BLOCK_M=64, BLOCK_K=64, BLOCK_J=128, num_warps=4, num_stages=3),
    dict(BLOCK_M=32, BLOCK_K=128, BLOCK_J=128, num_warps=8, num_stages=3),
    dict(BLOCK_M=64, BLOCK_K=128, BLOCK_J=128, num_warps=8, num_stages=3),
    dict(BLOCK_M=64, BLOCK_K=128, BLOCK_J=128, num_warps=8, num_stages=4),
]
NCHW_TOO = ("conv8", "r50-l1-3x3", "dw3x3-112")  # NCHW inputs: copied channels-last first
# The depthwise kernel's (`wgrad` rule's `depthwise`): channels a program, window block size.
DEPTHWISE = [
    dict(BLOCK_C=32, ELEMENTS=4096, num_warps=4),
    dict(BLOCK_C=16, ELEMENTS=2048, num_warps=4),
    dict(BLOCK_C=32, ELEMENTS=2048, num_warps=4),
    dict(BLOCK_C=32, ELEMENTS=8192, num_warps=8),
    dict(BLOCK_C=64, ELEMENTS=4096, num_warps=4),
    dict(BLOCK_C=64, ELEMENTS=8192, num_warps=8),
]
TMA_TILES = [  # BLOCK_C is cut to a divisor of Cg of at most 128 bytes (32 in fp32)
    dict(BLOCK_P=8, BLOCK_Q=8, BLOCK_K=128, BLOCK_C=64, num_warps=8, num_stages=4),
    dict(BLOCK_P=8, BLOCK_Q=8, BLOCK_K=128, BLOCK_C=64, num_warps=4, num_stages=4),
    dict(BLOCK_P=8, BLOCK_Q=8, BLOCK_K=64, BLOCK_C=64, num_warps=4, num_stages=4),
    dict(BLOCK_P=8, BLOCK_Q=16, BLOCK_K=128, BLOCK_C=64, num_warps=8, num_stages=3),
    dict(BLOCK_P=16, BLOCK_Q=8, BLOCK_K=128, BLOCK_C=64, num_warps=8, num_stages=3),
    dict(BLOCK_P=4, BLOCK_Q=16, BLOCK_K=128, BLOCK_C=64, num_warps=8, num_stages=4),
]
WAVES = (2, 4)
CLASSES = ("16bit", "32bit")  # the rule's tiles by element size: both set to the tile tried
CLASS = {torch.bfloat16: "16bit", torch.float32: "32bit"}
KIND = "all"


def bench(fn) -> float:
    return do_bench(fn, warmup=5, rep=30, return_mode="median")


def rows(name: str, batch: int, dtype: torch.dtype, channels_last: bool):
    layer = LAYERS[name]
    torch.manual_seed(0)
    xshape, wshape = layer.shapes(batch)
    kw = layer.conv_kwargs()
    x = torch.randn(xshape, device="cuda", dtype=dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    w = torch.randn(wshape, device="cuda", dtype=dtype)
    dy = torch.randn_like(torch.nn.functional.conv2d(x, w, **kw))
    pads = [layer.padding] * 2
    args = (dy, x, w, None, [layer.stride] * 2, pads, [layer.dilation] * 2, False, [0, 0],
            layer.groups, [False, True, False])  # fmt: skip
    backward = torch.ops.aten.convolution_backward.default
    torch.backends.cudnn.allow_tf32 = False
    ref = backward(dy.float(), x.float(), w.float(), *args[3:])[1]
    torch.backends.cudnn.allow_tf32 = dtype == torch.float32  # the tf32 tier
    stock = bench(lambda: backward(*args))
    precision = "tf32" if dtype == torch.float32 else None
    rule = target_of(x.device, False).table["wgrad"]
    saved = dict(rule)
    common = dict(layer=name, batch=batch, dtype=str(dtype).removeprefix("torch."),
                  layout="NHWC" if channels_last else "NCHW", stock_ms=stock,
                  **provenance(x.device, " ".join(["python3", *sys.argv])))  # fmt: skip
    try:
        tma = KIND != "gathers" and tma_serves(x, w, dy, kw)
        if KIND in ("tma", "ws") and not tma or KIND == "ws" and dtype != torch.bfloat16:
            grids = []  # nothing of the TMA kernels' to time
        elif KIND == "ws":
            keys = saved["ws_candidates_keys"]
            grids = [("tma_tiles", saved["tma_tiles"]["16bit"])]
            candidates = saved["ws_candidates"]
            grids += [("ws_tiles", dict(zip(keys, row, strict=True))) for row in candidates]
        elif layer.groups == layer.c == layer.k:
            grids = [("depthwise", tile) for tile in DEPTHWISE]
        else:
            gathers = [saved["tiles"][CLASS[dtype]]] if KIND == "tma" else TILES
            grids = [("tiles", tile) for tile in gathers]
            grids += [("tma_tiles", tile) for tile in TMA_TILES] if tma else []
        for kernel, tile in grids:
            for waves in WAVES:
                # The rule as the tile asks: the gathers' tiles and the TMA kernel off, or on for
                # any filter.
                rule.update(saved, waves=waves, tma_tiles=None, ws_tiles=None, tma_min_taps=1)
                whole = kernel in ("depthwise", "ws_tiles")  # a config, not one per class
                rule[kernel] = tile if whole else dict.fromkeys(CLASSES, tile)
                run = lambda: grad.conv2d_weight(x, w.shape, dy, **kw, precision=precision)  # noqa: E731
                row = dict(common, kernel=kernel, tile=tile, waves=waves)
                try:
                    got = run()
                except Exception as exc:  # a tile past the shared memory, say
                    error = f"{type(exc).__name__}: {exc}"[:200]
                    yield dict(row, ms=None, ok=False, error=error)
                    continue
                err = ((got.float() - ref).norm() / ref.norm()).item()
                ok = bool(torch.isfinite(got).all()) and err < 1e-2
                yield dict(row, ms=bench(run), err=err, ok=ok)
    finally:
        rule.clear()
        rule.update(saved)


def tma_serves(x, w, dy, kw) -> bool:
    """Whether the TMA kernel can take this layer (its copies channels-last)."""
    cl = torch.channels_last
    params = conv_params(**kw, kernel_size=tuple(w.shape[2:]))
    problem = ConvProblem.of(x.contiguous(memory_format=cl), w, params, MathMode.of(x.dtype, None))
    return kernels.wgrad_tma_supported(problem, dy.contiguous(memory_format=cl))


def main(argv):
    global KIND
    KIND = argv[1] if len(argv) > 1 else "all"
    torch.backends.cudnn.benchmark = True
    with open(argv[0] if argv else "wgrad_tiles.jsonl", "w") as out:
        for name, batch in RUNS.items():
            for dtype in (torch.bfloat16, torch.float32):
                for channels_last in (True, False) if name in NCHW_TOO else (True,):
                    found = list(rows(name, batch, dtype, channels_last))
                    out.writelines(json.dumps(r) + "\n" for r in found)
                    out.flush()
                    if not found:
                        continue
                    first = found[0]  # the gathers at the first tile of the grid
                    best = min((r for r in found if r["ok"]), key=lambda r: r["ms"])
                    failed = [r.get("error", "wrong") for r in found if not r["ok"]]
                    wrong = f" {len(failed)} failed: {failed[0][:80]}" if failed else ""
                    print(f"{name:18s} {first['dtype']:8s} {first['layout']} "
                          f"cudnn {first['stock_ms']:.3f} first {first['ms']:.3f} "
                          f"best {best['ms']:.3f} ({first['stock_ms'] / best['ms']:.2f}x) "
                          f"{best['kernel']} {best['tile']} waves {best['waves']}{wrong}",
                          flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
