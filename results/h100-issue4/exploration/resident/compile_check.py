"""Compile `conv_resident` for sm_90 on a CPU (no GPU): bf16 conv8 (9 filter blocks of 128 x
64, 3 stages) and tf32 conv8 at 64 output channels (18 blocks of 64 x 32); prints the
shared memory each takes and whether the wgmmas read A and B from shared memory.

    PYTHONPATH=src python3 results/h100-issue4/exploration/resident/compile_check.py
"""

import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conv_resident import conv_resident  # noqa: E402

CASES = {  # name: dtype, ptr type, BLOCK_M, BLOCK_N, BLOCK_K, NKB, STAGES, warps
    "conv8 bf16": (gl.bfloat16, "bf16", 128, 128, 64, 9, 3, 8),
    "conv8 tf32 (KG 64 a CTA)": (gl.float32, "fp32", 128, 64, 32, 18, 3, 4),
    "conv9 bf16": (gl.bfloat16, "bf16", 128, 64, 64, 9, 4, 4),
}
fn = conv_resident
for name, (dt, ptr, bm, bn, bk, nkb, stages, warps) in CASES.items():
    xl = gl.NVMMASharedLayout.get_default_for([bm, bk], dt)
    fl = gl.NVMMASharedLayout.get_default_for([bn, bk], dt)
    sig = {a: "i32" for a in fn.arg_names}
    sig.update(x_desc=f"tensordesc<{ptr}[{bm},{bk}],{xl!r}>",
               filt_desc=f"tensordesc<{ptr}[{bn},{bk}],{fl!r}>", y_ptr=f"*{ptr}")  # fmt: skip
    const = dict(bias_ptr=None, HAS_BIAS=False, NKB=nkb, STAGES=stages, num_warps=warps)
    sig.update({k: "constexpr" for k in const})
    src = GluonASTSource(fn=fn, signature=sig,
                         constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})  # fmt: skip
    k = triton.compile(src, target=GPUTarget("cuda", 90, 128), options=dict(num_warps=warps))
    ttgir = k.asm["ttgir"]
    print(f"{name}: shared {k.metadata.shared} bytes, wgmma {ttgir.count('warp_group_dot ')}, "
          f"A from registers: {'dot_op<{opIdx = 0' in ttgir}, "
          f"cubin {len(k.asm['cubin'])} bytes", flush=True)
