"""Weight-gradient tiles: `grad.conv2d_weight` (the kernel of `kernels/conv2d_wgrad.py`) with a
grid of tiles and slice counts, against `aten.convolution_backward` (weight only,
cudnn.benchmark), on paper, ResNet-50 and depthwise and grouped layers, bf16 and tf32,
channels-last (and NCHW on three); the depthwise kernel with its own grid of configs.

Every result is checked against an fp32 (IEEE) weight gradient of the same inputs. Times:
`triton.testing.do_bench` (L2 cleared before each call), median ms of the whole call (the
kernel, the sum of the slices and any copy an NCHW input needs).

    PYTHONPATH=src python3 notes/backward/wgrad_tiles.py [out.jsonl]
"""

import json
import sys

import torch
from triton.testing import do_bench

from im2win import grad
from im2win.bench.layers import EXTRA_LAYERS, PAPER_LAYERS, RESNET50_LAYERS
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
WAVES = (2, 4)


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
                  layout="NHWC" if channels_last else "NCHW", stock_ms=stock)  # fmt: skip
    try:
        depthwise = layer.groups == layer.c == layer.k
        for tile in DEPTHWISE if depthwise else TILES:
            for waves in WAVES:
                rule.update({"depthwise" if depthwise else "tile": tile, "waves": waves})
                run = lambda: grad.conv2d_weight(x, w.shape, dy, **kw, precision=precision)  # noqa: E731
                try:
                    got = run()
                except Exception as exc:  # a tile past the shared memory, say
                    error = f"{type(exc).__name__}: {exc}"[:200]
                    yield dict(common, tile=tile, waves=waves, ms=None, ok=False, error=error)
                    continue
                err = ((got.float() - ref).norm() / ref.norm()).item()
                ok = bool(torch.isfinite(got).all()) and err < 1e-2
                yield dict(common, tile=tile, waves=waves, ms=bench(run), err=err, ok=ok)
    finally:
        rule.clear()
        rule.update(saved)


def main(argv):
    torch.backends.cudnn.benchmark = True
    with open(argv[0] if argv else "wgrad_tiles.jsonl", "w") as out:
        for name, batch in RUNS.items():
            for dtype in (torch.bfloat16, torch.float32):
                for channels_last in (True, False) if name in NCHW_TOO else (True,):
                    found = list(rows(name, batch, dtype, channels_last))
                    out.writelines(json.dumps(r) + "\n" for r in found)
                    out.flush()
                    first = found[0]  # the rule's first guess
                    best = min((r for r in found if r["ok"]), key=lambda r: r["ms"])
                    failed = [r.get("error", "wrong") for r in found if not r["ok"]]
                    wrong = f" {len(failed)} failed: {failed[0][:80]}" if failed else ""
                    print(f"{name:18s} {first['dtype']:8s} {first['layout']} "
                          f"cudnn {first['stock_ms']:.3f} first {first['ms']:.3f} "
                          f"best {best['ms']:.3f} ({first['stock_ms'] / best['ms']:.2f}x) "
                          f"{best['tile']} waves {best['waves']}{wrong}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
