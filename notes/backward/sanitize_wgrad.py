"""The weight-gradient kernels under compute-sanitizer: small layers that take each kernel
(the TMA kernel unit-stride, strided and grouped; the gathers; the depthwise kernel), bf16 and
fp32, and the warp-specialized kernel (pinned through its rule: one consumer and two) on the
TMA kernel's layers in bf16, each checked against float64 autograd. Run on the GPU:

    PYTHONPATH=src compute-sanitizer --tool memcheck python3 notes/backward/sanitize_wgrad.py
"""

import torch
import torch.nn.functional as F

from im2win import grad
from im2win.variants import target_of

# input shape, weight shape, conv2d arguments
LAYERS = {
    "tma 3x3": ((2, 32, 9, 7), (24, 32, 3, 3), dict(padding=1)),
    "tma 3x3 stride 2": ((2, 64, 14, 14), (64, 64, 3, 3), dict(stride=2, padding=1)),
    "tma grouped": ((1, 64, 10, 10), (32, 32, 3, 3), dict(padding=1, groups=2)),
    "gathers 7x7 C=3": ((2, 3, 19, 17), (16, 3, 7, 7), dict(stride=2, padding=3)),
    "depthwise 3x3": ((2, 40, 11, 9), (40, 1, 3, 3), dict(padding=1, groups=40)),
}


def main():
    torch.manual_seed(0)
    rule = target_of(torch.device("cuda"), False).table["wgrad"]
    keys = rule["ws_candidates_keys"]
    ws_tiles = [dict(zip(keys, row, strict=True)) for row in rule["ws_candidates"][1:3]]
    for ws in (None, *ws_tiles):
        rule["ws_tiles"] = ws
        for name, (xshape, wshape, kw) in LAYERS.items():
            if ws is None or name.startswith("tma"):
                check(f"{name} ws {ws['CONSUMERS']}" if ws else name, xshape, wshape, kw,
                      (torch.bfloat16,) if ws else (torch.bfloat16, torch.float32))  # fmt: skip
    rule["ws_tiles"] = None


def check(name, xshape, wshape, kw, dtypes):
    for dtype in dtypes:
        x = torch.randn(xshape, device="cuda").to(dtype, memory_format=torch.channels_last)
        w = torch.randn(wshape, device="cuda").to(dtype)
        dy = torch.randn_like(F.conv2d(x.float(), w.float(), **kw)).to(dtype)
        x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
        F.conv2d(x64, w64, **kw).backward(dy.double())
        precision = "tf32" if dtype == torch.float32 else None
        got = grad.conv2d_weight(x, w.shape, dy, **kw, precision=precision)
        torch.cuda.synchronize()
        err = ((got.double() - w64.grad).norm() / w64.grad.norm()).item()
        print(f"{name:22s} {str(dtype):15s} relative error {err:.2e}", flush=True)
        assert err < 2e-2, name


if __name__ == "__main__":
    main()
