"""Where the TMA kernel's raster tiles keep their A operand: compiled for sm_90 on a CPU.

As `../gluon/a_operand_path.py`, for the kernel with RASTER (one 2-D box a tap) and, beside
it, a 8 x 16 window tile: bf16, BLOCK_K 64, the raster rule's 8 warps over 128 x 128 and
4 warps over 128 x 64. Run from the repository root:

    PYTHONPATH=src python results/h100-issue4/exploration/raster/a_operand_path.py
"""

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from im2win.kernels.conv2d_fwd_tma import _conv2d_fwd_tma_kernel

fn = _conv2d_fwd_tma_kernel
while not isinstance(fn, triton.runtime.jit.JITFunction):  # through @triton.heuristics
    fn = fn.fn

for raster, (block_p, block_q), block_n, warps, stages in (
    (False, (8, 16), 128, 4, 4), (True, (1, 128), 128, 8, 3), (True, (1, 128), 64, 4, 4)
):
    x_box = f"[{block_q},64]" if raster else f"[1,{block_p},{block_q},64]"
    sig = {name: "i32" for name in fn.arg_names}
    sig.update(x_desc=f"tensordesc<bf16{x_box}>", filt_desc=f"tensordesc<bf16[{block_n},64]>",
               y_ptr="*bf16")
    const = dict(bias_ptr=None, HAS_BIAS=False, RASTER=raster, PRECISION="ieee", UPCAST=False,
                 BLOCK_P=block_p, BLOCK_Q=block_q, BLOCK_N=block_n, BLOCK_K=64)
    sig.update({k: "constexpr" for k in const})
    src = ASTSource(fn=fn, signature=sig,
                    constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    ttgir = triton.compile(src, target=GPUTarget("cuda", 90, 128),
                           options=dict(num_warps=warps, num_stages=stages)).asm["ttgir"]
    in_registers = "dot_op<{opIdx = 0" in ttgir
    tile = "raster" if raster else "window"
    print(f"{tile} {block_p} x {block_q} x {block_n}, {warps} warps: A "
          f"{'in registers' if in_registers else 'from shared memory'}"
          f" (local_load {ttgir.count('ttg.local_load')}, convert_layout {ttgir.count('convert_layout')},"
          f" warp_group_dot {ttgir.count('warp_group_dot ')})")
