"""Not yet run. Raster tiles for padded layers through a zero-bordered copy: what a staged
NCHW input could get if its channels-last buffer carried the padding (the copy is made
there anyway), and the bound for channels-last inputs. ResNet-50's padded stride-1 3x3
layers and two VGG-like ones, batch 128, bf16 and tf32, kernel time (CudaTimer: L2
flushed, median of 20): the library's default on a channels-last input (window tiles), the
raster tiles over the bordered copy (the copy not timed), the bordering copy alone, and
cuDNN (F.conv2d, cudnn.benchmark). Every output NaN-poisoned first and checked.

    PYTHONPATH=src python3 results/h100-issue4/exploration/raster/padded_raster.py [out.json]
"""

import json
import sys

import torch
import torch.nn.functional as F

import im2win
from im2win.bench.timing import CudaTimer
from im2win.kernels.conv2d_fwd_tma import tma_launcher
from im2win.kernels.tuning import raster_tiles

LAYERS = {  # name: C, H = W, K (3x3, padding 1, stride 1)
    "r50-l1-3x3": (64, 56, 64),
    "r50-l2-3x3": (128, 28, 128),
    "r50-l3-3x3": (256, 14, 256),
    "r50-l4-3x3": (512, 7, 512),
    "vgg-3x3-256-56": (256, 56, 256),
    "vgg-3x3-512-28": (512, 28, 512),
}


def bordered(x: torch.Tensor) -> torch.Tensor:
    """x [N, C, H, W] channels-last, copied into the middle of a zero [N, C, H+2, W+2]."""
    n, c, h, w = x.shape
    xp = torch.zeros(n, c, h + 2, w + 2, dtype=x.dtype, device=x.device)
    xp = xp.to(memory_format=torch.channels_last)
    xp[:, :, 1:-1, 1:-1] = x
    return xp


def main() -> None:
    torch.backends.cudnn.benchmark = True
    timer = CudaTimer(torch.device("cuda"))
    rows = []
    for name, (c, hw, k) in LAYERS.items():
        for dtype in (torch.bfloat16, torch.float32):
            precision = "tf32" if dtype == torch.float32 else "ieee"
            torch.backends.cudnn.allow_tf32 = dtype == torch.float32
            block_k = 64 if dtype.itemsize == 2 else 32
            x = torch.randn(128, c, hw, hw, device="cuda").to(dtype)
            x = x.to(memory_format=torch.channels_last)
            w = torch.randn(k, c, 3, 3, device="cuda").to(dtype) / (9 * c) ** 0.5
            ref = F.conv2d(x.double(), w.double(), padding=1)
            xp = bordered(x)
            y = torch.empty_like(ref, dtype=dtype, memory_format=torch.channels_last)
            config = raster_tiles(k, block_k, dtype)
            config.pop("LOOP")  # the launcher takes tiles; the loop is its `raster` flag
            # Planned once and relaunched, as the library's own calls are.
            raster = tma_launcher(xp, w, (hw, hw), groups=1, dilation=(1, 1),
                                  pad_top_left=(0, 0), precision=precision, config=config,
                                  interpreted=False, raster=True, slot={})  # fmt: skip
            calls = {
                "cudnn": lambda: F.conv2d(x, w, padding=1),
                "default": lambda: im2win.conv2d(x, w, padding=1, precision=precision),
                "raster_bordered": lambda: raster(xp, w, None, y),
                "border_copy": lambda: bordered(x),
            }
            row = dict(layer=name, dtype=str(dtype), config=config)
            for label, fn in calls.items():
                if label == "raster_bordered":
                    y.fill_(float("nan"))
                out = fn()
                if label != "border_copy":
                    err = ((out.double() - ref).norm() / ref.norm()).item()
                    row[f"{label}_err"] = err
                row[f"{label}_ms"] = timer(fn, 20)
            rows.append(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items() if k != "config"), flush=True)
    if len(sys.argv) > 1:
        info = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__)
        with open(sys.argv[1], "w") as f:
            json.dump(dict(info, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
