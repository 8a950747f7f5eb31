"""Registers and SASS of the depthwise row-tile kernel, compiled for sm_90a on the CPU
(`notes/scripts/sass.py`): bf16 and fp32, filter rows unrolled or not; per build its
registers a thread, its SASS instructions, global loads, shared loads and block barriers
(static counts: a rolled build runs its loop body R times).

The arguments are specialized as on a GPU call of a dense channels-last layer with the
weight taps-major, as the launcher passes it (pointers and strides divisible by 16, unit
strides and the channel multiplier 1 folded in).

    PYTHONPATH=src python3 notes/depthwise/registers.py
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from sass import build  # noqa: E402

UNITS = ("MULT", "stride_xc", "stride_yk", "stride_wk")
DIVISIBLE = ("x_ptr", "w_ptr", "y_ptr", "K", "stride_xn", "stride_xh", "stride_xw",
             "stride_wr", "stride_ws", "stride_yn", "stride_yp", "stride_yq")  # fmt: skip


def rows_kernel(dtype: str, block_q: int, block_c: int, taps: int, unroll: bool):
    constexprs = dict(UNROLL_ROWS=unroll, R=taps, S=taps, HAS_BIAS=False, HAS_SCALE=False,
                      ACTIVATION="", RESIDUAL="", BLOCK_Q=block_q, BLOCK_C=block_c,
                      bias_ptr=None, scale_ptr=None, res_ptr=None,
                      **dict.fromkeys(UNITS, 1))  # fmt: skip
    return build("conv2d_dw", "_conv2d_fwd_dw_rows_kernel", dtype, constexprs,
                 divisible=DIVISIBLE)  # fmt: skip


if __name__ == "__main__":
    print("dtype  tile       taps  unrolled  registers  instructions  LDG  LDS  BAR")
    for dtype in ("bf16", "fp32"):
        for block_q, block_c, taps in ((32, 32, 3), (16, 128, 3), (8, 128, 7), (16, 128, 7)):
            for unroll in (True, False):
                b = rows_kernel(dtype, block_q, block_c, taps, unroll)
                print(
                    f"{dtype:5s}  {block_q:3d} x {block_c:3d}  {taps}x{taps}   {unroll!s:8s}"
                    f"  {b.registers:9d}  {b.count(*b.opcodes):12d}  {b.opcodes['LDG']:3d}"
                    f"  {b.opcodes['LDS']:3d}  {b.opcodes['BAR']:3d}"
                )
