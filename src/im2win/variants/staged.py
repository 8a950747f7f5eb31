"""NCHW inputs convolved from channels-last copies, a chunk of images at a time.

The channels-last kernels (TMA tiles above all) beat the NCHW paths where a convolution
does enough work per input byte to pay for the copy (notes/tuning.md, staging NCHW
inputs). cuDNN's fastest NCHW engines take workspaces of about input plus output; here one
buffer of at most `chunk_bytes` (or one image) is reused and the output is written in
place, in NCHW. Each chunk's convolution is a sub-problem with a choice of its own, and
runs the chunk's part of a fused epilogue.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..epilogue import Epilogue
from ..kernels import MAX_COPY_IMAGES, copy_to_channels_last
from ..problem import ConvProblem
from .base import Choice, Into, Target, Variant


class StagedNchw(Variant):
    name = "staged-nchw"

    def supports(self, problem: ConvProblem, target: Target) -> bool:
        return not problem.channels_last and problem.c * problem.h * problem.w > 0

    def heuristic(self, problem: ConvProblem, target: Target) -> dict | None:
        """Staging pays at `min_flop_per_byte` flops per input byte copied or more, from
        `min_batch` images, for Cg of 16 or more (not depthwise) and at most `max_widening`
        output channels per input channel (a wider output, written in NCHW from channels-last
        tiles, lost and broke the memory target)."""
        t = target.table["staged-nchw"]
        if problem.cg < 16 or problem.depthwise or problem.n < t["min_batch"]:
            return None
        if not (problem.epilogue.empty or target.interpreted):
            return None  # fused, the pointer kernel on NCHW was not measured against this
        if problem.k > t["max_widening"] * problem.c:
            return None
        flop = 2 * problem.k * problem.taps * problem.p * problem.q
        if flop < t["min_flop_per_byte"] * problem.h * problem.w * problem.itemsize:
            return None
        return {}

    def takes_epilogue(self, epilogue: Epilogue) -> bool:
        return True  # each chunk's kernel runs it, on its slice of the residual

    def check_config(self, config: dict) -> dict:
        images = config.get("IMAGES")
        whole = isinstance(images, int) and not isinstance(images, bool) and images >= 1
        if set(config) - {"VARIANT", "IMAGES"} or not whole:
            raise ValueError(f"config of 'staged-nchw' takes IMAGES, an int >= 1, got {config}")
        return {"IMAGES": images}

    def finalize(self, problem: ConvProblem, config: dict, target: Target) -> dict:
        """IMAGES a chunk: as many as fit `chunk_bytes`, at least one."""
        if "IMAGES" in config:
            return {"IMAGES": min(config["IMAGES"], problem.n, MAX_COPY_IMAGES)}
        chunk = target.table["staged-nchw"]["chunk_bytes"] // self._image_bytes(problem)
        return {"IMAGES": max(1, min(problem.n, MAX_COPY_IMAGES, chunk))}

    def sub_problems(self, problem: ConvProblem, config: Mapping) -> tuple[ConvProblem, ...]:
        """A full chunk, and a last, shorter one where the batch does not divide."""
        images, rest = config["IMAGES"], problem.n % config["IMAGES"]
        return (problem.staged(images),) + ((problem.staged(rest),) if rest else ())

    def workspace_bytes(self, problem: ConvProblem, config: Mapping) -> int:
        return config["IMAGES"] * self._image_bytes(problem)

    @staticmethod
    def _image_bytes(problem: ConvProblem) -> int:
        return problem.c * problem.h * problem.w * problem.itemsize

    def build(self, problem: ConvProblem, choice: Choice, target: Target) -> Into:
        images, n = choice.config["IMAGES"], problem.n
        chunk_choices = dict(zip((sub.n for sub in self.sub_problems(problem, choice.config)),
                                 choice.inner, strict=True))  # fmt: skip
        starts = range(0, n, images)
        intos = []  # one a chunk: each output slice starts at its own offset (and alignment)
        for i in starts:
            sub = problem.staged(min(images, n - i))
            intos.append(chunk_choices[sub.n].variant.build(sub, chunk_choices[sub.n], target))
        copy_slots = [{} for _ in starts]  # the copy kernel, once launched, per chunk
        shape = (images, problem.c, problem.h, problem.w)

        def into(x, weight, bias, y, scale=None, residual=None):
            staged = torch.empty(shape, dtype=x.dtype, device=x.device,
                                 memory_format=torch.channels_last)  # fmt: skip
            # Re-laid once: each chunk's kernel then reads the filter in place (kernel_filter).
            weight = weight.contiguous(memory_format=torch.channels_last)
            for i, into_chunk, slot in zip(starts, intos, copy_slots, strict=True):
                x_chunk = staged[: min(images, n - i)]
                copy_to_channels_last(x[i : i + images], x_chunk,
                                      interpreted=target.interpreted, slot=slot)  # fmt: skip
                rest = None if residual is None else residual[i : i + images]
                into_chunk(x_chunk, weight, bias, y[i : i + images], scale, rest)
            return y

        return into


STAGED_NCHW = StagedNchw()
