"""Host time of the strips and TMA launchers' Python, on any machine: a launch whose slot
holds a runner (a stand-in that does nothing), so what is timed is the launcher's own work
(the filter view, the descriptors, the arguments), with the descriptors a relaunch makes
(`kernels/launch.py`'s `Descriptor`) and with checked `TensorDescriptor`s as before.

    python3 notes/mainloop/launcher_host_cpu.py
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from helpers import HOPPER  # noqa: E402
from im2win.kernels import conv2d_fwd_strips, conv2d_fwd_tma, launch  # noqa: E402
from im2win.params import conv_params  # noqa: E402
from im2win.problem import ConvProblem, MathMode  # noqa: E402
from im2win.variants.strips import STRIPS  # noqa: E402
from im2win.variants.tma import TMA_WINDOW  # noqa: E402

CALLS = 20000


def launcher(name: str, problem: ConvProblem, slot: dict):
    """The kernel's launcher with the config the library picks, launching through `slot`."""
    variant = STRIPS if name == "strips" else TMA_WINDOW
    config = variant.finalize(problem, variant.heuristic(problem, HOPPER), HOPPER)
    if name == "strips":
        return conv2d_fwd_strips.strips_launcher(problem, config, HOPPER.sms, slot=slot)
    return conv2d_fwd_tma.tma_launcher(problem, config, raster=False, interpreted=False,
                                       slot=slot)  # fmt: skip


def main():
    x = torch.randn(32, 256, 28, 28, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = torch.randn(256, 256, 3, 3, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    params = conv_params(stride=1, padding=1, dilation=1, groups=1, kernel_size=(3, 3))
    problem = ConvProblem.of(x, w, params, MathMode.BF16)
    y = torch.empty(problem.output_shape, dtype=x.dtype).to(memory_format=torch.channels_last)
    checked = launch.descriptor
    for name in ("strips", "tma"):
        for label, make in (("relaunch descriptors", checked),
                            ("checked descriptors", lambda m, _, *a: m(*a))):  # fmt: skip
            launch.descriptor = make
            for module in (conv2d_fwd_strips, conv2d_fwd_tma):
                module.descriptor = make
            into = launcher(name, problem, {"runner": lambda *a: None, "constexprs": ()})
            for _ in range(100):
                into(x, w, None, y)
            start = time.perf_counter()
            for _ in range(CALLS):
                into(x, w, None, y)
            print(f"{name:6s} {label:20s} {(time.perf_counter() - start) / CALLS * 1e6:5.1f} us")
    launch.descriptor = checked


if __name__ == "__main__":
    main()
