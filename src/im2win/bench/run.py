"""The benchmark loop: layers x tiers x layouts x directions x methods, one result row per
measurement. The forward (fprop) runs the forward methods (`methods.py`), the gradients
(dgrad, wgrad) the gradient methods (`grads.py`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from tqdm import tqdm

from im2win.baselines import Unsupported, reference_fp64
from im2win.params import ConvParams, conv_params
from im2win.reference import transform_reference

from .grads import GRAD_METHODS, GradMethod
from .grads import reference as grad_reference
from .layers import Layer
from .measure import MIB, allocated, allocator_peak, nbytes, relative_error
from .methods import Method
from .report import ResultWriter
from .roofline import Ceilings, measure_ceilings
from .tiers import Tier
from .timing import host_ms, timer_for

LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class BenchPlan:
    suite: str
    layers: list[Layer]
    tiers: list[Tier]
    layouts: list[str]
    methods: list[Method]
    batch: int
    repeats: int
    device: torch.device
    directions: tuple[str, ...] = ("fprop",)

    def cases(self) -> list[tuple[Layer, Tier, str, str, Method | GradMethod]]:
        """Every (layer, tier, layout, direction, method) to measure, in run order."""
        return [
            (layer, tier, layout, direction, method)
            for layer in self.layers
            for tier in self.tiers
            for layout in self.layouts
            for direction in self.directions
            for method in (self.methods if direction == "fprop" else GRAD_METHODS.values())
            if tier.name in method.tiers
        ]


class _Operands:
    """One layer's fp32 operands, their per-tier/layout copies and float64 references."""

    def __init__(self, layer: Layer, batch: int, device: torch.device) -> None:
        self.layer = layer
        x_shape, w_shape = layer.shapes(batch)
        gen = torch.Generator(device).manual_seed(0)  # same data for every method and run
        self.x = torch.randn(x_shape, generator=gen, device=device)
        self.w = torch.randn(w_shape, generator=gen, device=device)
        self.kwargs = layer.conv_kwargs()
        self._refs: dict[tuple[torch.dtype, str], torch.Tensor] = {}
        self._dy: torch.Tensor | None = None

    def inputs(self, tier: Tier, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
        fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
        return (
            self.x.to(dtype=tier.dtype, memory_format=fmt),
            self.w.to(dtype=tier.dtype, memory_format=fmt),
        )

    def grad_output(self, tier: Tier, layout: str) -> torch.Tensor:
        """The output gradient the backward directions start from, made on first use."""
        if self._dy is None:
            gen = torch.Generator(self.x.device).manual_seed(1)
            params = conv_params(**self.kwargs, kernel_size=tuple(self.w.shape[2:]))
            p, q = params.output_size(*self.x.shape[2:], *self.w.shape[2:])
            dims = (self.x.shape[0], self.w.shape[0], p, q)
            self._dy = torch.randn(dims, generator=gen, device=self.x.device)
        fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
        return self._dy.to(dtype=tier.dtype, memory_format=fmt)

    def reference(self, tier: Tier, direction: str = "fprop") -> torch.Tensor:
        """float64 result of the tier's rounded inputs: error then measures arithmetic."""
        key = (tier.dtype, direction)
        if key not in self._refs:
            x, w = (t.to(tier.dtype) for t in (self.x, self.w))
            if direction == "fprop":
                self._refs[key] = reference_fp64(x, w, None, **self.kwargs)
            else:
                dy = self._dy.to(tier.dtype)
                self._refs[key] = grad_reference(x, w, dy, self.kwargs, direction)
        return self._refs[key]


def _measure(plan, timer, ops: _Operands, tier: Tier, layout: str, direction: str,
             method: Method | GradMethod) -> dict:  # fmt: skip
    """One case's timing, error and memory. A gradient's output is the gradient, and the
    output gradient it reads counts with the operands."""
    x, w = ops.inputs(tier, layout)
    operands = [x, w]
    if direction != "fprop":
        operands.append(ops.grad_output(tier, layout))
    before = allocated(plan.device)
    if direction == "fprop":
        prepared = method.build(x, w, ops.kwargs, tier)
    else:
        prepared = method.build(x, w, operands[2], ops.kwargs, tier, direction)
    ms = timer(prepared.run, plan.repeats)
    host = host_ms(prepared.run, plan.repeats, plan.device)
    y, peak = allocator_peak(prepared.run, plan.device, before)  # after warm-up
    if method.output == "windows":  # the transform alone: checked against its definition
        ref = transform_reference(
            x, w.shape[2], _params(ops, w), channels_last=layout == "NHWC"
        ).double()
    else:
        ref = ops.reference(tier, direction)
    operand_bytes = sum(nbytes(t) for t in operands)
    return {
        "ms": ms,
        "host_us": host * 1e3,
        "rel_err": relative_error(y, ref),
        "input_mib": nbytes(x) / MIB,
        "weight_mib": nbytes(w) / MIB,
        "output_mib": nbytes(y) / MIB,
        # peak: the whole footprint (operands, output, temporaries, kept workspace);
        # extra: only what it needs beyond operands and output (window tensor, workspace).
        "peak_mib": None if peak is None else (peak + operand_bytes) / MIB,
        "extra_mib": None if peak is None else max(0, peak - nbytes(y)) / MIB,
        "analytic_extra_mib": prepared.extra_bytes / MIB,
    }


def _roofline(row: dict, tier: Tier, ceilings: Ceilings) -> dict:
    """The layer's floor (compute or compulsory bytes) and how close the method came to it."""
    compulsory = (row["input_mib"] + row["weight_mib"] + row["output_mib"]) * MIB
    floor_ms = ceilings.floor_ms(row["flop"], compulsory, tier.name)
    roofline = row["flop"] / (floor_ms * 1e-3) / 1e12
    return {
        "ceiling_tflops": ceilings.tflops[tier.name],
        "copy_gbps": ceilings.copy_gbps,
        "roofline_tflops": roofline,
        "pct_of_roofline": 100 * row["tflops"] / roofline,
    }


def _params(ops: _Operands, w: torch.Tensor) -> ConvParams:
    return conv_params(**ops.kwargs, kernel_size=tuple(w.shape[2:]))


def _row(plan: BenchPlan, layer: Layer, tier: Tier, layout: str, direction: str,
         method: Method | GradMethod) -> dict:  # fmt: skip
    return {
        "suite": plan.suite, "layer": layer.name, "method": method.name, "tier": tier.name,
        "layout": layout, "direction": direction, "batch": plan.batch,
        "dtype": str(tier.dtype).removeprefix("torch."),
        "backend": method.backend(plan.device), "device": plan.device.type,
        "c": layer.c, "hw": layer.hw, "k": layer.k, "rs": layer.rs, "stride": layer.stride,
        "padding": layer.padding, "dilation": layer.dilation, "groups": layer.groups,
        "flop": layer.flop(plan.batch), "ms": None, "host_us": None, "tflops": None,
        "rel_err": None,
        "max_rel_err": tier.max_rel_err, "within_tier": False, "status": "error",
        "input_mib": None, "weight_mib": None, "output_mib": None, "peak_mib": None,
        "extra_mib": None, "analytic_extra_mib": None, "ceiling_tflops": None,
        "copy_gbps": None, "roofline_tflops": None, "pct_of_roofline": None,
        "repeats": plan.repeats,
        "error": "", "note": "",
    }  # fmt: skip


def run_bench(plan: BenchPlan, provenance: dict[str, str], writer: ResultWriter) -> list[dict]:
    """Measure every case of `plan`; each row is written as soon as it is measured."""
    timer = timer_for(plan.device)
    try:
        ceilings = measure_ceilings(plan.tiers, plan.device, timer)
    except Exception as exc:  # the roofline is a column; losing it must not lose the run
        print(f"roofline skipped: measuring the ceilings failed: {exc}", file=sys.stderr)
        ceilings = None
    cases = plan.cases()
    # A bar with ETA on stderr, so stdout stays the notice, the table and the file names.
    progress = tqdm(total=len(cases), file=sys.stderr, unit="case", dynamic_ncols=True)
    rows, ops = [], None
    for layer, tier, layout, direction, method in cases:
        gradient = "" if direction == "fprop" else f" {direction}"
        progress.set_description(f"{layer.name} {tier.name} {layout}{gradient} {method.name}")
        if ops is None or ops.layer is not layer:
            ops = None  # free the previous layer's tensors before allocating the next
            if plan.device.type == "cuda":
                torch.cuda.empty_cache()
            ops = _Operands(layer, plan.batch, plan.device)
        row = _row(plan, layer, tier, layout, direction, method)
        try:
            row.update(_measure(plan, timer, ops, tier, layout, direction, method))
            if method.output != "windows":  # a gradient counts the convolution's FLOPs
                row["tflops"] = row["flop"] / (row["ms"] * 1e-3) / 1e12
            if direction == "fprop" and method.output == "conv" and ceilings is not None:
                row.update(_roofline(row, tier, ceilings))
            row["within_tier"] = row["rel_err"] <= tier.max_rel_err
            row["status"] = "ok" if row["within_tier"] else "over-bound"
        except Unsupported as exc:  # recorded as such: not a failure of the run
            row["status"], row["note"] = "unsupported", exc.reason[:300]
        except Exception as exc:  # a failing method must not cost the other measurements
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        row.update(provenance)
        writer.write(row)
        rows.append(row)
        progress.update()
    progress.close()
    return rows
