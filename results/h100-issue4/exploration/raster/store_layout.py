"""Where the TMA kernel's epilogue puts its lanes: compiled for sm_90 on a CPU (no GPU), raster
and window tiles, output NCHW (stride_yq == 1) or NHWC (stride_yk == 1), bf16, 8 warps.
Prints the layout of the final tt.store (compiled without the divisibility hints of a real
launch, which may widen the NHWC stores). Run from the repository root:

    PYTHONPATH=src python results/h100-issue4/exploration/raster/store_layout.py
"""
import re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from im2win.kernels.conv2d_fwd_tma import _conv2d_fwd_tma_kernel
fn = _conv2d_fwd_tma_kernel
while not isinstance(fn, triton.runtime.jit.JITFunction):
    fn = fn.fn
for raster in (True, False):
  for out in ("nchw", "nhwc"):
    block_p, block_q = (1, 128) if raster else (8, 16)
    x_box = "[128,64]" if raster else f"[1,{block_p},{block_q},64]"
    sig = {name: "i32" for name in fn.arg_names}
    sig.update(x_desc=f"tensordesc<bf16{x_box}>", filt_desc="tensordesc<bf16[128,64]>", y_ptr="*bf16")
    const = dict(bias_ptr=None, HAS_BIAS=False, RASTER=raster, STRIDED=False, PRECISION="ieee", UPCAST=False,
                 BLOCK_P=block_p, BLOCK_Q=block_q, BLOCK_N=128, BLOCK_K=64)
    const["stride_yq" if out == "nchw" else "stride_yk"] = 1
    sig.update({k: "constexpr" for k in const})
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    ttgir = triton.compile(src, target=GPUTarget("cuda", 90, 128), options=dict(num_warps=8, num_stages=3)).asm["ttgir"]
    
    st = [l for l in ttgir.splitlines() if "tt.store" in l]
    print(raster, out, st[-1].strip()[-200:])
    for name in re.findall(r"#blocked\d*", st[-1]):
        for l in ttgir.splitlines():
            if l.startswith(name + " ="):
                print("   ", l[:200])
