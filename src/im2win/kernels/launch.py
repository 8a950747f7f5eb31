"""Launching a kernel again without Triton's per-call dispatch.

`kernel[grid](*args, **meta)` binds and specializes every argument on each call: on the
H100 hosts a launch with the 30-odd arguments of the convolution kernels cost 20 us against
11 us with one argument (notes/performance.md, v4). Given a `slot` (a dict its caller keeps
for one call signature), `launch` dispatches once and afterwards hands the arguments
straight to the compiled kernel's launcher.

A slot is valid only while every argument specializes as on its first call: the same
dtypes, the same int values, the same 16-byte alignment of every pointer, the same grid and
constexprs. A call plan (`plan.py`) is keyed on exactly the tensor signatures these come
from; fresh outputs and re-laid filters come from PyTorch's allocator, always aligned.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from triton.compiler import CompiledKernel
from triton.runtime.jit import JITFunction


def launch(kernel, grid: tuple[int, ...], args: tuple, meta: dict, slot: dict | None) -> None:
    """`kernel[grid](*args, **meta)`; with a `slot`, without Triton's dispatch after a first call.

    `args` are the kernel's leading, non-constexpr parameters, in order; `meta` the rest.
    """
    runner = None if slot is None else slot.get("runner")
    if runner is not None:
        runner(*args, *slot["constexprs"])
        return
    compiled = kernel[grid](*args, **meta)
    if slot is not None and isinstance(compiled, CompiledKernel):  # not under the interpreter
        fn = kernel
        while not isinstance(fn, JITFunction):  # through @triton.heuristics
            fn = fn.fn
        rest = range(len(args), len(fn.arg_names))
        if set(rest) <= set(fn.constexprs):  # the launcher takes, and ignores, constexprs
            slot["constexprs"] = (None,) * len(rest)
            slot["runner"] = compiled[(*grid, 1, 1)[:3]]  # the runner reads all three axes


class Descriptor(NamedTuple):
    """A host TMA descriptor as a compiled kernel's launcher reads it (base, shape, strides,
    padding; it encodes the box from what the kernel was compiled for)."""

    base: Any  # a torch.Tensor
    shape: list[int]
    strides: list[int]
    padding: str = "zero"


def descriptor(make, slot: dict | None, base, shape: list[int], strides: list[int], *rest):
    """`make(base, shape, strides, *rest)`, a `TensorDescriptor` (Triton's or Gluon's), for a
    launch Triton dispatches; a `Descriptor` of the same fields where `slot` has its runner:
    the checks of a TensorDescriptor's constructor, host time on every launch, hold for
    every call of a slot's signature once its first call passed them."""
    if slot is not None and "runner" in slot:
        return Descriptor(base, shape, strides)
    return make(base, shape, strides, *rest)
