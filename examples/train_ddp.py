"""Data-parallel training with `DistributedDataParallel`, stock PyTorch and `im2win.convert`
side by side: images per second on 1 and more GPUs (scaling efficiency), both loss
curves, peak memory per GPU.

One process per GPU, as torchrun starts them; the script starts them itself (a FileStore
rendezvous, NCCL on GPUs, gloo on a CPU), so that one command measures every world size,
both models and each seed. Each GPU trains on its own `--batch` images a step (weak
scaling: the global batch grows with the GPUs), made on the fly on the device; a run
times its steps after `--warmup`. Rows (JSON lines, `--out`): one per model, GPU count and
seed, with `gpus`, `images_per_s`, `scaling_efficiency` (images per second over the GPU
count times the same model's and seed's on one GPU) and the loss of every step.

    python examples/train_ddp.py --gpus 1,2 --seeds 0,1 --out ddp.jsonl   # ResNet-50, bf16 NHWC
    python examples/train_ddp.py --model small --gpus 1,2 --seeds 0 --steps 3 --batch 2 \\
        --size 16 --width 4 --dtype float32 --layout NCHW --warmup 1   # on a CPU (gloo)
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

if not torch.cuda.is_available():  # Triton's interpreter runs the kernels on a CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")  # (read when triton is imported)

import im2win  # noqa: E402
from im2win.bench.env import provenance  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import small_resnet  # noqa: E402

# NVLink multicast stays off in every process NCCL starts (the shared GPU hosts ask it).
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                "NVSHMEM_DISABLE_NVLS": "1"}  # fmt: skip
ARMS = ("stock", "im2win")
LAYOUTS = {"NHWC": torch.channels_last, "NCHW": torch.contiguous_format}
TIMEOUT = datetime.timedelta(minutes=10)  # a hung collective fails the run


def make_model(args) -> torch.nn.Module:
    if args.model == "resnet50":
        import torchvision

        return torchvision.models.resnet50(weights=None, num_classes=args.classes)
    return small_resnet(args.classes, args.width)


def images_of(key: int, args, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of `args.batch` noisy sinusoids, one frequency and orientation a class, made on
    `device` from the seed `key`."""
    gen = torch.Generator(device).manual_seed(key)
    labels = torch.randint(0, args.classes, (args.batch,), generator=gen, device=device)
    grid = torch.linspace(-1, 1, args.size, device=device)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    angle = labels.float()[:, None, None] * torch.pi / args.classes
    freq = 2.0 + labels.float()[:, None, None] % 3
    wave = torch.sin(freq * torch.pi * (xx * angle.cos() + yy * angle.sin()))
    noise = torch.randn(args.batch, 3, args.size, args.size, generator=gen, device=device)
    images = (wave[:, None] + 0.5 * noise).to(dtype)
    return images.contiguous(memory_format=LAYOUTS[args.layout]), labels


def run_rank(rank: int, world: int, store: str, arm: str, seed: int, args, out: str) -> None:
    """One process of a run: DDP training of `arm`'s model on this rank's batches; rank 0
    writes the run's record to `out`."""
    os.environ.update(NO_MULTICAST)
    os.environ["IM2WIN_BACKWARD"] = args.backward
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:  # oneDNN's fp32 convolution gradients were wrong for some inputs on the CPU
        torch.backends.mkldnn.enabled = False  # (notes/backward/README.md): PyTorch's own
    dist.init_process_group("nccl" if cuda else "gloo", init_method=store, rank=rank,
                            world_size=world, timeout=TIMEOUT)  # fmt: skip
    try:
        losses, step_s = train(rank, world, arm, seed, args, device)
        # DDP's reducer holds the process group: freed after the group is destroyed, it
        # would join gloo's threads holding the GIL they wait for (a hang seen on the CPU).
        gc.collect()
        peak = torch.tensor([torch.cuda.max_memory_allocated(device) if cuda else 0],
                            device=device)  # fmt: skip
        peaks = [torch.zeros_like(peak) for _ in range(world)]
        dist.all_gather(peaks, peak)
        if rank == 0:
            record = dict(arm=arm, gpus=world, seed=seed, step_ms=step_s * 1e3,
                          images_per_s=world * args.batch / step_s,
                          peak_mib=[int(p.item()) / 2**20 for p in peaks],
                          losses=losses)  # fmt: skip
            Path(out).write_text(json.dumps(record))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def train(rank: int, world: int, arm: str, seed: int, args, device) -> tuple[list[float], float]:
    """(each step's loss averaged over the ranks, median step time in seconds after the
    warmup) of SGD with momentum on `arm`'s model under DDP."""
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(seed)  # the same weights on every rank and in both arms
    model = make_model(args).to(device, dtype, memory_format=LAYOUTS[args.layout])
    if arm == "im2win":
        model = im2win.convert(model)
    cuda = device.type == "cuda"
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    losses, times = [], []
    for step in range(args.steps):
        x, y = images_of((seed * args.steps + step) * world + rank, args, device, dtype)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ddp(x).float(), y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        losses.append(loss.detach())
    summed = torch.stack(losses).to(torch.float64)
    dist.all_reduce(summed)
    return (summed / world).tolist(), statistics.median(times[args.warmup :])


def spawn(world: int, arm: str, seed: int, args, scratch: Path) -> dict:
    """A run of `world` processes; its record. Its ranks are killed after `--timeout`."""
    name = f"{arm}-{world}-{seed}"
    out = scratch / f"{name}.json"
    store = f"file://{scratch / name}.store"
    ctx = mp.spawn(run_rank, args=(world, store, arm, seed, args, str(out)), nprocs=world,
                   join=False)  # fmt: skip
    deadline = time.monotonic() + args.timeout
    while not ctx.join(timeout=1):  # re-raises a rank's exception
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.kill()
            raise TimeoutError(f"{name}: ranks still running after {args.timeout} s")
    return json.loads(out.read_text())


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["resnet50", "small"], default="resnet50")
    parser.add_argument("--gpus", default="1,2", help="world sizes, comma-separated")
    parser.add_argument("--seeds", default="0,1", help="seeds: the stock model's spread")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20, help="steps not timed")
    parser.add_argument("--batch", type=int, default=64, help="images a GPU a step")
    parser.add_argument("--size", type=int, default=224, help="image height and width")
    parser.add_argument("--width", type=int, default=32, help="the small model's first stage")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--layout", choices=list(LAYOUTS), default="NHWC")
    parser.add_argument("--backward", choices=["pytorch", "im2win"], default="pytorch",
                        help="the converted model's backward (IM2WIN_BACKWARD)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a run may take")
    parser.add_argument("--out", help="append the rows here as JSON lines")
    args = parser.parse_args(argv)
    worlds = [int(g) for g in args.gpus.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    if not 0 <= args.warmup < args.steps:
        raise ValueError(f"--warmup must be from 0 to --steps - 1, got {args.warmup}")
    available = torch.cuda.device_count() if torch.cuda.is_available() else None
    if available is not None and max(worlds) > available:
        raise ValueError(f"--gpus asks for {max(worlds)} GPUs, this machine has {available}")

    device = torch.device("cuda" if available else "cpu")
    command = " ".join(["python examples/train_ddp.py", *(sys.argv[1:] if argv is None else argv)])
    common = dict(model=args.model, per_gpu_batch=args.batch, size=args.size, steps=args.steps,
                  warmup=args.warmup, dtype=args.dtype, layout=args.layout, backward=args.backward,
                  **provenance(device, command))  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        runs = {(arm, world, seed): spawn(world, arm, seed, args, Path(scratch))
                for world in worlds for seed in seeds for arm in ARMS}  # fmt: skip
    rows = []
    for (arm, world, seed), record in runs.items():
        one = runs.get((arm, 1, seed))
        efficiency = record["images_per_s"] / (world * one["images_per_s"]) if one else None
        rows.append(dict(record, scaling_efficiency=efficiency, **common))
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    report(rows, args.steps)
    return rows


def report(rows: list[dict], steps: int) -> None:
    """Images per second and efficiency per model and GPU count (mean over seeds), and the
    mean loss of the last tenth of the steps, seed by seed."""
    tail = max(1, steps // 10)
    print(f"{'model':7s} {'gpus':>4s} {'images/s':>9s} {'efficiency':>10s} "
          f"{'peak MiB':>8s}  last-tenth loss by seed")  # fmt: skip
    for arm in ARMS:
        for world in sorted({r["gpus"] for r in rows}):
            runs = [r for r in rows if r["arm"] == arm and r["gpus"] == world]
            ips = statistics.mean(r["images_per_s"] for r in runs)
            eff = [r["scaling_efficiency"] for r in runs if r["scaling_efficiency"] is not None]
            peak = max(max(r["peak_mib"]) for r in runs)
            tails = " ".join(f"{sum(r['losses'][-tail:]) / tail:.4f}" for r in runs)
            print(
                f"{arm:7s} {world:4d} {ips:9.1f} "
                f"{statistics.mean(eff) if eff else float('nan'):10.3f} {peak:8.0f}  {tails}"
            )


if __name__ == "__main__":
    main()
