"""The TMA kernel's main loop in SASS (sm_90a, compiled on the CPU: `notes/scripts/sass.py`):
where its wgmma reads A, and how many it lets run at once.

Patch tiles (a 4-D box [1, BLOCK_P, BLOCK_Q, BLOCK_K] reshaped to [BLOCK_M, BLOCK_K]) against
raster runs (a 2-D box, no reshape), in bf16, TF32 and 3xTF32 (`tl.dot`'s own, which the
kernel uses). Per build: HGMMA instructions, those reading A from registers, warpgroup
waits (`WARPGROUP.DEPBAR`), block barriers, registers.

    PYTHONPATH=src python3 notes/mainloop/tma_sass.py
"""

import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from sass import build  # noqa: E402

PLAIN = dict(HAS_BIAS=False, HAS_SCALE=False, ACTIVATION="", RESIDUAL="", bias_ptr=None,
             scale_ptr=None, res_ptr=None, STRIDED=False, UPCAST=False, SPLIT_K=1)  # fmt: skip
DIVISIBLE = ("y_ptr", "C", "CG", "KG", "stride_yn", "stride_yp", "stride_yq")
A_FROM_REGISTERS = re.compile(r"HGMMA\.\S+ R\d+, R\d+, gdesc")


def tma_kernel(dtype: str, precision: str, raster: bool):
    block_p, block_q, block_n = 8, 16, 64
    block_k = 64 if dtype == "bf16" else 32  # 128-byte rows
    box = f"[{block_p * block_q}, {block_k}]" if raster else (
        f"[1, {block_p}, {block_q}, {block_k}]")  # fmt: skip
    descriptors = dict(x_desc=f"tensordesc<{dtype}{box}>",
                       filt_desc=f"tensordesc<{dtype}[{block_n}, {block_k}]>")  # fmt: skip
    constexprs = dict(PLAIN, RASTER=raster, PRECISION=precision, BLOCK_P=block_p,
                      BLOCK_Q=block_q, BLOCK_N=block_n, BLOCK_K=block_k)  # fmt: skip
    return build("conv2d_fwd_tma", "_conv2d_fwd_tma_kernel", dtype, constexprs,
                 pointers=descriptors, divisible=DIVISIBLE, num_warps=4, num_stages=3)  # fmt: skip


if __name__ == "__main__":
    print("tiles   dtype  precision  registers  HGMMA  A in registers  DEPBAR  BAR")
    for raster in (False, True):
        for dtype, precision in (("bf16", "ieee"), ("fp32", "tf32"), ("fp32", "tf32x3")):
            b = tma_kernel(dtype, precision, raster)
            from_registers = len(A_FROM_REGISTERS.findall(b.sass))
            print(
                f"{'raster' if raster else 'patch':6s}  {dtype:5s}  {precision:9s}"
                f"  {b.registers:9d}  {b.opcodes['HGMMA']:5d}  {from_registers:14d}"
                f"  {b.sass.count('WARPGROUP.DEPBAR'):6d}  {b.opcodes['BAR']:3d}"
            )
