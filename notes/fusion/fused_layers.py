"""Per fused conv of an `im2win.optimize`d model: what each way of running it costs on the GPU.

For every distinct FusedConv2d call (signature) of one forward, CUDA-graph replay (no host
time), L2 flushed, median of 20:
  stock   the original sequence: conv, batch norm, activation, add (native dtype, in place
          where the models do it)
  folded  the batch norm folded: conv with bias, then activation and add in native ops
  aten    conv2d_fused on PyTorch's convolution, the epilogue after it in place (aten.py)
  im2win  conv2d_fused on the pointer kernel, the fastest of its tuning candidates
  strips  conv2d_fused on the strips kernel (Hopper), the fastest of its candidates
  auto    conv2d_fused as the library chooses (heuristic: the pointer kernel's default tiles,
          or aten)
Rows weighted by how often the signature occurs; the totals say what a perfect per-layer
choice between them saves against stock.

Usage: PYTHONPATH=src python3 notes/fusion/fused_layers.py resnet50 64 [out.jsonl]
"""

import json
import sys

import torch
import torch.nn.functional as F

import im2win
from im2win.bench import models as suite
from im2win.bench.timing import CudaTimer
from im2win.fusion import FusedConv2d
from im2win.params import conv_params
from im2win.problem import ConvProblem, MathMode
from im2win.variants import POINTER
from im2win.variants.base import target_of
from im2win.variants.strips import STRIPS

ACT = {"relu": F.relu_, "relu6": lambda y: F.hardtanh_(y, 0, 6), "silu": F.silu,
       "gelu": F.gelu, "hardswish": F.hardswish, "sigmoid": torch.sigmoid_}  # fmt: skip

name, batch = sys.argv[1], int(sys.argv[2])
out_path = sys.argv[3] if len(sys.argv) > 3 else None
device = torch.device("cuda")
spec, mode = suite.MODELS[name], suite.MODES["optimized-bf16-cl"]
timer = CudaTimer(device)


def graphed(fn):
    """`fn` captured in a CUDA graph; the replay, timed, has no host time in it."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return lambda: graph.replay()


def ms(fn):
    try:
        return timer(graphed(fn), 20)
    except Exception as exc:  # noqa: BLE001 - a way that cannot run is a row note
        print(f"  failed: {type(exc).__name__}: {str(exc)[:200]}")
        return float("nan")


WAYS = ("stock", "folded", "aten", "im2win", "strips", "auto", "best")


def measure(call: dict, target) -> dict:
    """One signature's row: each way's milliseconds (and the pointer kernel's best config)."""
    m, inp, res = call["module"], call["input"], call["residual"]
    geometry = (m.stride, m.padding, m.dilation, m.groups)
    act = ACT.get(m.activation, lambda y: y)
    scale = torch.rand(m.weight.shape[0], device=device, dtype=inp.dtype) + 0.5
    ones, zeros = torch.ones_like(scale), torch.zeros_like(scale)

    def chain(y):
        if m.residual == "before":
            y = y.add_(res)
        y = act(y)
        return y.add_(res) if m.residual == "after" else y

    def stock():
        y = F.conv2d(inp, m.weight, None, *geometry)
        return chain(F.batch_norm(y, zeros, ones, scale, m.bias, False, 0.0, 1e-5))

    def folded():
        return chain(F.conv2d(inp, m.weight, m.bias, *geometry))

    def fused(config):
        return lambda: im2win.conv2d_fused(
            inp, m.weight, m.bias, *geometry, activation=m.activation, residual=res,
            residual_after_activation=m.residual == "after", config=config)  # fmt: skip

    params = conv_params(*geometry, kernel_size=tuple(m.weight.shape[2:]))
    epilogue = m.epilogue
    problem = ConvProblem.of(inp, m.weight, params, MathMode.of(inp.dtype), epilogue)
    best_config, best = None, float("inf")
    for candidate in POINTER.candidates(problem, target):
        t = ms(fused({"VARIANT": "pointer", **candidate}))
        if t < best:
            best_config, best = candidate, t
    strips_config, strips = None, float("nan")  # nan where the strips kernel cannot run
    if STRIPS.supports(problem, target):
        for candidate in STRIPS.candidates(problem, target):
            t = ms(fused({"VARIANT": "strips", **candidate}))
            if t < strips or strips != strips:  # faster, or the first (a failed one is nan)
                strips_config, strips = candidate, t
    row = {"input": list(inp.shape), "weight": list(m.weight.shape), "stride": m.stride,
           "groups": m.groups, "epilogue": str(epilogue), "count": call["count"],
           "stock": ms(stock), "folded": ms(folded), "aten": ms(fused({"VARIANT": "aten"})),
           "im2win": best, "config": best_config, "strips": strips,
           "strips_config": strips_config, "auto": ms(fused(None)),
           "chosen": str(im2win.explain(
               inp, m.weight, m.bias, *geometry, activation=m.activation, residual=res,
               residual_after_activation=m.residual == "after")).splitlines()[-1].strip(),
           }  # fmt: skip
    row["best"] = min(t for t in (row["folded"], row["aten"], row["im2win"], strips) if t == t)
    print(f"{str(row['input']):>20} {str(row['weight']):>20} s{row['stride']} g{row['groups']}"
          f" x{row['count']:<2} {row['epilogue']:>22}: stock {row['stock']:.4f} folded "
          f"{row['folded']:.4f} aten {row['aten']:.4f} im2win {row['im2win']:.4f} strips "
          f"{row['strips']:.4f} auto "
          f"{row['auto']:.4f} [{row['chosen'][:40]}]"
          f" ({row['stock'] / row['im2win']:.2f}x stock)", flush=True)  # fmt: skip
    return row


with suite.stock_settings(), torch.no_grad():
    x, _ = suite._inputs(spec, mode, batch, device)
    _, model = suite._arms(suite._build(spec), mode, device)
    calls = {}

    def record(module, args):
        inp, res = args[0], (args[1] if len(args) > 1 else None)
        key = (tuple(inp.shape), tuple(module.weight.shape), module.stride, module.padding,
               module.dilation, module.groups, module.activation, module.residual)  # fmt: skip
        if key in calls:
            calls[key]["count"] += 1
        else:
            keep = torch.channels_last
            calls[key] = {
                "count": 1,
                "module": module,
                "input": inp.clone(memory_format=keep),
                "residual": None if res is None else res.clone(memory_format=keep),
            }

    fused_convs = [m for m in model.modules() if isinstance(m, FusedConv2d)]
    hooks = [m.register_forward_pre_hook(record) for m in fused_convs]
    model(x)
    for hook in hooks:
        hook.remove()

    target = target_of(device, False)
    rows = []
    for call in calls.values():  # each row written when measured: a timeout keeps the rest
        rows.append(measure(call, target))
        if out_path:
            with open(out_path, "a") as f:
                f.write(json.dumps({"model": name, "batch": batch, **rows[-1]}) + "\n")
    # strips: its time where it runs, the pointer kernel's elsewhere
    totals = {way: sum((row[way] if row[way] == row[way] else row["im2win"]) * row["count"]
                       for row in rows) for way in WAYS}  # fmt: skip
    print(
        f"{name} batch {batch} fused convs, summed ms: "
        + ", ".join(f"{way} {t:.3f}" for way, t in totals.items())
    )
