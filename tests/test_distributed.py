"""Data-parallel training through im2win: `torch.nn.parallel.DistributedDataParallel` over two
processes trains an `im2win.convert`-ed CNN exactly as one process does on the whole batch.

Two ranks each take half of a fixed global batch and run 3 SGD steps on a mean-reduced loss;
DDP averages their gradients, so the per-step losses (averaged over ranks) and the final
parameters must equal those of one process training the same model on the full batch. This
shows that im2win's Conv2d parameters take part in DDP's gradient all-reduce, that its
backward delivers gradients to DDP's hooks, and that replicas stay identical. Without a GPU
the ranks run gloo on CPU through Triton's interpreter; the `gpu` case runs the same worker
with NCCL, one GPU per rank (on a machine with GPUs the gloo case uses them too).
"""

from __future__ import annotations

import datetime
import gc
import os
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

# im2win is imported inside the worker, never at module level: a spawned child imports this
# module to find `_worker`, and on the CPU path it must set TRITON_INTERPRET=1 before triton
# (through im2win) is imported.

WORLD_SIZE = 2
STEPS = 3
GLOBAL_BATCH = 4  # 2 images per rank, 8x8 with 3 channels
LR = 0.1
TIMEOUT_S = 120  # a hung rendezvous or collective fails the test instead of blocking CI


def _model() -> torch.nn.Module:
    """The small CNN, identical in every process (fixed seed); conversion happens in the caller."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, stride=2, groups=2),  # 8x8 -> 3x3
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 3 * 3, 5),
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed global batch: images [4, 3, 8, 8] and regression targets [4, 5]."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(GLOBAL_BATCH, 3, 8, 8, generator=gen)
    return x, torch.randn(GLOBAL_BATCH, 5, generator=gen)


def _train(model, x, y, step_done=None) -> list[torch.Tensor]:
    """`STEPS` SGD steps on the mean squared error; returns each step's loss (0-d, detached)."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)  # mean: halves average to the whole
        loss.backward()
        opt.step()
        losses.append(step_done(loss.detach()) if step_done else loss.detach())
    return losses


def _worker(rank: int, backend: str, store: str, out: str) -> None:
    """One rank: DDP training on its half of the batch; rank 0 also trains the single-process
    reference on the full batch, on the same device and kernel path."""
    # One GPU per rank under NCCL; gloo uses the GPU(s) when there are any, as the other
    # non-gpu tests do (helpers.DEVICE), else CPU tensors through Triton's interpreter.
    if torch.cuda.is_available():
        os.environ.pop("TRITON_INTERPRET", None)
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (through im2win)
        device = torch.device("cpu")
    import torch.distributed as dist

    import im2win

    dist.init_process_group(
        backend, init_method=store, rank=rank, world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=TIMEOUT_S),
    )  # fmt: skip
    try:
        x, y = (t.to(device) for t in _batch())
        half = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)

        model = im2win.convert(_model()).to(device)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 2 and all(type(m) is im2win.nn.Conv2d for m in convs)
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        local = []

        def averaged(loss):
            local.append(loss.cpu())
            loss = loss.clone()
            dist.all_reduce(loss)
            return loss / WORLD_SIZE

        losses = _train(ddp, x[half], y[half], averaged)
        result = {
            "local": torch.stack(local),
            "losses": torch.stack(losses).cpu(),
            "params": {k: v.detach().cpu() for k, v in model.named_parameters()},
        }
        if rank == 0:
            ref = im2win.convert(_model()).to(device)
            result["ref_losses"] = torch.stack(_train(ref, x, y)).cpu()
            result["ref_params"] = {k: v.detach().cpu() for k, v in ref.named_parameters()}
        torch.save(result, Path(out) / f"rank{rank}.pt")
        # DDP's reducer holds the process group: freed after the group is destroyed, it
        # would join gloo's threads holding the GIL they wait for (examples/train_ddp.py).
        del ddp
        gc.collect()
    finally:
        dist.destroy_process_group()


def _spawn(backend: str, tmp_path: Path) -> list[dict]:
    """Runs the ranks in fresh processes; fails (and kills them) after TIMEOUT_S."""
    store = f"file://{tmp_path / 'store'}"  # FileStore rendezvous: no port to pick
    ctx = mp.spawn(_worker, args=(backend, store, str(tmp_path)), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):  # re-raises a rank's exception with its traceback
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{backend} DDP ranks still running after {TIMEOUT_S} s")
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.parametrize(
    "backend",
    ["gloo", pytest.param("nccl", marks=pytest.mark.gpu)],
)
def test_ddp_matches_single_process(backend, tmp_path):
    if backend == "nccl" and torch.cuda.device_count() < WORLD_SIZE:
        pytest.skip(f"nccl: needs {WORLD_SIZE} GPUs, found {torch.cuda.device_count()}")
    ranks = _spawn(backend, tmp_path)
    tol = dict(rtol=1e-4, atol=1e-5)

    # Each rank trained on its own half: different local losses, one averaged loss.
    assert not torch.allclose(ranks[0]["local"], ranks[1]["local"])
    torch.testing.assert_close(ranks[0]["losses"], ranks[1]["losses"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["losses"], ranks[0]["ref_losses"], **tol)
    assert ranks[0]["losses"][-1] < ranks[0]["losses"][0]  # it did train

    initial = dict(_model().named_parameters())
    ref = ranks[0]["ref_params"]
    for r, result in enumerate(ranks):
        assert result["params"].keys() == ref.keys()
        for name, param in result["params"].items():
            assert not torch.equal(param, initial[name].detach()), f"rank {r}: {name} unchanged"
            torch.testing.assert_close(
                param, ref[name], **tol, msg=lambda m, r=r, n=name: f"rank {r}, {n}: {m}"
            )
