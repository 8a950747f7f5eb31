"""A project kernel compiled for Hopper (sm_90a) on any machine, and what its SASS holds.

Triton compiles to PTX without a GPU; its own ptxas and cuobjdump give the registers and
the SASS. A GPU call specializes its arguments (integers equal to 1 become constants,
pointers and integers divisible by 16 are marked so), and the layouts Triton picks follow:
`build` takes those facts as arguments (`constexprs`, `divisible`), so a build matches the
call it stands for.

    from sass import build
    b = build("conv2d_dw", "_conv2d_fwd_dw_rows_kernel", "bf16", {...}, divisible=[...])
    b.registers, b.opcodes["BAR"], b.ttgir
"""

import collections
import importlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


@dataclass
class Build:
    registers: int  # a thread
    shared: int  # bytes a block
    opcodes: collections.Counter  # SASS instructions by opcode (static counts)
    sass: str
    ttgir: str

    def count(self, *opcodes: str) -> int:
        return sum(self.opcodes[op] for op in opcodes)


def build(module: str, kernel: str, dtype: str, constexprs: dict, *,
          pointers: dict | None = None, divisible=(), num_warps: int = 4,
          num_stages: int = 3) -> Build:  # fmt: skip
    """`im2win.kernels.<module>.<kernel>` with every `*_ptr` of `dtype` (or as `pointers`
    says, which also types each `*_desc`), the named `constexprs`, the `divisible`
    arguments known 16-divisible and the rest plain 32-bit integers."""
    fn = getattr(importlib.import_module("im2win.kernels." + module), kernel)
    while not isinstance(fn, triton.runtime.jit.JITFunction):  # through @triton.heuristics
        fn = fn.fn
    pointers = pointers or {}
    signature, values, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name], values[(i,)] = "constexpr", constexprs[name]
        elif name.endswith("_desc"):
            signature[name] = pointers[name]
        elif name.endswith("_ptr"):
            signature[name] = "*" + pointers.get(name, dtype)
        else:
            signature[name] = "i32"
        if name in divisible:
            attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn, signature, constexprs=values, attrs=attrs)
    options = dict(num_warps=num_warps, num_stages=num_stages)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.TemporaryDirectory() as tmp:
        ptx, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        done = subprocess.run([os.path.join(BIN, "ptxas"), "-arch=sm_90a", "-v", ptx, "-o",
                               cubin], capture_output=True, text=True, check=True)  # fmt: skip
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", cubin],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    opcodes = collections.Counter()
    for line in sass.splitlines():
        found = re.match(r"\s+/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_]+)", line)
        if found:
            opcodes[found.group(2)] += 1
    registers = int(re.search(r"Used (\d+) registers", done.stderr).group(1))
    return Build(registers, compiled.metadata.shared, opcodes, sass, compiled.asm["ttgir"])
