"""Does Triton 3.6 warp-specialize a Hopper loop by itself? The TMA weight-gradient kernel
compiled for sm_90a on any machine (no GPU) as it is and with its loop written
`tl.range(..., warp_specialize=True)`, bf16, the rule's tile (16 x 8 pixels, 128 x 64, 8
warps, 3 stages), and the counts of the instructions a warp-specialized kernel would have
(`setmaxnreg`: producer and consumer warpgroups' register budgets).

    PYTHONPATH=src python3 notes/backward/ws_probe.py   (from the repository root)
"""

import importlib
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

COUNTS = ("setmaxnreg", "cp.async.bulk.tensor", "wgmma.mma_async", "mbarrier.try_wait",
          "bar.sync")  # fmt: skip
TILE = dict(BLOCK_P=16, BLOCK_Q=8, BLOCK_K=128, BLOCK_C=64)


def counts(module: str) -> dict:
    fn = importlib.import_module(f"im2win.kernels.{module}")._conv2d_wgrad_tma_kernel
    const = dict(STRIDED=False, HAS_BIAS=False, PRECISION="ieee", UPCAST=False, **TILE)
    boxes = dict(x_desc=f"tensordesc<bf16[1, 16, 8, {TILE['BLOCK_C']}]>",
                 dy_desc=f"tensordesc<bf16[1, 16, 8, {TILE['BLOCK_K']}]>")  # fmt: skip
    signature, values = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in const:
            signature[name], values[(i,)] = "constexpr", const[name]
        else:
            signature[name] = boxes.get(name, "*fp32" if name.endswith("_ptr") else "i32")
    compiled = triton.compile(ASTSource(fn, signature, constexprs=values),
                              target=GPUTarget("cuda", 90, 32),
                              options=dict(num_warps=8, num_stages=3))  # fmt: skip
    ptx = compiled.asm["ptx"]
    return {pattern: ptx.count(pattern) for pattern in COUNTS}


def main():
    kernels = Path("src/im2win/kernels")
    probe = kernels / "conv2d_wgrad_tma_ws_probe.py"  # a module beside the kernel's
    source = (kernels / "conv2d_wgrad_tma.py").read_text()
    loop = "for t in range(t_start, t_end):"
    assert loop in source
    specialized = "for t in tl.range(t_start, t_end, warp_specialize=True):"
    probe.write_text(source.replace(loop, specialized))
    try:
        print("as it is:", counts("conv2d_wgrad_tma"))
        print("warp_specialize=True:", counts("conv2d_wgrad_tma_ws_probe"))
    finally:
        probe.unlink()


if __name__ == "__main__":
    main()
