"""64 x 256 TMA tiles on larger outputs (VGG-like 3x3 layers, 56x56 and 28x28, KG 256/512)
against the tiles tma_config picks there, bf16 and tf32, kernel time (CudaTimer, median of 20)."""
import os, sys, torch, torch.nn.functional as F
sys.path.insert(0, "src")
from im2win.kernels.conv2d_fwd_tma import conv2d_fwd_tma
from im2win.kernels import tma_config
from im2win.bench.timing import CudaTimer
torch.backends.cudnn.benchmark = True
torch.backends.cudnn.allow_tf32 = True
timer = CudaTimer(torch.device("cuda"))
for name, c, hw, k in (("vgg-3x3-256-56", 256, 56, 256), ("vgg-3x3-512-28", 512, 28, 512), ("vgg-3x3-512-14", 512, 14, 512)):
    for dt in (torch.bfloat16, torch.float32):
        prec = "tf32" if dt == torch.float32 else "ieee"; bk = 64 if dt.itemsize == 2 else 32
        x = torch.randn(64, c, hw, hw, device="cuda", dtype=dt).to(memory_format=torch.channels_last)
        w = torch.randn(k, c, 3, 3, device="cuda", dtype=dt).to(memory_format=torch.channels_last)
        y = torch.empty(64, k, hw, hw, device="cuda", dtype=dt).to(memory_format=torch.channels_last)
        ref = F.conv2d(x, w, padding=1).float()
        flops = 2 * 64 * k * c * 9 * hw * hw
        res = {"F.conv2d": timer(lambda: F.conv2d(x, w, padding=1), 20)}
        cands = {"tma_config": tma_config(hw, hw, k, bk, dt, prec, True, 9, False)}
        for bp, bq in ((8, 8), (4, 16)):
            cands[f"{bp}x{bq}x256"] = dict(BLOCK_M=bp * bq, BLOCK_Q=bq, BLOCK_N=256, BLOCK_K=bk, num_warps=4, num_stages=3)
        for key, cfg in cands.items():
            f = lambda: conv2d_fwd_tma(x, w, None, y, groups=1, dilation=(1, 1), pad_top_left=(1, 1), precision=prec, config=cfg, interpreted=False)
            y.fill_(float("nan")); f(); torch.cuda.synchronize()
            e = ((y.float() - ref).norm() / ref.norm()).item()
            res[key] = timer(f, 20) if e < 2e-2 else float("nan")
        print(f"{name:16s} {str(dt)[6:]:8s} cfg={cands['tma_config']}  " + "  ".join(f"{k_}={flops / v / 1e9:.0f}TF" for k_, v in res.items()), flush=True)
