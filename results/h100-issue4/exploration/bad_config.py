"""Does the GPU test's worst-element check catch the 8-warp 128x128 TMA config?"""
import torch, im2win
torch.manual_seed(3)
for dt in (torch.bfloat16, torch.float16):
    x = torch.randn(16, 64, 58, 58, device="cuda").to(dt).to(memory_format=torch.channels_last)
    w = torch.randn(128, 64, 3, 3, device="cuda").to(dt)
    ref = torch.nn.functional.conv2d(x.double(), w.double())
    for warps in (4, 8):
        cfg = dict(BLOCK_M=128, BLOCK_Q=16, BLOCK_N=128, BLOCK_K=64, num_warps=warps, num_stages=3, LOOP="tma")
        y = im2win.conv2d(x, w, config=cfg)
        d = (y.double() - ref)
        print(dt, "warps", warps, "rel_norm %.3g worst/max %.3g" % ((d.norm() / ref.norm()).item(), (d.abs().max() / ref.abs().max()).item()), flush=True)
