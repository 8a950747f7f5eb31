"""Host us of each piece of one im2win.conv2d call (pointer kernel and TMA kernel)."""
import time, sys
import torch, triton, triton.language as tl
import im2win
from im2win import kernels, plan
import importlib; cf = importlib.import_module("im2win.kernels.conv2d_fwd")
from im2win.ops import streamed_windows
from im2win.bench.layers import PAPER_LAYERS

def us(fn, reps=300):
    for _ in range(30): fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps): fn()
        out.append((time.perf_counter() - t) / reps * 1e6)
        torch.cuda.synchronize()
    return min(out)

@triton.jit
def _one(x_ptr):
    pass

@triton.jit
def _many(a, b, c, d, e, n0, n1, n2, n3, n4, n5, n6, n7, n8, n9, n10, n11, n12, n13, n14,
          n15, n16, n17, n18, n19, n20, n21, n22, n23, n24, n25, n26, n27, n28, X: tl.constexpr):
    pass

layers = {l.name: l for l in PAPER_LAYERS}
res = {}
x0 = torch.zeros(16, device="cuda")
res["empty triton kernel, 1 arg"] = us(lambda: _one[(1,)](x0))
ints = list(range(3, 32))
res["empty triton kernel, 34 args"] = us(lambda: _many[(1,)](x0, x0, x0, x0, x0, *ints, X=4))
res["torch.empty"] = us(lambda: torch.empty((128, 512, 5, 5), device="cuda", dtype=torch.bfloat16))
res["x.add_(0) (one torch kernel)"] = us(lambda: x0.add_(0))
for name, cl in (("conv12", True), ("conv11", True), ("conv12", False)):
    L = layers[name]
    xs, ws = L.shapes(128)
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(xs, device="cuda").to(dtype=torch.bfloat16, memory_format=fmt)
    w = torch.randn(ws, device="cuda").to(torch.bfloat16)
    kw = L.conv_kwargs()
    tag = f"{name} {'NHWC' if cl else 'NCHW'}"
    res[f"{tag}: im2win.conv2d"] = us(lambda: im2win.conv2d(x, w, **kw))
    p = plan.conv2d_plan(x, w, None, kw.get("stride", 1), kw.get("padding", 0), 1, 1,
                         precision=None, backend="auto", windows=None, config=None)
    res[f"{tag}: plan lookup"] = us(lambda: plan.conv2d_plan(x, w, None, kw.get("stride", 1), kw.get("padding", 0), 1, 1,
                         precision=None, backend="auto", windows=None, config=None))
    res[f"{tag}: plan.launch"] = us(lambda: p.launch(x, w, None))
    res[f"{tag}: kernel_filter rfc"] = us(lambda: cf.kernel_filter(w, "rfc"))
    y = im2win.conv2d(x, w, **kw)
    filt = cf.kernel_filter(w, "rfc")
    params = p.params
    src = streamed_windows(x, params, w.shape[1])
    cfg = kernels.conv2d_fwd_config(y.shape[0]*y.shape[2]*y.shape[3], w.shape[0], w[0].numel(), x.dtype, False)
    res[f"{tag}: conv2d_fwd launcher (channels)"] = us(lambda: kernels.conv2d_fwd(
        src, w, None, y, groups=1, stride=(1, 1), dilation=(1, 1), pad_top_left=(0, 0),
        input_hw=tuple(x.shape[2:]), channels_last=cl, loop="channels", precision="ieee",
        config=cfg, interpreted=False))
    if cl:
        tcfg = dict(BLOCK_M=128, BLOCK_Q=16, BLOCK_N=128, BLOCK_K=64, num_warps=4, num_stages=4)
        res[f"{tag}: conv2d_fwd_tma launcher"] = us(lambda: kernels.conv2d_fwd_tma(
            x, w, None, y, groups=1, dilation=(1, 1), pad_top_left=(0, 0), precision="ieee",
            config=tcfg, interpreted=False))
for k, v in res.items():
    print(f"{k:45s} {v:7.1f} us")
