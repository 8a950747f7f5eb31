"""Depthwise channels-last layers: the row-tile kernel (`conv2d_fwd_dw` with BLOCK_Q) with the
variant's tiles, its filter rows unrolled and not, against `F.conv2d` with
cudnn.benchmark, on the depthwise layers of EfficientNet-B0 and ConvNeXt-T (batch 64) and
the extra suite's (batch 128). `--sweep` times a grid of tiles as well.

Every output is poisoned first and checked against an fp32 convolution of the same inputs.
Times: `triton.testing.do_bench` (L2 cleared before each call), median ms. `copy`: a device
copy of the input plus output bytes, the bandwidth bar.

    PYTHONPATH=src python3 notes/depthwise/row_tiles.py [--sweep] [out.jsonl]
"""

import itertools
import json
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from im2win.kernels import conv2d_fwd_dw
from im2win.params import conv_params
from im2win.problem import ConvProblem, MathMode
from im2win.variants import BY_NAME, target_of

# name: (batch, channels, size, kernel, stride)
LAYERS = {
    "effb0-32-112-k3": (64, 32, 112, 3, 1),
    "effb0-96-112-k3-s2": (64, 96, 112, 3, 2),
    "effb0-144-56-k3": (64, 144, 56, 3, 1),
    "effb0-144-56-k5-s2": (64, 144, 56, 5, 2),
    "effb0-240-28-k5": (64, 240, 28, 5, 1),
    "effb0-240-28-k3-s2": (64, 240, 28, 3, 2),
    "effb0-480-14-k3": (64, 480, 14, 3, 1),
    "effb0-480-14-k5": (64, 480, 14, 5, 1),
    "effb0-672-14-k5": (64, 672, 14, 5, 1),
    "effb0-672-14-k5-s2": (64, 672, 14, 5, 2),
    "effb0-1152-7-k5": (64, 1152, 7, 5, 1),
    "effb0-1152-7-k3": (64, 1152, 7, 3, 1),
    "convnext-96-56-k7": (64, 96, 56, 7, 1),
    "convnext-192-28-k7": (64, 192, 28, 7, 1),
    "convnext-384-14-k7": (64, 384, 14, 7, 1),
    "convnext-768-7-k7": (64, 768, 7, 7, 1),
    "dw3x3-112": (128, 32, 112, 3, 1),
    "dw3x3-s2-56": (128, 144, 56, 3, 2),
    "dw3x3-14": (128, 384, 14, 3, 1),
    "dw7x7-56": (128, 96, 56, 7, 1),
}
SWEEP = [
    dict(BLOCK_Q=q, BLOCK_C=c, num_warps=w)
    for q, c, w in itertools.product((8, 16, 32), (32, 64, 128), (4, 8))
]


def bench(fn) -> float:
    return do_bench(fn, warmup=10, rep=40, return_mode="median")


def layer_rows(name, batch, c, size, k, s, dtype, sweep):
    torch.manual_seed(0)
    x = torch.randn(batch, c, size, size, device="cuda", dtype=dtype)
    x = x.to(memory_format=torch.channels_last)
    w = torch.randn(c, 1, k, k, device="cuda", dtype=dtype)
    pad = k // 2
    ref = F.conv2d(x.float(), w.float(), None, s, pad, 1, c)
    y = torch.empty_like(ref, dtype=dtype, memory_format=torch.channels_last)
    params = conv_params(s, pad, 1, c, kernel_size=(k, k))
    math = MathMode.of(dtype, "ieee" if dtype == torch.float32 else None)
    problem = ConvProblem.of(x, w, params, math)
    tiles = BY_NAME["depthwise"].heuristic(problem, target_of(x.device, False))
    moved = (x.numel() + y.numel()) * x.element_size()
    src = torch.empty(moved // 2, dtype=torch.uint8, device="cuda")
    common = dict(layer=name, dtype=str(dtype).removeprefix("torch."), bytes=moved,
                  stock_ms=bench(lambda: F.conv2d(x, w, None, s, pad, 1, c)),
                  copy_ms=bench(lambda: torch.empty_like(src).copy_(src)))  # fmt: skip
    configs = [dict(tiles, UNROLL_ROWS=unroll) for unroll in (True, False)]
    if sweep:
        configs += [dict(t, UNROLL_ROWS=u) for t in SWEEP for u in (True, False)
                    if t["BLOCK_C"] <= max(32, 2 * c)]  # fmt: skip
    for config in configs:
        y.fill_(float("nan"))
        run = lambda: conv2d_fwd_dw(x, w, None, y, problem, config=config)  # noqa: B023, E731
        run()
        err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
        yield dict(common, config=config, heuristic=config in configs[:2], ms=bench(run),
                   err=err, ok=err < (2e-2 if dtype == torch.bfloat16 else 1e-4))  # fmt: skip


def main(argv):
    sweep = "--sweep" in argv
    paths = [a for a in argv if not a.startswith("--")]
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    with open(paths[0] if paths else "row_tiles.jsonl", "w") as out:
        for (name, shape), dtype in itertools.product(LAYERS.items(),
                                                      (torch.bfloat16, torch.float32)):  # fmt: skip
            found = list(layer_rows(name, *shape, dtype, sweep))
            out.writelines(json.dumps(r) + "\n" for r in found)
            out.flush()
            unrolled, rolled = found[0], found[1]
            best = min((r for r in found if r["ok"]), key=lambda r: r["ms"])
            print(f"{name:20s} {unrolled['dtype']:8s} stock {unrolled['stock_ms']:.4f} "
                  f"unrolled {unrolled['ms']:.4f} rolled {rolled['ms']:.4f} "
                  f"best {best['ms']:.4f} ({unrolled['stock_ms'] / best['ms']:.2f}x stock, "
                  f"{unrolled['copy_ms'] / best['ms']:.0%} of copy) {best['config']}"
                  + ("" if all(r["ok"] for r in found) else " WRONG"), flush=True)  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
