"""Train a small residual CNN on images made on the fly, stock PyTorch and `im2win.convert`
side by side from the same weights and batches, and print both loss curves.

Each class is a noisy sinusoidal pattern of its own frequency and orientation, so the
loss falls within a few hundred steps. With `--backward im2win` the converted model's
backward runs on im2win's kernels too (`IM2WIN_BACKWARD`). `--out` writes the curves,
step times and provenance as JSON.

    python examples/train.py --steps 300 --dtype bfloat16 --channels-last
    python examples/train.py --steps 3 --batch 4 --size 16 --width 8   # a quick check on a CPU
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import im2win
from im2win.bench.env import provenance


def block(c_in: int, c_out: int, stride: int) -> nn.Module:
    """conv-bn-relu-conv-bn with a (strided 1x1 where needed) shortcut, then relu."""

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
            )  # fmt: skip
            self.skip = (
                nn.Identity()
                if stride == 1 and c_in == c_out
                else nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )  # fmt: skip
            )

        def forward(self, x):
            return F.relu(self.body(x) + self.skip(x))

    return Residual()


def small_resnet(classes: int, width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        block(width, width, 1), block(width, 2 * width, 2), block(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, classes),
    )  # fmt: skip


def batch_of(step: int, batch: int, size: int, classes: int, device, dtype, fmt):
    """Images and labels of one step, the same for every run (seeded by the step)."""
    gen = torch.Generator().manual_seed(step)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    grid = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    angle = labels.float()[:, None, None] * torch.pi / classes
    freq = 2.0 + labels.float()[:, None, None] % 3
    wave = torch.sin(freq * torch.pi * (xx * angle.cos() + yy * angle.sin()))
    images = wave[:, None].expand(batch, 3, size, size) + 0.5 * torch.randn(
        batch, 3, size, size, generator=gen
    )
    return images.to(device, dtype).contiguous(memory_format=fmt), labels.to(device)


def train(model, args, device, dtype, fmt) -> tuple[list[float], float]:
    """(loss of every step, median step time in ms) of SGD with momentum."""
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    losses, times = [], []
    for step in range(args.steps):
        x, y = batch_of(step, args.batch, args.size, args.classes, device, dtype, fmt)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())  # waits for the step
        times.append((time.perf_counter() - start) * 1e3)
    return losses, sorted(times)[len(times) // 2]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--width", type=int, default=32, help="channels of the first stage")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--backward", choices=["pytorch", "im2win"], default="pytorch",
                        help="the converted model's backward (IM2WIN_BACKWARD)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the curves and provenance here as JSON")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    os.environ["IM2WIN_BACKWARD"] = args.backward
    torch.manual_seed(args.seed)
    stock = small_resnet(args.classes, args.width).to(device, dtype, memory_format=fmt)
    converted = im2win.convert(copy.deepcopy(stock))
    command = " ".join(["python examples/train.py", *(sys.argv[1:] if argv is None else argv)])
    result = dict(vars(args), device=str(device), **provenance(device, command))
    for name, model in (("stock", stock), ("im2win", converted)):
        losses, ms = train(model.train(), args, device, dtype, fmt)
        result[f"{name}_loss"], result[f"{name}_step_ms"] = losses, ms
    for step in sorted({0, args.steps // 2, args.steps - 1}):
        print(f"step {step:4d}  loss stock {result['stock_loss'][step]:.4f}  "
              f"im2win {result['im2win_loss'][step]:.4f}")  # fmt: skip
    tail = max(1, args.steps // 10)
    print(f"mean loss of the last {tail} steps: stock "
          f"{sum(result['stock_loss'][-tail:]) / tail:.4f}  "
          f"im2win {sum(result['im2win_loss'][-tail:]) / tail:.4f}")  # fmt: skip
    print(f"median step ms: stock {result['stock_step_ms']:.2f}  "
          f"im2win {result['im2win_step_ms']:.2f}")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
