"""How many slices split-K cuts a reduction into (`kernels/split_k.py` runs them).

A grid of few output tiles over a long reduction (a deep layer at batch 1, a 7x7 output)
leaves most SMs idle; cut into S slices, the same tiles give S times the programs. Slices
pay only where the grid fills a small share of the SMs, for the sum after them costs a
launch (notes/tuning.md, split-K).
"""

from __future__ import annotations

from ..kernels.sizes import cdiv
from ..problem import ConvProblem
from .base import Target


def split_count(programs: int, steps: int, outputs: int, target: Target) -> int:
    """Slices for a grid of `programs` over `steps` reduction steps and `outputs` output
    elements: where the grid fills at most 1/min_splits of the SMs, as many as fill them,
    up to max_splits, each slice keeping min_steps steps and all of them fitting the fp32
    workspace; else 1. Always 1 in the interpreter (tests pin SPLIT_K)."""
    if target.interpreted:
        return 1
    t = target.table["split-k"]
    by_memory = t["workspace_bytes"] // (4 * max(outputs, 1))
    splits = min(cdiv(target.sms, programs), steps // t["min_steps"], by_memory, t["max_splits"])
    return splits if splits >= t["min_splits"] else 1


def split_bytes(problem: ConvProblem, splits: int) -> int:
    """The fp32 workspace of `splits` slices (none for one)."""
    return 4 * splits * problem.outputs if splits > 1 else 0
