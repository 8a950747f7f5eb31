"""Where the library's Triton TMA kernel keeps its A operand: compiled for sm_90 on a CPU.

No GPU needed: Triton compiles to TTGIR and PTX for a given target without one. For each
window-tile shape the script compiles `_conv2d_fwd_tma_kernel` (bf16, 4 warps, 4 stages,
BLOCK_N 128, BLOCK_K 64) and reports whether the wgmma reads A from registers (a
`local_load` of the TMA tile, layout conversions, then `dot_op` operands) or straight from
shared memory. Run from the repository root:

    PYTHONPATH=src python results/h100-issue4/exploration/gluon/a_operand_path.py
"""

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from im2win.kernels.conv2d_fwd_tma import _conv2d_fwd_tma_kernel

fn = _conv2d_fwd_tma_kernel
while not isinstance(fn, triton.runtime.jit.JITFunction):  # through @triton.heuristics
    fn = fn.fn

for block_p, block_q in ((8, 16), (4, 32), (2, 64), (1, 128)):
    sig = {name: "i32" for name in fn.arg_names}
    sig.update(x_desc=f"tensordesc<bf16[1,{block_p},{block_q},64]>",
               filt_desc="tensordesc<bf16[128,64]>", y_ptr="*bf16")
    const = dict(bias_ptr=None, HAS_BIAS=False, PRECISION="ieee", UPCAST=False,
                 BLOCK_P=block_p, BLOCK_Q=block_q, BLOCK_N=128, BLOCK_K=64)
    sig.update({k: "constexpr" for k in const})
    src = ASTSource(fn=fn, signature=sig,
                    constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    ttgir = triton.compile(src, target=GPUTarget("cuda", 90, 128),
                           options=dict(num_warps=4, num_stages=4)).asm["ttgir"]
    in_registers = "dot_op<{opIdx = 0" in ttgir
    print(f"window tile {block_p:>2} x {block_q:<3}: A {'in registers' if in_registers else 'from shared memory'}"
          f" (local_load {ttgir.count('ttg.local_load')}, convert_layout {ttgir.count('convert_layout')},"
          f" warp_group_dot {ttgir.count('warp_group_dot ')})")
