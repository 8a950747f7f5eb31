"""Registers and SASS of the depthwise row-tile kernel, compiled for sm_90a on the CPU
(Triton to PTX, then Triton's own ptxas and cuobjdump): bf16 and fp32, filter rows unrolled
or not; per build its registers a thread, its SASS instructions, global loads, shared loads
and block barriers (static counts: a rolled build runs its loop body R times).

The arguments are specialized as on a GPU call of a dense channels-last layer with the
weight taps-major, as the launcher passes it (pointers and strides divisible by 16, unit
strides and the channel multiplier 1 folded in).

    PYTHONPATH=src python3 notes/depthwise/registers.py
"""

import collections
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
UNITS = ("MULT", "stride_xc", "stride_yk", "stride_b", "stride_s", "stride_rk", "stride_wk")
NOT_ALIGNED = ("stride_h", "stride_w")
BIN = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin")


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


def assemble(code: str) -> tuple[int, collections.Counter]:
    """Registers a thread, and the SASS instructions by opcode."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(code)
        done = subprocess.run([glob.glob(BIN + "/ptxas")[0], "-arch=sm_90a", "-v", path,
                               "-o", path + ".cubin"], capture_output=True, text=True,
                              check=True)  # fmt: skip
        sass = subprocess.run([BIN + "/cuobjdump", "-sass", path + ".cubin"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    opcodes = collections.Counter()
    for line in sass.splitlines():
        found = re.match(r"\s+/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_]+)", line)
        if found:
            opcodes[found.group(2)] += 1
    return int(re.search(r"Used (\d+) registers", done.stderr).group(1)), opcodes


if __name__ == "__main__":
    print("dtype  tile       taps  unrolled  registers  instructions  LDG  LDS  BAR")
    for dtype in ("bf16", "fp32"):
        for block_q, block_c, taps in ((32, 32, 3), (16, 128, 3), (8, 128, 7), (16, 128, 7)):
            for unroll in (True, False):
                regs, ops = assemble(ptx(dtype, block_q, block_c, taps, unroll))
                print(
                    f"{dtype:5s}  {block_q:3d} x {block_c:3d}  {taps}x{taps}   {unroll!s:8s}"
                    f"  {regs:9d}  {sum(ops.values()):12d}  {ops['LDG']:3d}  {ops['LDS']:3d}"
                    f"  {ops['BAR']:3d}"
                )
