"""One arm of a model comparison: a model run one way (eager, CUDA graph, compiled, training).

An arm's `first()` is the first call of that model in its mode: it includes whatever the
first call pays (cuDNN's benchmark search, Triton compiles, graph capture, `torch.compile`)
and returns the logits. `step()` is what is timed afterwards, `peak_bytes()` the allocator
peak of one step above what was allocated before it (None on a CPU).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .measure import allocated, allocator_peak

GRAPH_WARMUP = 3  # eager calls on a side stream before capture: plans, cuDNN's search


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """`torch.autocast` to `dtype` on `device`'s type, or nothing when `dtype` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class EagerArm:
    """Inference under `torch.no_grad()`, optionally under autocast."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, autocast: torch.dtype | None):
        self.model, self.x, self.autocast = model.eval(), x, autocast

    def step(self) -> torch.Tensor:
        with torch.no_grad(), autocast_context(self.x.device, self.autocast):
            return self.model(self.x)

    def first(self) -> torch.Tensor:
        return self.step()

    def peak_bytes(self) -> int | None:
        return allocator_peak(self.step, self.x.device, allocated(self.x.device))[1]


class CompiledArm(EagerArm):
    """`torch.compile(model)` (default mode); the first call compiles."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, autocast: torch.dtype | None):
        super().__init__(model, x, autocast)
        self.model = torch.compile(self.model)


class Frozen(torch.nn.Module):
    """`torch.compile(model)` with Inductor's freezing: parameters become constants, batch
    norms fold into the convolutions' weights and the pointwise ops fuse; the best a
    PyTorch user gets for inference today. Freezing applies to no-grad calls only."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.compiled = torch.compile(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch._inductor.config.patch(freezing=True):
            return self.compiled(x)


FROZEN = {"frozen": "eager", "frozen-graph": "graph"}  # runs a Frozen model as the other


class GraphArm:
    """The eager forward captured once in a CUDA graph, then replayed.

    The first call warms up on a side stream (plans, cuDNN's search, lazy allocations
    happen outside the capture), captures and replays once. The peak is the capture's.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, autocast: torch.dtype | None):
        if x.device.type != "cuda":
            raise RuntimeError(f"CUDA graphs need a CUDA device, got {x.device}")
        self.eager = EagerArm(model, x, autocast)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.y: torch.Tensor | None = None
        self._peak: int | None = None

    def first(self) -> torch.Tensor:
        device = self.eager.x.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP):
                self.eager.step()
        torch.cuda.current_stream(device).wait_stream(side)
        before = allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.y = self.eager.step()  # [N, classes], in the graph's memory pool
        torch.cuda.synchronize(device)
        self._peak = torch.cuda.max_memory_allocated(device) - before
        return self.step().clone()

    def step(self) -> torch.Tensor:
        self.graph.replay()
        return self.y

    def peak_bytes(self) -> int | None:
        return self._peak  # replays allocate nothing: the graph's pool is its footprint


class TrainArm:
    """One SGD step: forward (train mode), cross-entropy, backward, `optimizer.step()`.

    `first()` returns the logits of the first step, computed before any update, so two arms
    built from the same parameters are compared on the same weights.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        target: torch.Tensor,
        autocast: torch.dtype | None,
        lr: float = 1e-3,
    ):
        self.model, self.x, self.target, self.autocast = model.train(), x, target, autocast
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)

    def step(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.x.device, self.autocast):
            logits = self.model(self.x)  # [N, classes]
        F.cross_entropy(logits.float(), self.target).backward()
        self.optimizer.step()
        return logits.detach()

    def first(self) -> torch.Tensor:
        return self.step()

    def peak_bytes(self) -> int | None:
        return allocator_peak(self.step, self.x.device, allocated(self.x.device))[1]


def make_arm(
    runner: str,
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    autocast: torch.dtype | None,
):
    """The arm that runs `model` as `runner` says: eager, graph, compile, train, frozen
    (compiled with freezing) or frozen-graph (that, captured in a CUDA graph)."""
    if runner == "train":
        return TrainArm(model, x, target, autocast)
    if runner in FROZEN:
        model, runner = Frozen(model), FROZEN[runner]
    arms = {"eager": EagerArm, "graph": GraphArm, "compile": CompiledArm}
    if runner not in arms:
        raise ValueError(f"unknown runner {runner!r}; choose from {[*arms, 'train', *FROZEN]}")
    return arms[runner](model, x, autocast)
