import time, torch, cProfile, pstats, io
import torch.nn.functional as F
import im2win
x = torch.randn(128, 512, 7, 7, device="cuda").bfloat16()
w = torch.randn(512, 512, 3, 3, device="cuda").bfloat16()
torch.backends.cudnn.benchmark = True
for cl in (False, True):
    xx = x.to(memory_format=torch.channels_last) if cl else x
    for name, f in (("im2win", lambda: im2win.conv2d(xx, w)), ("torch", lambda: F.conv2d(xx, w)), ("empty", lambda: torch.empty(10, device="cuda")), ("permute", lambda: w.permute(0, 3, 2, 1).contiguous())):
        for _ in range(5): f()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(100): f()
        host = (time.perf_counter() - t0) / 100 * 1e6
        torch.cuda.synchronize()
        print(f"cl={cl} {name:8s} host {host:.1f} us/call", flush=True)
xx = x.to(memory_format=torch.channels_last)
f = lambda: im2win.conv2d(xx, w)
pr = cProfile.Profile(); pr.enable()
for _ in range(100): f()
pr.disable(); torch.cuda.synchronize()
s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(30); print(s.getvalue()[:6000])
