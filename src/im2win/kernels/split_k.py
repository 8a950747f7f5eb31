"""Split-K: the reduction cut into slices, each slice's sums kept in fp32 and added after.

A grid of few output tiles over a long reduction (a deep layer at batch 1, a 7x7 output)
leaves most SMs idle. Cut into S slices, the same tiles give S times the programs: slice s
runs steps [s*ceil(T/S), (s+1)*ceil(T/S)) of the T-step reduction and writes its partial
output, bias-free, into images s*N .. s*N + N - 1 of a workspace [S*N, K, P, Q] in fp32 and
the output's memory format. `finish` sums the slices in a fixed order (no atomics, so the
result does not depend on scheduling), adds the bias and casts into the output, in one
launch: the slices pay only where a call is short, so every launch after them counts.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .sizes import cdiv

# The fp32 partial outputs one call may hold, in bytes. Slices pay only where the grid is
# a few programs (at most 1/MIN_SPLITS of the SMs: a few thousand output pixels), where
# this buys up to MAX_SPLITS of them; larger outputs take fewer or none.
WORKSPACE_BYTES = 1 << 20
MAX_SPLITS = 16
# Fewer slices did not pay for the sum after them: measured on H100 at batch 1
# (results/h100-issue4/exploration/split_k), 2-7 slices ran 0.48-1.59x of none, mostly
# slower; 16 slices 0.99-2.58x (conv12, bf16 to fp32).
MIN_SPLITS = 8


@functools.cache
def sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def split_count(programs: int, steps: int, outputs: int, sms: int) -> int:
    """How many slices a grid of `programs` over `steps` reduction steps and `outputs`
    output elements runs: MIN_SPLITS to MAX_SPLITS where the grid fills at most 1/MIN_SPLITS
    of `sms` SMs, each slice keeps at least 4 steps (fewer would pay a tile's pipeline fill
    for little work) and all slices fit WORKSPACE_BYTES; else 1."""
    by_memory = WORKSPACE_BYTES // (4 * max(outputs, 1))
    splits = min(cdiv(sms, programs), steps // 4, by_memory, MAX_SPLITS)
    return splits if splits >= MIN_SPLITS else 1


def default_splits(programs: int, steps: int, outputs: int, device: torch.device,
                   interpreted: bool) -> int:  # fmt: skip
    """`split_count` on `device`'s SMs; 1 under the interpreter (tests pin SPLIT_K)."""
    if interpreted or device.type != "cuda":
        return 1
    return split_count(programs, steps, outputs, sm_count(device))


def workspace(splits: int, y: torch.Tensor) -> torch.Tensor:
    """The slices' fp32 outputs, [splits*N, K, P, Q], laid out as `y` (channels-last or not)."""
    n, k, p, q = y.shape
    nhwc = y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    layout = torch.channels_last if nhwc else torch.contiguous_format
    return torch.empty((splits * n, k, p, q), dtype=torch.float32, device=y.device,
                       memory_format=layout)  # fmt: skip


@triton.jit
def _sum_slices_kernel(
    ws_ptr, bias_ptr, y_ptr, E, K, CHANNEL_STRIDE, stride_b,
    SPLITS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # Element e of every slice and of y in storage order (both laid out alike); its channel
    # is (e // CHANNEL_STRIDE) % K: CHANNEL_STRIDE is P*Q in NCHW, 1 in channels-last.
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = e < E
    total = tl.zeros([BLOCK], dtype=tl.float32)
    slice_ptr = ws_ptr + e
    for _ in tl.static_range(SPLITS):  # pointers step by E in 64 bits: SPLITS * E may not fit 32
        total += tl.load(slice_ptr, mask=ok, other=0.0)
        slice_ptr += E
    if HAS_BIAS:
        channel = e // CHANNEL_STRIDE % K
        total += tl.load(bias_ptr + channel * stride_b, mask=ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + e, total.to(y_ptr.dtype.element_ty), mask=ok)


def finish(ws: torch.Tensor, splits: int, bias: torch.Tensor | None, y: torch.Tensor):
    """y = the sum of the slices in `ws` (+ bias), cast to y's dtype; returns y. One kernel
    where y is dense in ws's layout (as `workspace` made it), PyTorch ops otherwise."""
    n, k, p, q = y.shape
    if ws[:n].stride() != y.stride():
        total = ws.view(splits, *y.shape).sum(0)
        if bias is not None:
            total += bias.view(1, -1, 1, 1)
        return y.copy_(total)
    elements, block = y.numel(), 1024
    channel_stride = 1 if y.stride(1) == 1 else p * q
    _sum_slices_kernel[(cdiv(elements, block),)](
        ws, bias, y, elements, k, channel_stride, 0 if bias is None else bias.stride(0),
        SPLITS=splits, HAS_BIAS=bias is not None, BLOCK=block,
    )  # fmt: skip
    return y
