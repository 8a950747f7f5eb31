"""Every kernel launch the library makes for a sweep of calls, recorded instead of run, so
that two versions of the code can be compared launch by launch (kernel, grid, every
argument's shape, strides and value, every constexpr) without a GPU.

    git worktree add /tmp/before 5907e7a
    python notes/registry/launches.py record /tmp/before/src gpu before-gpu.json
    python notes/registry/launches.py record src gpu after-gpu.json
    python notes/registry/launches.py compare before-gpu.json after-gpu.json

`gpu` plans for a Hopper GPU of 132 SMs (the H100 and H200) on CPU tensors; `interpreter`
for Triton's interpreter. The paper's, ResNet-50's and the extra layers at batch 1, 32 and
128 (1 and 2 for the interpreter) in five math modes and both layouts, with each window
source at batch 1, and odd shapes with pinned configs.
"""

import importlib
import itertools
import json
import os
import sys
from pathlib import Path

# Odd shapes: C = 1 and 3, prime sizes, groups and depthwise, strides, padding, dilation,
# channels for the TMA tiles, 1x1 filters, K past 256.
ODD = {
    "c3_13x11_k5_3x3_p1": ((1, 3, 13, 11), (5, 3, 3, 3), dict(padding=1)),
    "c17_7x9_k19_2x3_s2": ((2, 17, 7, 9), (19, 17, 2, 3), dict(stride=2, padding=(1, 0))),
    "c1_13x17_k5_3x3_p1": ((3, 1, 13, 17), (5, 1, 3, 3), dict(padding=1)),
    "c3_31x29_k7_7x7_s2": ((2, 3, 31, 29), (7, 3, 7, 7), dict(stride=2, padding=3)),
    "c13_11x7_k19_2x4_same": ((5, 13, 11, 7), (19, 13, 2, 4), dict(padding="same")),
    "c12_17x13_g3_d2": ((2, 12, 17, 13), (9, 4, 3, 3), dict(groups=3, dilation=2, padding=2)),
    "c7_23x5_dw_5x1": ((4, 7, 23, 5), (7, 1, 5, 1), dict(groups=7, padding=(2, 0))),
    "c37_9x9_k41_1x1_s3x2": ((3, 37, 9, 9), (41, 37, 1, 1), dict(stride=(3, 2))),
    "c64_30x29_k300_3x3_p1": ((2, 64, 30, 29), (300, 64, 3, 3), dict(padding=1)),
    "c64_30x29_k300_3x3": ((2, 64, 30, 29), (300, 64, 3, 3), dict()),
    "c32_9x10_k520_1x1": ((3, 32, 9, 10), (520, 32, 1, 1), dict()),
    "c64_7x9_k300_1x1": ((3, 64, 7, 9), (300, 64, 1, 1), dict()),
    "c3_31x29_k70_5x5_s2": ((2, 3, 31, 29), (70, 3, 5, 5), dict(stride=2)),
    "c32_64x60_k64_5x5_s2_p2": ((2, 32, 64, 60), (64, 32, 5, 5), dict(stride=2, padding=2)),
    "c64_13x11_k40_3x3_p1": ((3, 64, 13, 11), (40, 64, 3, 3), dict(padding=1)),
    "c128_9x7_g2_d2": ((1, 128, 9, 7), (72, 64, 3, 3), dict(groups=2, dilation=2, padding=2)),
    "c96_11x9_g2_d21_3x2": ((2, 96, 11, 9), (80, 48, 3, 2), dict(groups=2, dilation=(2, 1))),
    "c64_14x12_k40_3x3_s2_p1": ((3, 64, 14, 12), (40, 64, 3, 3), dict(stride=2, padding=1)),
    "c128_12x9_g2_s23_p12_d2": (
        (1, 128, 12, 9),
        (72, 64, 3, 3),
        dict(stride=(2, 3), padding=(1, 2), dilation=2, groups=2),
    ),
    "g4_c32_7x9_k32_s2": ((1, 32, 7, 9), (32, 8, 3, 3), dict(stride=2, padding=1, groups=4)),
    "g37_c74_4x5_k37": ((2, 74, 4, 5), (37, 2, 2, 2), dict(groups=37)),
    "c16_10x9_k100": ((40, 16, 10, 9), (100, 16, 3, 3), dict(padding=1)),
    "c1_1x1": ((2, 1, 1, 1), (3, 1, 1, 1), dict()),
}
MODES = [("float32", "ieee"), ("float32", "tf32x3"), ("float32", "tf32"), ("float16", None),
         ("bfloat16", None)]  # fmt: skip
PINNED = [
    dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=32, num_warps=4, num_stages=1, LOOP="flat"),
    dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, num_warps=4, num_stages=1, LOOP="channels", SPLIT_K=2),
    dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=16, num_warps=4, num_stages=1, LOOP="tma"),
    dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1, LOOP="tma_raster"),
    dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1),
]


def cases(target: str, layers) -> list[tuple]:
    """(id, input shape, weight shape, conv kwargs, dtype, precision, layout, windows, config)"""
    out = []
    for layer in layers:
        xs, ws = layer.shapes(1)
        for n in (1, 32, 128) if target == "gpu" else (1, 2):
            for (dt, prec), layout in itertools.product(MODES, ("NCHW", "NHWC")):
                for windows in (None, "streamed", "materialized") if n == 1 else (None,):
                    key = f"{layer.name}|n{n}|{dt}|{prec}|{layout}|{windows}"
                    out.append((key, (n, *xs[1:]), ws, layer.conv_kwargs(), dt, prec, layout,
                                windows, None))  # fmt: skip
    for name, (xs, ws, kw) in ODD.items():
        for (dt, prec), layout in itertools.product(MODES, ("NCHW", "NHWC")):
            for windows in (None, "streamed", "materialized"):
                key = f"{name}|{dt}|{prec}|{layout}|{windows}"
                out.append((key, xs, ws, kw, dt, prec, layout, windows, None))
            for i, config in enumerate(PINNED):
                out.append((f"{name}|{dt}|{prec}|{layout}|pin{i}", xs, ws, kw, dt, prec, layout,
                            None, config))  # fmt: skip
    return out


LOG = []


def describe(a):
    """An argument as JSON: a tensor's shape, strides and dtype, a descriptor's geometry."""
    if hasattr(a, "stride") and hasattr(a, "dtype"):
        return ["T", list(a.shape), list(a.stride()), str(a.dtype)]
    if type(a).__name__ == "TensorDescriptor":
        return ["D", list(a.shape), list(a.strides), list(a.block_shape)]
    if a is None or isinstance(a, (int, float, str, bool)):
        return a
    return repr(a)


def kernel_name(kernel) -> str:
    while hasattr(kernel, "fn"):
        kernel = kernel.fn
    return getattr(kernel, "__name__", repr(kernel))


def note(kernel, grid, args, meta) -> None:
    meta = {key: describe(value) for key, value in sorted(meta.items())}
    LOG.append([kernel_name(kernel), list(grid), [describe(a) for a in args], meta])


class Recorded:
    """A kernel stand-in for `kernel[grid](*args, **meta)` calls: noted, not run."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        return lambda *args, **meta: note(self.kernel, grid, args, meta)


def record(src: str, target: str, out: str) -> None:
    if target == "interpreter":
        os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, src)
    import torch

    import im2win
    from im2win import plan
    from im2win.bench.layers import EXTRA_LAYERS, PAPER_LAYERS, RESNET50_LAYERS

    # Launches are noted instead of run, by every module that launches.
    for name in ("conv2d_fwd", "conv2d_fwd_tma", "conv2d_grouped", "conv2d_dw", "relayout"):
        module = importlib.import_module(f"im2win.kernels.{name}")
        module.launch = lambda kernel, grid, args, meta, slot: note(kernel, grid, args, meta)
    transform = importlib.import_module("im2win.kernels.transform")
    transform._im2win_transform_kernel = Recorded(transform._im2win_transform_kernel)
    split_k = importlib.import_module("im2win.kernels.split_k")
    split_k._sum_slices_kernel = Recorded(split_k._sum_slices_kernel)
    if target == "gpu":  # CPU tensors planned as for a Hopper GPU of 132 SMs
        plan.resolve_backend = lambda backend, device: "triton"
        if hasattr(im2win, "explain"):  # the variant registry
            from im2win import ops
            from im2win.variants import Target

            ops.target_of = lambda device, interpreted: Target("sm90", 132, True, device=device)
        else:  # the code before it
            from im2win import kernels

            kernels.has_tma, kernels.sm_count = (lambda d: True), (lambda d: 132)
            split_k.default_splits = lambda programs, steps, outputs, device, interpreted: (
                1 if interpreted else split_k.split_count(programs, steps, outputs, 132)
            )

    results = {}
    for key, xs, ws, kw, dt, prec, layout, windows, config in cases(
        target, PAPER_LAYERS + RESNET50_LAYERS + EXTRA_LAYERS
    ):
        dtype = getattr(torch, dt)
        # Never touched: allocations only (channels-last strides as PyTorch lays them out).
        x = torch.empty(xs, dtype=dtype)
        if layout == "NHWC":
            n, c, h, w = xs
            x = torch.empty_strided(xs, (h * w * c, 1, w * c, c), dtype=dtype)
        weight, bias = torch.zeros(ws, dtype=dtype), torch.zeros(ws[0], dtype=dtype)
        LOG.clear()
        plan._PLANS.clear()
        try:
            im2win.conv2d(x, weight, bias, **kw, precision=prec, windows=windows, config=config)
            results[key] = LOG[:]
        except Exception as exc:  # noqa: BLE001 - a refused call is recorded as such
            results[key] = ["ERROR", type(exc).__name__, str(exc)[:200]]
    Path(out).write_text(json.dumps(results))
    errors = sum(1 for v in results.values() if v and v[0] == "ERROR")
    print(f"{len(results)} calls, {errors} refused (pinned configs those calls cannot take)")


def compare(before: str, after: str) -> None:
    """Calls whose launches (or refusal: exception type and message) differ."""
    a, b = (json.loads(Path(path).read_text()) for path in (before, after))
    differ = [key for key in a if a[key] != b.get(key)]
    print(f"{len(a)} calls, {len(differ)} differ")
    for key in differ[:10]:
        print(key, json.dumps(a[key])[:500], json.dumps(b.get(key))[:500], sep="\n  ")


if __name__ == "__main__":
    if sys.argv[1] == "record":
        record(*sys.argv[2:5])
    else:
        compare(*sys.argv[2:4])
