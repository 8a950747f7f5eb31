"""Registers a thread of the depthwise row-tile kernel takes, compiled for sm_90a on the CPU
(Triton to PTX, then Triton's own ptxas -v): bf16 and fp32, filter rows unrolled or not.

The arguments are specialized as on a GPU call of a dense channels-last layer (pointers and
strides divisible by 16, unit strides and the channel multiplier 1 folded in).

    PYTHONPATH=src python3 notes/depthwise/registers.py
"""

import glob
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from im2win.kernels import conv2d_dw

CONSTEXPRS = ("UNROLL_ROWS", "R", "S", "HAS_BIAS", "HAS_SCALE", "ACTIVATION", "RESIDUAL",
              "BLOCK_Q", "BLOCK_C")  # fmt: skip
UNITS = ("MULT", "stride_xc", "stride_yk", "stride_b", "stride_s", "stride_rk")
NOT_ALIGNED = ("stride_h", "stride_w", "stride_wk", "stride_wr", "stride_ws")


def kernel_fn():
    fn = conv2d_dw._conv2d_fwd_dw_rows_kernel
    while not isinstance(fn, triton.runtime.jit.JITFunction):  # through @triton.heuristics
        fn = fn.fn
    return fn


def ptx(dtype: str, block_q: int, block_c: int, taps: int, unroll: bool) -> str:
    fn = kernel_fn()
    values = dict(UNROLL_ROWS=unroll, R=taps, S=taps, HAS_BIAS=False, HAS_SCALE=False,
                  ACTIVATION="", RESIDUAL="", BLOCK_Q=block_q, BLOCK_C=block_c)  # fmt: skip
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in ("bias_ptr", "scale_ptr", "res_ptr"):
            signature[name], constexprs[(i,)] = "constexpr", None
        elif name.endswith("_ptr"):
            signature[name], attrs[(i,)] = "*" + dtype, [["tt.divisibility", 16]]
        elif name in UNITS:
            signature[name], constexprs[(i,)] = "constexpr", 1
        elif name in CONSTEXPRS:
            signature[name], constexprs[(i,)] = "constexpr", values[name]
        else:
            signature[name] = "i32"
            if name == "K" or (name.startswith("stride") and name not in NOT_ALIGNED):
                attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn, signature, constexprs=constexprs, attrs=attrs)
    options = dict(num_warps=4)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]


def registers(code: str) -> int:
    ptxas = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(code)
        done = subprocess.run([ptxas[0], "-arch=sm_90a", "-v", path, "-o", path + ".cubin"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    return int(re.search(r"Used (\d+) registers", done.stderr).group(1))


if __name__ == "__main__":
    print("dtype  tile       taps  unrolled  rolled")
    for dtype in ("bf16", "fp32"):
        for block_q, block_c, taps in ((32, 32, 3), (16, 128, 3), (8, 128, 7), (16, 128, 7)):
            counts = [registers(ptx(dtype, block_q, block_c, taps, u)) for u in (True, False)]
            print(
                f"{dtype:5s}  {block_q:3d} x {block_c:3d}  {taps}x{taps}   "
                f"{counts[0]:8d}  {counts[1]:6d}"
            )
