"""The input gradient as forward convolutions, split by stride phase, planned per signature.

dX is the output gradient correlated with the filter flipped and its input and output
channels swapped per group. A strided layer splits into stride_h x stride_w phases (the input
rows and columns of one residue each): each phase is a stride-1 convolution with the taps
that reach it, so no product is taken with the zeros a strided transposed convolution would
insert.

What a call of one signature needs is made once (`_plan`): the phases, an index that
gathers every phase's filter from the weight in one copy, laid out as the forward kernels
read filters (no re-lay in their launchers), and each phase's convolution plan. A phase
whose padding is uneven runs that padding natively where an im2win kernel serves it; only
where PyTorch's convolution (symmetric padding only) is the choice, or a padding is negative
(rows cut), does it pay a padded copy of the output gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .params import ConvParams, memory_format_of
from .plan import Conv2dPlan, make_plan
from .tuning import autotune_enabled

_PLANS: dict[tuple, Callable] = {}
MAX_PLANS = 1024  # then the plans start over (as plan.py's)
SEGMENT = 16  # elements a phase's filter starts on (16-byte aligned in every dtype)


def input_grad(input_size: tuple[int, ...], weight: torch.Tensor, grad_output: torch.Tensor,
               params: ConvParams, *, precision: str | None,
               backend: str) -> torch.Tensor:  # fmt: skip
    """The gradient of a convolution with respect to its input [N, C, H, W] (`input_size`),
    for checked arguments and parsed geometry (padding per side), in grad_output's dtype and
    memory format."""
    key = (
        tuple(input_size), weight.shape, weight.stride(), weight.dtype, weight.device,
        weight.data_ptr() % 16, grad_output.shape, grad_output.stride(),
        grad_output.data_ptr() % 16, params, precision, backend, autotune_enabled(),
        torch.get_float32_matmul_precision(),
        # a relaunched kernel runs in the context of the device current at its first launch
        torch._C._cuda_getDevice() if weight.is_cuda else None,  # current_device(), unwrapped
    )  # fmt: skip
    run = _PLANS.get(key)
    if run is None:
        if len(_PLANS) >= MAX_PLANS:
            _PLANS.clear()
        run = _PLANS[key] = _plan(tuple(input_size), weight, grad_output, params, precision,
                                  backend)  # fmt: skip
    return run(weight, grad_output)


def _plan(input_size, weight, grad_output, params: ConvParams, precision, backend) -> Callable:
    """`run(weight, grad_output) -> dX` for tensors of these signatures."""
    n, c, h, w = input_size
    k, _, r, s = weight.shape
    (sh, sw), fmt = params.stride, memory_format_of(grad_output)
    phases = [
        (a, b, rows, cols)
        for a, rows in _phases(h, r, sh, params.dilation[0], params.padding[0])
        for b, cols in _phases(w, s, sw, params.dilation[1], params.padding[2])
    ]
    live = [(a, b, rows, cols) for a, b, rows, cols in phases if rows.taps and cols.taps]
    filters = _PhaseFilters(weight, params.groups, [(rows, cols) for *_, rows, cols in live], fmt)
    example = filters(weight)
    convs = [_phase_conv(grad_output, filt, rows, cols, params.groups, precision, backend)
             for (_, _, rows, cols), filt in zip(live, example, strict=True)]  # fmt: skip
    if params.stride == (1, 1) and live:
        conv = convs[0]
        return lambda weight, dy: conv(dy, filters(weight)[0])
    covered = len(live) == len(phases)  # every input position in a phase with taps

    def run(weight, dy):
        grad_input = torch.empty((n, c, h, w), dtype=dy.dtype, device=dy.device,
                                 memory_format=fmt)  # fmt: skip
        if not covered:
            grad_input.zero_()  # phases no tap reaches stay zero
        for (a, b, _, _), conv, filt in zip(live, convs, filters(weight), strict=True):
            grad_input[:, :, a::sh, b::sw] = conv(dy, filt)
        return grad_input

    return run


class _PhaseFilters:
    """Every phase's filter, gathered from the weight in one copy: per group the taps that
    reach the phase, flipped, input and output channels swapped ([g*Cg, Kg, taps_h, taps_w]),
    laid out as `fmt` (so that a channels-last output gradient's phases get channels-last
    filters, which the forward launchers read in place), each from a 16-byte boundary."""

    def __init__(self, weight: torch.Tensor, groups: int, taps: list, fmt: torch.memory_format):
        k, cg, r, s = weight.shape
        g, kg = groups, k // groups
        # Where each element sits in the weight's memory (a dense layout is read in place).
        self.dense = _dense(weight)
        contiguous = torch.empty(weight.shape, device="meta").stride()  # no memory
        strides = weight.stride() if self.dense else contiguous
        offsets = torch.arange(max(1, weight.numel())).as_strided(weight.shape, strides)
        offsets = offsets.reshape(g, kg, cg, r, s).transpose(1, 2)
        pieces, self.views, offset = [], [], 0
        for rows, cols in taps:
            shape = (g * cg, kg, len(rows.taps), len(cols.taps))
            index = offsets[:, :, :, rows.slice, cols.slice].flip(-2, -1).reshape(shape)
            if fmt == torch.channels_last:  # memory order (K', R', S', C')
                index = index.permute(0, 2, 3, 1)
            size = index.numel()
            gap = -size % SEGMENT
            pieces += [index.reshape(-1), torch.zeros(gap, dtype=torch.int64)]
            self.views.append((offset, shape))
            offset += size + gap
        self.index = torch.cat(pieces).to(weight.device) if pieces else None
        self.channels_last = fmt == torch.channels_last

    def __call__(self, weight: torch.Tensor) -> list[torch.Tensor]:
        if self.index is None:
            return []
        source = weight if self.dense else weight.contiguous()
        flat = source.as_strided((source.numel(),), (1,)).index_select(0, self.index)
        filters = []
        for offset, (k, c, r, s) in self.views:
            piece = flat[offset : offset + k * c * r * s]
            if self.channels_last:
                filters.append(piece.view(k, r, s, c).permute(0, 3, 1, 2))
            else:
                filters.append(piece.view(k, c, r, s))
        return filters


def _dense(t: torch.Tensor) -> bool:
    """Whether `t`'s elements fill numel() consecutive places of memory (any order of the
    dimensions: contiguous, channels-last, a permutation), so a 1-D view reads them all."""
    sizes = sorted((stride, size) for size, stride in zip(t.shape, t.stride(), strict=True)
                   if size > 1)  # fmt: skip
    expected = 1
    for stride, size in sizes:
        if stride != expected:
            return False
        expected *= size
    return True


def _phase_conv(dy, filt, rows: _Taps, cols: _Taps, groups, precision, backend) -> Callable:
    """`conv(dy, filt)`: one phase of the input gradient, a stride-1 correlation of the
    output gradient with the phase's filter (its taps reversed), padded to line its outputs
    up with the phase's input positions (top, bottom, left, right; negative: cut)."""
    p, q = dy.shape[2:]
    span_h, span_w = rows.dilation * (len(rows.taps) - 1), cols.dilation * (len(cols.taps) - 1)
    top, left = rows.before, cols.before
    pads = (top, rows.size + span_h - p - top, left, cols.size + span_w - q - left)
    dilation = (rows.dilation, cols.dilation)
    (pad_h, pad_w), rest = split_padding(pads)
    fmt = memory_format_of(dy)

    def padded(dy):
        return F.pad(dy, rest).contiguous(memory_format=fmt) if any(rest) else dy

    symmetric = ConvParams((1, 1), (pad_h, pad_h, pad_w, pad_w), dilation, groups)
    plan = _make(padded(dy), filt, symmetric, precision, backend)
    if any(rest) and min(pads) >= 0 and plan.uses_im2win:
        # an im2win kernel pads each side as asked: no copy of the output gradient
        plan = _make(dy, filt, ConvParams((1, 1), pads, dilation, groups), precision, backend)
        return lambda dy, filt: plan(dy, filt, None)
    return lambda dy, filt: plan(padded(dy), filt, None)


def split_padding(pads: tuple[int, int, int, int]) -> tuple[tuple[int, int], tuple[int, ...]]:
    """Padding per side (top, bottom, left, right; negative: cut) as the symmetric part a
    convolution takes, (pad_h, pad_w), and the rest in `F.pad`'s order (left, right, top,
    bottom): uneven or negative, a padded copy's."""
    top, bottom, left, right = pads
    pad_h, pad_w = max(0, min(top, bottom)), max(0, min(left, right))
    return (pad_h, pad_w), (left - pad_w, right - pad_w, top - pad_h, bottom - pad_h)


def _make(x, filt, params: ConvParams, precision, backend) -> Conv2dPlan:
    return make_plan(x, filt, None, params, precision=precision, backend=backend, windows=None,
                     config=None)  # fmt: skip


@dataclass(frozen=True)
class _Taps:
    """The filter taps of one axis that reach one phase of input rows (or columns):
    `taps` (ascending, every stride/gcd(stride, dilation)-th), the step between them in
    the output gradient (`dilation`), and the padding that lines the phase's outputs up
    (`before`, `size`: the phase's length)."""

    taps: range
    dilation: int
    before: int
    size: int

    @property
    def slice(self) -> slice:
        """The taps as a slice of the filter axis."""
        return slice(self.taps.start, self.taps.stop, self.taps.step)


def _phases(size: int, kernel: int, stride: int, dilation: int, pad: int):
    """(phase, _Taps) for each residue of input positions modulo `stride`.

    Input position h = phase + stride*i takes tap t from output position
    p = (h + pad - t*dilation) / stride where that divides: the taps of a phase step by
    stride/gcd and their outputs by dilation/gcd, so each phase is a stride-1 correlation
    of the output gradient with those taps reversed, dilated by dilation/gcd.
    """
    divisor = math.gcd(stride, dilation)
    period, step = stride // divisor, dilation // divisor
    for phase in range(min(stride, size)):
        length = -(-(size - phase) // stride)
        reach = (t for t in range(period) if (phase + pad - t * dilation) % stride == 0)
        first = next(reach, None)
        if first is None or first >= kernel:
            yield phase, _Taps(range(0), step, 0, length)
            continue
        taps = range(first, kernel, period)
        row = (phase + pad - taps[0] * dilation) // stride  # output row of the first tap at i=0
        # Reversed taps j' = J-1-j read output row i + row - step*(J-1) + step*j'.
        yield phase, _Taps(taps, step, step * (len(taps) - 1) - row, length)
