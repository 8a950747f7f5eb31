"""The weight-gradient kernel compiled for sm_90a on any machine (no GPU), with the argument
specializations a real launch gets (strides of 1 as constants, multiples of 16 marked), and
the counts of the instructions that say how its operands are loaded: the current kernel,
and the tap-tile version of f62e3f4 (reverted in bde7b3a), bf16 channels-last, 64 x 64
tiles, 32 pixels a step, 4 warps, 3 stages.

    PYTHONPATH=src python3 notes/backward/ptx_counts.py   (from the repository root)
"""

import importlib
import subprocess
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ONES = {"stride_xc", "stride_dk"}  # channels-last input and output gradient
DIVISIBLE = {
    "x_ptr", "dy_ptr", "part_ptr", "bias_part_ptr", "stride_xn", "stride_xh", "stride_xw",
    "stride_dn", "stride_dp", "stride_dq", "J", "KG", "CG", "H", "W",
}  # fmt: skip
COUNTS = ("wgmma.mma_async", "cp.async.cg", "ld.global.b16", "ld.global.v4", "st.shared")


def counts(module: str, extra: dict) -> dict:
    fn = importlib.import_module(f"im2win.kernels.{module}")._conv2d_wgrad_kernel
    const = dict(CHANNELS_LAST=True, HAS_BIAS=False, PRECISION="ieee", UPCAST=False,
                 BLOCK_M=32, BLOCK_K=64, BLOCK_J=64, **extra)  # fmt: skip
    signature, values, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in const or name in ONES:
            signature[name], values[(i,)] = "constexpr", const.get(name, 1)
            continue
        partial = name in ("part_ptr", "bias_part_ptr")
        signature[name] = ("*fp32" if partial else "*bf16") if name.endswith("_ptr") else "i32"
        if name in DIVISIBLE:
            attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn, signature, constexprs=values, attrs=attrs)
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                         options=dict(num_warps=4, num_stages=3)).asm["ptx"]  # fmt: skip
    return {pattern: ptx.count(pattern) for pattern in COUNTS}


def main():
    kernels = Path("src/im2win/kernels")
    old = kernels / "conv2d_wgrad_f62e3f4.py"  # a module beside the kernel's, for its imports
    source = "f62e3f4:src/im2win/kernels/conv2d_wgrad.py"
    old.write_text(subprocess.run(["git", "show", source], capture_output=True, text=True,
                                  check=True).stdout)  # fmt: skip
    try:
        print("gathers (current):", counts("conv2d_wgrad", {}))
        print("tap tiles (f62e3f4):", counts("conv2d_wgrad_f62e3f4", dict(TAP_TILES=True)))
    finally:
        old.unlink()


if __name__ == "__main__":
    main()
