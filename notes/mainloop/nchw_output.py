"""The strips kernel writing an NCHW output (its masked-store path), GPU only: the staged
NCHW path ran it so and was wrong in 16-bit on the H200 (results/h200-add04cf/README.md),
right in tf32. Which part is at fault, not yet known: this runs the launcher straight
into an NCHW output, and into a channels-last one not a TMA store can write (a view with a
padded channel stride), from a channels-last input, each config of the table, and prints
each relative error against F.conv2d in float64.

    PYTHONPATH=src python3 notes/mainloop/nchw_output.py
"""

import itertools

import torch
import torch.nn.functional as F

from im2win.kernels.conv2d_fwd_strips import strips_launcher
from im2win.params import conv_params
from im2win.problem import ConvProblem, MathMode
from im2win.variants.base import target_of
from im2win.variants.strips import STRIPS

CASES = {  # name: input shape, weight shape, padding
    "conv12": ((128, 512, 7, 7), (512, 512, 3, 3), 0),
    "conv10": ((128, 128, 28, 28), (128, 128, 3, 3), 0),
    "odd": ((3, 64, 13, 11), (40, 64, 3, 3), 1),
}
TIERS = {"bf16": (torch.bfloat16, None), "fp16": (torch.float16, None),
         "tf32": (torch.float32, "tf32")}  # fmt: skip


def outputs(shape, dtype):
    """An NCHW output; a channels-last one whose pixels lie K+8 apart (masked stores)."""
    n, k, p, q = shape
    padded = torch.empty(n, p, q, k + 8, dtype=dtype, device="cuda")[..., :k]
    return {"nchw": torch.empty(shape, dtype=dtype, device="cuda"),
            "cl-padded": padded.permute(0, 3, 1, 2)}  # fmt: skip


def main():
    target = target_of(torch.device("cuda"), False)
    table = target.table["strips"]
    configs = [dict(zip(table["candidates_keys"], row, strict=True)) for row in table["candidates"]]
    for (name, (xshape, wshape, pad)), tier in itertools.product(CASES.items(), TIERS):
        dtype, precision = TIERS[tier]
        torch.manual_seed(0)
        x = torch.randn(xshape, device="cuda").to(dtype=dtype, memory_format=torch.channels_last)
        w = torch.randn(wshape, device="cuda").to(dtype=dtype, memory_format=torch.channels_last)
        ref = F.conv2d(x.double(), w.double(), padding=pad)
        params = conv_params(stride=1, padding=pad, dilation=1, groups=1,
                             kernel_size=tuple(wshape[2:]))  # fmt: skip
        problem = ConvProblem.of(x, w, params, MathMode.of(dtype, precision))
        errors = []
        for i, config in enumerate(configs):
            try:
                STRIPS.finalize(problem, config, target)
            except ValueError:
                continue
            launch = strips_launcher(problem, config, target.sms)
            for kind, y in outputs(ref.shape, dtype).items():
                y.fill_(float("nan"))
                launch(x, w, None, y)
                err = ((y.double() - ref).norm() / ref.norm()).item()
                errors.append(f"{i}:{kind}:{err:.2g}")
        print(f"{name:7s} {tier}: {' '.join(errors)}", flush=True)


if __name__ == "__main__":
    main()
