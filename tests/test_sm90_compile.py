"""Kernels compile for Hopper (sm_90a) on any machine: Triton's interpreter runs Python, so
it accepts code the GPU compiler rejects (an `if` on a constexpr whose branches return
tensors of other shapes made the depthwise channels-last kernel fail on every GPU while the
CPU suite passed). Here: the depthwise kernels and the weight-gradient kernels (the TMA
one with the tiles of its rule), each within sm90's shared memory (a tile past it passed
the CPU suite and failed on the GPU). Each compile runs in a subprocess without the
interpreter."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from helpers import HOPPER
from im2win.kernels.conv2d_fwd_strips import strip_plan, strips_shared_bytes
from im2win.kernels.conv2d_winograd import TRANSFORM_CHANNELS, TRANSFORM_ROWS
from im2win.variants.strips import SHARED_LIMIT

COMPILE = textwrap.dedent("""
    import json, os, re, subprocess, sys, tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import importlib

    SHARED_LIMIT = 232448  # bytes of shared memory a block may have on sm90
    module, kernel, dtype = sys.argv[1], sys.argv[2], sys.argv[3]
    constexprs, pointers = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    options, checks = json.loads(sys.argv[6]), json.loads(sys.argv[7])
    fn = getattr(importlib.import_module("im2win.kernels." + module), kernel)
    while not isinstance(fn, triton.runtime.jit.JITFunction):  # through @triton.heuristics
        fn = fn.fn
    signature, values = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name], values[(i,)] = "constexpr", constexprs[name]
        elif name.endswith("_desc"):  # a TMA descriptor: its type given whole
            signature[name] = pointers[name]
        else:
            pointer = "*" + pointers.get(name, dtype)
            signature[name] = pointer if name.endswith("_ptr") else "i32"
    # arguments a GPU call would find 16-divisible (aligned pointers, strides), as it
    # specializes them: the layouts Triton picks follow
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if name in checks.get("divisible", ())}
    source = ASTSource(fn, signature, constexprs=values, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    # What a launch on an H100 or H200 would refuse (OutOfResources), caught here.
    assert compiled.metadata.shared <= SHARED_LIMIT, f"shared memory {compiled.metadata.shared}"
    if "max_barriers" in checks:
        found = compiled.asm["ptx"].count("bar.sync")
        assert found <= checks["max_barriers"], f"{found} barriers, at most {checks}"
    if checks.get("no_spills"):  # ptxas's report: every value kept in registers
        ptxas = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas")
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "k.ptx"), "w") as f:
                f.write(compiled.asm["ptx"])
            report = subprocess.run([ptxas, "-arch=sm_90a", "-v", f.name, "-o", f.name + ".o"],
                                    capture_output=True, text=True, check=True).stderr
        spilled = re.findall(r"([0-9]+) bytes spill (?:stores|loads)", report)
        assert not any(int(b) for b in spilled), report
""")

EPILOGUE = dict(HAS_BIAS=True, HAS_SCALE=True, ACTIVATION="silu", RESIDUAL="before")
PLAIN = dict(HAS_BIAS=False, HAS_SCALE=False, ACTIVATION="", RESIDUAL="")
KERNELS = {
    "dw-rows-unrolled": ("conv2d_dw", "_conv2d_fwd_dw_rows_kernel",
                         dict(R=3, S=3, BLOCK_Q=16, BLOCK_C=64, UNROLL_ROWS=True)),
    "dw-rows-rolled": ("conv2d_dw", "_conv2d_fwd_dw_rows_kernel",
                       dict(R=7, S=7, BLOCK_Q=8, BLOCK_C=128, UNROLL_ROWS=False)),
    "dw-flat-nchw": ("conv2d_dw", "_conv2d_fwd_dw_kernel", dict(BLOCK_M=128, BLOCK_C=16)),
}  # fmt: skip
WGRAD_POINTERS = {"part_ptr": "fp32", "bias_part_ptr": "fp32"}  # fp32 partial sums


def compile_for_sm90(module: str, kernel: str, dtype: str, constexprs: dict,
                     pointers: dict | None = None, options: dict | None = None,
                     checks: dict | None = None) -> None:  # fmt: skip
    """Compile `kernel` with every pointer of `dtype` (but those `pointers` names, which
    also give each descriptor's type), 4 warps unless `options` say otherwise. `checks`:
    `divisible`, the arguments known 16-divisible; `max_barriers`, how many block barriers
    its PTX may hold; `no_spills`, that ptxas keeps every value in registers."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    args = [module, kernel, dtype, json.dumps(constexprs), json.dumps(pointers or {}),
            json.dumps(options or dict(num_warps=4)), json.dumps(checks or {})]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", COMPILE, *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("epilogue", [EPILOGUE, PLAIN], ids=["epilogue", "plain"])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("case", KERNELS)
def test_depthwise_kernels_compile_for_sm90(case, dtype, epilogue):
    module, kernel, tiles = KERNELS[case]
    compile_for_sm90(module, kernel, dtype, {**tiles, **epilogue})


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("case", ["dw-rows-unrolled", "dw-rows-rolled"])
def test_depthwise_row_kernel_needs_no_barrier(case, dtype):
    """On a dense channels-last call with a taps-major weight (unit strides along the
    channels, as a GPU call specializes them) the taps' weights load in the input tile's
    layout: no exchange through shared memory, so no barrier in the taps' loop (a
    [BLOCK_C] weight vector took another layout: two barriers a tap on 128-channel tiles)."""
    module, kernel, tiles = KERNELS[case]
    units = dict(MULT=1, stride_xc=1, stride_wk=1, stride_yk=1)
    divisible = ["x_ptr", "w_ptr", "y_ptr", "K", "stride_xn", "stride_xh", "stride_xw",
                 "stride_wr", "stride_ws", "stride_yn", "stride_yp", "stride_yq"]  # fmt: skip
    checks = dict(divisible=divisible, max_barriers=0)
    compile_for_sm90(module, kernel, dtype, {**tiles, **PLAIN, **units}, checks=checks)


@pytest.mark.parametrize("dtype, precision", [("bf16", "ieee"), ("fp32", "tf32"), ("fp32", "ieee")])
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_weight_gradient_kernel_compiles_for_sm90(dtype, precision, channels_last):
    """The gathers' kernel with its rule's tile for the element size."""
    tile = dict(HOPPER.table["wgrad"]["tiles"]["16bit" if dtype == "bf16" else "32bit"])
    options = dict(num_warps=tile.pop("num_warps"), num_stages=tile.pop("num_stages"))
    # The bias gradient in the same pass on channels-last inputs, not on NCHW ones.
    constexprs = dict(tile, UPCAST=False, CHANNELS_LAST=channels_last, PRECISION=precision,
                      HAS_BIAS=channels_last)  # fmt: skip
    compile_for_sm90("conv2d_wgrad", "_conv2d_wgrad_kernel", dtype, constexprs, WGRAD_POINTERS,
                     options)  # fmt: skip


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("taps", [16, 64])
def test_depthwise_weight_gradient_kernel_compiles_for_sm90(dtype, taps):
    """The depthwise kernel with its rule's config, for 3x3 and 7x7 filters (taps rounded
    up to a power of two)."""
    rule = HOPPER.table["wgrad"]["depthwise"]
    block_m = max(1, rule["ELEMENTS"] // (taps * rule["BLOCK_C"]))  # as the launcher sets it
    constexprs = dict(HAS_BIAS=True, BLOCK_M=block_m, BLOCK_C=rule["BLOCK_C"], TAPS=taps)
    compile_for_sm90("conv2d_wgrad", "_conv2d_wgrad_dw_kernel", dtype, constexprs,
                     WGRAD_POINTERS, dict(num_warps=rule["num_warps"]))  # fmt: skip


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("rows", [None, 1], ids=["rows", "one-row"])
def test_weight_gradient_finish_kernel_compiles_for_sm90(dtype, rows):
    """The kernel summing the slices into dW, as a GEMM's gradient calls it and as the
    depthwise one does (one row: an int argument of 1 is a constant when launched)."""
    constexprs = dict(TAPS_FIRST=True, HAS_BIAS=True, BLOCK=1024)
    constexprs.update({} if rows is None else dict(ROWS=rows))
    compile_for_sm90("conv2d_wgrad", "_wgrad_finish_kernel", dtype, constexprs, WGRAD_POINTERS)


@pytest.mark.parametrize("dtype, precision", [("bf16", "ieee"), ("fp32", "tf32"), ("fp32", "ieee"),
                                              ("fp32", "tf32x3")])  # fmt: skip
@pytest.mark.parametrize("strided", [False, True], ids=["unit", "strided"])
def test_tma_weight_gradient_kernel_compiles_for_sm90(dtype, precision, strided):
    size_class = "16bit" if dtype == "bf16" else "32bit"
    tile = dict(HOPPER.table["wgrad"]["tma_tiles"][size_class])
    options = dict(num_warps=tile.pop("num_warps"), num_stages=tile.pop("num_stages"))
    bp, bq, bk, bc = tile["BLOCK_P"], tile["BLOCK_Q"], tile["BLOCK_K"], tile["BLOCK_C"]
    x_box = [1, bp, 1, bq, bc] if strided else [1, bp, bq, bc]
    descriptors = dict(x_desc=f"tensordesc<{dtype}{x_box}>",
                       dy_desc=f"tensordesc<{dtype}[1, {bp}, {bq}, {bk}]>")  # fmt: skip
    constexprs = dict(tile, STRIDED=strided, HAS_BIAS=True, UPCAST=False, PRECISION=precision)
    compile_for_sm90("conv2d_wgrad_tma", "_conv2d_wgrad_tma_kernel", dtype, constexprs,
                     {**WGRAD_POINTERS, **descriptors}, options)  # fmt: skip


@pytest.mark.parametrize("precision", ["ieee", "tf32x3", "tf32"])
def test_winograd_kernels_compile_for_sm90(precision):
    """The four Winograd kernels with the Hopper table's candidates (every one with 3xTF32
    GEMMs, the fp32-accurate mode it is for; the first in the other modes), within sm90's
    shared memory; the output transform with a whole epilogue."""
    table = HOPPER.table["winograd"]
    rows = table["candidates"] if precision == "tf32x3" else table["candidates"][:1]
    for row in rows:
        tile = dict(zip(table["candidates_keys"], row, strict=True))
        options = dict(num_warps=tile["num_warps"], num_stages=tile["num_stages"])
        gemm = dict(PRECISION=precision, BLOCK_T=tile["BLOCK_T"], BLOCK_K=tile["BLOCK_K"],
                    BLOCK_C=tile["BLOCK_C"])  # fmt: skip
        compile_for_sm90("conv2d_winograd", "_winograd_gemm_kernel", "fp32", gemm, {}, options)
    # The transforms' blocks, which hold 16 values an element: no spills.
    rows, channels, checks = TRANSFORM_ROWS, TRANSFORM_CHANNELS, dict(no_spills=True)
    split = dict(SPLIT=precision == "tf32x3", BLOCK_K=rows, BLOCK_C=channels)
    compile_for_sm90("conv2d_winograd", "_winograd_filter_kernel", "fp32", split, checks=checks)
    if precision == "ieee":  # the other transforms do not depend on it
        compile_for_sm90("conv2d_winograd", "_winograd_input_kernel", "fp32",
                         dict(BLOCK_T=rows, BLOCK_C=channels), checks=checks)  # fmt: skip
        output = dict(EPILOGUE, BLOCK_T=rows, BLOCK_K=channels)
        compile_for_sm90("conv2d_winograd", "_winograd_output_kernel", "fp32", output,
                         checks=checks)  # fmt: skip


COMPILE_STRIPS = textwrap.dedent("""
    import json, sys
    import torch, triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource
    from im2win.kernels import conv2d_fwd_strips as strips
    from im2win.variants.strips import SHARED_LIMIT
    dtype = getattr(torch, sys.argv[1])
    fn = strips._conv2d_fwd_strips_kernel
    for case in json.loads(sys.argv[2]):
        config, r, stride = case["config"], case["R"], case["stride"]
        constexprs = case["constexprs"]
        pad = r // 2
        spans = [max(rows.values()) for _, _, rows in strips.strip_plan(r, 1, stride, pad)]
        halo = triton.next_power_of_2(max(spans)) if max(spans) else 0
        ptr = {torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
        signature = {name: "i32" for name in fn.arg_names}
        for name, box in strips.strips_boxes(config, 128 // dtype.itemsize, halo).items():
            layout = gl.NVMMASharedLayout.get_default_for(box, strips.GL_DTYPES[dtype])
            signature[name] = f"tensordesc<{ptr}[{','.join(map(str, box))}],{layout!r}>"
        for name in ("bias_ptr", "scale_ptr", "res_ptr"):
            signature[name] = "*" + ptr
        values = dict(constexprs, R=r, S=r, DH=1, DW=1, SH=stride, SW=stride, PAD_TOP=pad,
                      PAD_LEFT=pad, HALO=halo, BLOCK_N=config["BLOCK_N"],
                      A_ROWS=config["A_ROWS"], B_STAGES=config["num_stages"],
                      CONSUMERS=config["CONSUMERS"], num_warps=config["num_warps"])
        signature.update({name: "constexpr" for name in values})
        indexed = {(fn.arg_names.index(k),): v for k, v in values.items()}
        source = GluonASTSource(fn, signature, indexed)
        options = dict(num_warps=config["num_warps"], maxnreg=strips.max_registers(config))
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
        assert compiled.metadata.shared <= SHARED_LIMIT, (case, compiled.metadata.shared)
        assert "dot_op<{opIdx = 0" not in compiled.asm["ttgir"], "A left shared memory"
""")


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_strips_kernel_compiles_for_sm90(dtype):
    """The Gluon strips kernel (which no interpreter runs) with every config of its table,
    3x3 and 1x1, 3x3 at stride 2, a whole epilogue and a plain one; within sm90's shared
    memory, A read by the wgmma from shared memory."""
    table = HOPPER.table["strips"]
    keys = table["candidates_keys"]
    configs = [dict(zip(keys, row, strict=True)) for row in table["candidates"]]
    configs += [{key: entry[key] for key in keys} for entry in table["tiles"]]
    whole = dict(HAS_BIAS=True, HAS_SCALE=True, ACTIVATION="silu", RESIDUAL="after")
    plain = dict(whole, HAS_SCALE=False, ACTIVATION="", RESIDUAL="")
    cases = []
    for config in map(dict, {tuple(c.items()) for c in configs}):
        # (R, stride): a 3x3 strip of 2 extra rows; 1x1; stride 2's two strips (1 extra row)
        for r, stride, constexprs in ((3, 1, whole), (1, 1, plain), (3, 2, plain)):
            rows = config["BLOCK_P"] + {(3, 1): 2, (1, 1): 0, (3, 2): 1}[r, stride]
            shared = strips_shared_bytes(config, 2 if dtype == "bfloat16" else 4)
            if config["A_ROWS"] // rows >= 2 and shared < SHARED_LIMIT:  # as the variant asks
                cases.append(dict(config=config, R=r, stride=stride, constexprs=constexprs))
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_STRIPS, dtype, json.dumps(cases)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


COMPILE_WGRAD_WS = textwrap.dedent("""
    import json, sys
    import torch, triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource
    from im2win.kernels import conv2d_wgrad_ws as ws
    from im2win.variants.strips import SHARED_LIMIT
    fn = ws._conv2d_wgrad_ws_kernel
    for case in json.loads(sys.argv[1]):
        config, dtype = case["config"], getattr(torch, case["dtype"])
        ptr = {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
        signature = {name: "i32" for name in fn.arg_names}
        for name, box in ws.wgrad_ws_boxes(config).items():
            layout = gl.NVMMASharedLayout.get_default_for(box, ws.GL_DTYPES[dtype])
            signature[name] = f"tensordesc<{ptr}[{','.join(map(str, box))}],{layout!r}>"
        signature["part_ptr"] = signature["bias_part_ptr"] = "*fp32"
        values = dict(HAS_BIAS=case["bias"], STAGES=config["num_stages"],
                      CONSUMERS=config["CONSUMERS"], num_warps=4)
        signature.update({name: "constexpr" for name in values})
        indexed = {(fn.arg_names.index(k),): v for k, v in values.items()}
        options = dict(num_warps=4, maxnreg=ws.wgrad_ws_registers(config))
        compiled = triton.compile(GluonASTSource(fn, signature, indexed),
                                  target=GPUTarget("cuda", 90, 32), options=options)
        shared = compiled.metadata.shared
        assert shared <= SHARED_LIMIT, (case, shared)
        # (without the bias the compiler drops the ones block the estimate counts)
        assert ws.wgrad_ws_shared_bytes(config, 2) <= shared or not case["bias"], (case, shared)
        assert "dot_op<{opIdx = 0" not in compiled.asm["ttgir"], "dY left shared memory"
        wgmma = [line for line in compiled.asm["ptx"].splitlines() if "wgmma.mma_async" in line]
        narrow = [line for line in wgmma if f"n{ws.BIAS_N.value}k16" in line]
        assert wgmma and bool(narrow) == case["bias"], (case, len(wgmma), len(narrow))
""")


def test_warp_specialized_weight_gradient_kernel_compiles_for_sm90():
    """The Gluon weight-gradient kernel (which no interpreter runs) with every candidate of
    its rule, with the bias sum, in bf16, one without it in fp16, and one with narrow channel
    blocks: within sm90's shared
    memory, both operands read by the wgmma from shared memory, the ones block's narrow
    wgmma there only with the bias."""
    rule = HOPPER.table["wgrad"]
    configs = [dict(zip(rule["ws_candidates_keys"], row, strict=True))
               for row in rule["ws_candidates"]]  # fmt: skip
    cases = [dict(config=config, dtype="bfloat16", bias=True) for config in configs]
    cases.append(dict(config=configs[0], dtype="float16", bias=False))
    # channel blocks cut to a Cg of 16 or 32 (`wgrad_tma_block_c`): rows of 32 and 64 bytes
    narrow = [dict(configs[2], BLOCK_C=c) for c in (16, 32)]
    cases += [dict(config=config, dtype="bfloat16", bias=True) for config in narrow]
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_WGRAD_WS, json.dumps(cases)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize(
    "rs, stride, padding, dilation",
    [((3, 3), (1, 1), (1, 1), (1, 1)), ((3, 3), (2, 2), (1, 1), (1, 1)),
     ((1, 1), (2, 2), (0, 0), (1, 1)), ((5, 3), (2, 1), (2, 0), (1, 1)),
     ((7, 7), (2, 2), (3, 3), (1, 1)), ((3, 3), (2, 2), (2, 1), (2, 3)),
     ((4, 2), (3, 2), (1, 2), (1, 1))],
)  # fmt: skip
def test_strip_plan_covers_every_tap(rs, stride, padding, dilation):
    """The strips kernel's addressing, emulated in float64 over one tile the size of the
    output: the parity view [N, H/sh, sh, W/sw, sw*C], each filter column's strips (one per
    row parity class, zero outside the image, as TMA fills), each tap a view from its row,
    in channel blocks (of 2 of the 3 channels at unit column stride: the last block's
    channel past C zero in both boxes, the filter's read as [K, R*S, C]); the sum is
    F.conv2d's."""
    torch.manual_seed(0)
    (r, s), (sh, sw), (pad_top, pad_left), (dh, dw) = rs, stride, padding, dilation
    n, c, h, w, k = 2, 3, 12 * sh, 5 * sw, 4
    block_k = 2 if sw == 1 else c  # ragged blocks only where the kernel takes them
    x = torch.randn(n, c, h, w, dtype=torch.float64)
    weight = torch.randn(k, c, r, s, dtype=torch.float64)
    ref = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation)
    p, q = ref.shape[-2:]
    x5 = x.permute(0, 2, 3, 1).reshape(n, h // sh, sh, w // sw, sw * c)
    # TMA's zero fill: the view padded past any box's reach
    margin = r * dh + s * dw
    padded = F.pad(x5, (0, block_k, margin, margin + q, 0, 0, margin, margin + p))
    filt = F.pad(weight.permute(0, 2, 3, 1).reshape(k, r * s, c), (0, block_k))

    def box(h0, parity, w0, c0, rows):
        h0, w0 = h0 + margin, w0 + margin
        return padded[:, h0 : h0 + rows, parity, w0 : w0 + q, c0 : c0 + block_k]

    plan = strip_plan(r, dh, sh, pad_top)
    assert sorted(tap for _, _, taps in plan for tap in taps) == list(range(r))
    acc = torch.zeros(n, p, q, k, dtype=torch.float64)
    for f in range(s):
        u = f * dw - pad_left  # the column offset: whole strides and a parity class
        for c0 in range(0, c, block_k):
            for parity, origin, taps in plan:
                strip = box(origin, parity, u // sw, u % sw * c + c0, p + max(taps.values()))
                for tap, row in taps.items():
                    block = filt[:, tap * s + f, c0 : c0 + block_k]  # the box at [0, tap*S+f, c0]
                    acc += torch.einsum("npqc,kc->npqk", strip[:, row : row + p], block)
    torch.testing.assert_close(acc.permute(0, 3, 1, 2), ref, rtol=1e-12, atol=1e-12)


def _box(t: torch.Tensor, start: list[int], size: list[int]) -> torch.Tensor:
    """The box of `t` from `start` of `size`, zeros where it leaves `t` (as TMA fills)."""
    out = t.new_zeros(size)
    src, dst = [], []
    for begin, length, extent in zip(start, size, t.shape, strict=True):
        lo, hi = max(begin, 0), min(begin + length, extent)
        if lo >= hi:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - begin, hi - begin))
    out[tuple(dst)] = t[tuple(src)]
    return out


@pytest.mark.parametrize(
    "xshape, wshape, kw, tile",
    [((2, 8, 6, 8), (10, 4, 3, 3), dict(stride=2, padding=1, groups=2), (2, 4, 4, 2, 2)),
     ((1, 4, 8, 5), (6, 4, 5, 3), dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2)),
      (4, 2, 4, 2, 1)),
     ((2, 6, 6, 4), (5, 6, 1, 1), dict(stride=2), (2, 2, 8, 2, 1)),
     ((1, 4, 7, 9), (3, 4, 3, 3), dict(padding=2, dilation=2), (4, 4, 2, 4, 2))],
)  # fmt: skip
def test_warp_specialized_weight_gradient_addressing(xshape, wshape, kw, tile):
    """The warp-specialized weight-gradient kernel's addressing, emulated in float64 with its
    own index helpers run as Python: every unit of the persistent loop, each patch's dY boxes
    (one a consumer) and X box of the parity view (zeros outside the tensors, as TMA fills),
    each consumer's rows of the partial (rows past its group's channels dropped) and its
    columns, the bias as dY^T @ ones in the first column's units; slices of 3 patches, the
    last short. Every partial element is written, and their sum is F.conv2d's gradient."""
    from im2win.kernels import conv2d_wgrad_ws as ws

    torch.manual_seed(0)
    bp, bq, bk, bc, consumers = tile
    (n, c, h, w), (k, cg, r, s) = xshape, wshape
    groups, kg = kw.get("groups", 1), k // kw.get("groups", 1)
    (sh, sw), (dh, dw) = _pair(kw.get("stride", 1)), _pair(kw.get("dilation", 1))
    pad_top, pad_left = _pair(kw.get("padding", 0))
    x = torch.randn(xshape, dtype=torch.float64)
    weight = torch.randn(wshape, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, weight, **kw)
    dy = torch.randn_like(y)
    y.backward(dy)
    p, q = y.shape[2:]
    x5 = x.permute(0, 2, 3, 1).reshape(n, h // sh, sh, w // sw, sw * c)  # the parity view
    dy4 = dy.permute(0, 2, 3, 1)  # [N, P, Q, K]
    patches = n * -(-p // bp) * -(-q // bq)
    per_slice = 3
    slices, k_tiles = -(-patches // per_slice), -(-kg // (consumers * bk))
    columns = r * s * (cg // bc)
    j = cg * r * s
    partial = torch.full((slices * groups * kg, j), float("nan"), dtype=torch.float64)
    bias_partial = torch.full((slices * groups * kg,), float("nan"), dtype=torch.float64)
    for unit in range(slices * groups * columns * k_tiles):
        slice_, group, column, k_tile = ws._unit_origin.fn(unit, k_tiles, columns, groups)
        tap, c0 = ws._column_origin.fn(column, cg, bc)
        rows, ph, cols, pw = ws._tap_offsets.fn(tap, s, pad_top, pad_left, dh, dw, sh, sw)
        k0 = group * kg + k_tile * consumers * bk
        t0 = slice_ * per_slice
        accs = torch.zeros(consumers, bk, bc, dtype=torch.float64)
        sums = torch.zeros(consumers, bk, dtype=torch.float64)  # dY^T @ ones, one column
        for t in range(t0, t0 + min(per_slice, patches - t0)):
            image, p0, q0 = ws._patch_origin.fn(t, p, q, bp, bq)
            xs = _box(x5, [image, p0 + rows, ph, q0 + cols, pw * c + group * cg + c0],
                      [1, bp, 1, bq, bc]).reshape(bp * bq, bc)  # fmt: skip
            for i in range(consumers):
                dys = _box(dy4, [image, p0, q0, k0 + i * bk], [1, bp, bq, bk]).reshape(bp * bq, bk)
                accs[i] += dys.T @ xs
                sums[i] += dys.sum(0)
        row0 = (slice_ * groups + group) * kg
        for i in range(consumers):
            ks = torch.arange(bk) + (k_tile * consumers + i) * bk
            keep = ks < kg
            partial[row0 + ks[keep], tap * cg + c0 : tap * cg + c0 + bc] = accs[i][keep]
            if column == 0:
                bias_partial[row0 + ks[keep]] = sums[i][keep]
    assert not partial.isnan().any() and not bias_partial.isnan().any()
    # the finishing kernel's order: slices summed, columns (tap, c) to dW's (c, r, s)
    got = partial.view(slices, k, r * s, cg).sum(0).permute(0, 2, 1).reshape(wshape)
    torch.testing.assert_close(got, weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bias_partial.view(slices, k).sum(0), dy.sum((0, 2, 3)),
                               rtol=1e-12, atol=1e-12)  # fmt: skip


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)
