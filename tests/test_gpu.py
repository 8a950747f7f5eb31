"""GPU checks (Hopper): the paper's 12 layers at batch 128 in every precision tier and layout,
plus small odd shapes; compared with float64 torch.nn.functional.conv2d on the GPU.

With IM2WIN_GPU_REPORT set, the paper-layer results are written as JSON lines (a header
object, then one object per case) to that file, or to gpu_suite.jsonl inside it when it is a
directory (as `make test-gpu` passes it).
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import triton

import im2win
from helpers import (
    GPU_TIER_TOL,
    assert_close,
    current_target,
    problem_of,
    reference,
    rel_err,
    torch_output_format,
)
from im2win import grad
from im2win.bench.env import git_commit
from im2win.bench.layers import PAPER_BATCH, PAPER_LAYERS
from im2win.params import conv_params
from im2win.variants.strips import STRIPS
from im2win.variants.tma import TMA_RASTER, TMA_WINDOW

pytestmark = pytest.mark.gpu

# tier: (dtype, precision)
TIERS = {
    "ieee": (torch.float32, "ieee"),
    "tf32x3": (torch.float32, "tf32x3"),
    "tf32": (torch.float32, "tf32"),
    "bf16": (torch.bfloat16, None),
    "fp16": (torch.float16, None),
}
LAYOUTS = ("nchw", "channels_last")
WINDOWS = ("materialized", "streamed")
# and the library's own choice (None), which alone may stage NCHW inputs (`staged-nchw`)
PAPER_WINDOWS = (None, *WINDOWS)
RESULTS: list[dict] = []


def _report_path() -> Path | None:
    path = os.environ.get("IM2WIN_GPU_REPORT")
    if not path:
        return None
    is_dir = os.path.isdir(path) or path.endswith("/")
    return Path(path, "gpu_suite.jsonl") if is_dir else Path(path)


@pytest.fixture(scope="module")
def report():
    """Collects the paper-layer results; writes them as JSON lines once the module is done."""
    yield RESULTS
    _DATA.clear()
    torch.cuda.empty_cache()
    path = _report_path()
    if path is None or not RESULTS:
        return
    header = {
        "header": True,
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in (header, *RESULTS):
            f.write(json.dumps(row) + "\n")


_DATA: dict = {}  # one (layer, dtype) at a time: inputs and the float64 reference


def layer_data(index: int, dtype: torch.dtype):
    layer = PAPER_LAYERS[index]
    key = (layer.name, dtype)
    if key not in _DATA:
        _DATA.clear()
        torch.cuda.empty_cache()
        torch.manual_seed(index)
        xshape, wshape = layer.shapes(PAPER_BATCH)
        x = torch.randn(xshape, device="cuda").to(dtype)
        w = torch.randn(wshape, device="cuda").to(dtype)
        _DATA[key] = x, w, reference(x, w, **layer.conv_kwargs())
    return _DATA[key]


PAPER_CASES = [
    pytest.param(
        i, tier, layout, windows, id=f"{layer.name}-{tier}-{layout}-{windows or 'auto'}"
    )  # fmt: skip
    for i, layer in enumerate(PAPER_LAYERS)
    for tier in TIERS
    for layout in LAYOUTS
    for windows in PAPER_WINDOWS
]


@pytest.mark.parametrize("index, tier, layout, windows", PAPER_CASES)
def test_paper_layer(index, tier, layout, windows, report):
    layer = PAPER_LAYERS[index]
    dtype, precision = TIERS[tier]
    bound = GPU_TIER_TOL[tier]
    row = dict(layer=layer.name, tier=tier, layout=layout, windows=windows, batch=PAPER_BATCH,
               rel_err=None, bound=bound, passed=False)  # fmt: skip
    report.append(row)  # a case that raises stays in the report as not passed
    x, w, ref = layer_data(index, dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    y = im2win.conv2d(x, w, **layer.conv_kwargs(), precision=precision, windows=windows)
    finite = bool(torch.isfinite(y).all())
    row["rel_err"] = rel_err(y, ref) if finite else None
    row["passed"] = finite and row["rel_err"] <= bound
    dtype_ok, shape_ok = y.dtype == dtype, y.shape == ref.shape
    format_ok = y.is_contiguous(memory_format=torch_output_format(x, w))
    del x, y
    torch.cuda.empty_cache()
    assert dtype_ok and shape_ok and format_ok
    assert finite, "non-finite outputs (NaN: an element was never written)"
    assert row["passed"], f"relative error {row['rel_err']:.3g} > {bound:.3g}"


# (input shape, weight shape, conv kwargs): C = 1 and 3, prime sizes, groups, dilation, padding
ODD_CASES = {
    "c1_13x17_k5_3x3_p1": ((3, 1, 13, 17), (5, 1, 3, 3), dict(padding=1)),
    "c3_31x29_k7_7x7_s2": ((2, 3, 31, 29), (7, 3, 7, 7), dict(stride=2, padding=3)),
    "c13_11x7_k19_2x4_same": ((5, 13, 11, 7), (19, 13, 2, 4), dict(padding="same")),
    "c12_17x13_g3_d2": ((2, 12, 17, 13), (9, 4, 3, 3), dict(groups=3, dilation=2, padding=2)),
    "c7_23x5_dw_5x1": ((4, 7, 23, 5), (7, 1, 5, 1), dict(groups=7, padding=(2, 0))),
    "c37_9x9_k41_1x1_s3x2": ((3, 37, 9, 9), (41, 37, 1, 1), dict(stride=(3, 2))),
    # KG >= 256: the heuristic's 64 x 256 TMA tiles (channels-last), ragged in pixels and K
    "c64_30x29_k300_3x3_p1": ((2, 64, 30, 29), (300, 64, 3, 3), dict(padding=1)),
    # unpadded: the heuristic's raster tiles (channels-last; 8 warps in 16-bit), a 1x1 with
    # KG past 512, and a 1x1 whose window tiles would waste a third (raster in 16-bit)
    "c64_30x29_k300_3x3": ((2, 64, 30, 29), (300, 64, 3, 3), dict()),
    "c32_9x10_k520_1x1": ((3, 32, 9, 10), (520, 32, 1, 1), dict()),
    "c64_7x9_k300_1x1": ((3, 64, 7, 9), (300, 64, 1, 1), dict()),
    # stems past 64 output channels and under: the heuristic's stem tiles
    "c3_31x29_k70_5x5_s2": ((2, 3, 31, 29), (70, 3, 5, 5), dict(stride=2)),
    "c3_29x31_k40_3x3": ((2, 3, 29, 31), (40, 3, 3, 3), dict()),
    # stride 2 over an output 30 wide: the heuristic's strided window tiles (channels-last)
    "c32_64x60_k64_5x5_s2_p2": ((2, 32, 64, 60), (64, 32, 5, 5), dict(stride=2, padding=2)),
}


def case_tensors(xshape, wshape, layout: str, dtype=torch.float32):
    """Input (in `layout`), weight and bias of a case, drawn in that order on the GPU."""
    x = torch.randn(xshape, device="cuda").to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(wshape, device="cuda").to(dtype)
    return x, w, torch.randn(wshape[0], device="cuda").to(dtype)


@pytest.mark.parametrize("windows", WINDOWS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tier", ["bf16", "tf32", "tf32x3", "ieee", "fp16"])
@pytest.mark.parametrize("case", ODD_CASES)
def test_odd_shapes(case, tier, layout, windows):
    torch.manual_seed(0)
    xshape, wshape, kw = ODD_CASES[case]
    dtype, precision = TIERS[tier]
    x, w, b = case_tensors(xshape, wshape, layout, dtype)
    y = im2win.conv2d(x, w, b, **kw, precision=precision, windows=windows)
    assert y.dtype == dtype
    assert_close(y, reference(x, w, b, **kw), GPU_TIER_TOL[tier])


def assert_close_everywhere(y: torch.Tensor, ref: torch.Tensor, bound: float, config) -> None:
    """`assert_close`, and no element far off: a pipeline race drops whole channel blocks
    from a few outputs, which barely moves the norm but does the worst element (16-bit
    rounding alone stays under 2**-8 of the largest)."""
    assert_close(y, ref, bound)
    worst = (y.double() - ref).abs().max() / ref.abs().max()
    assert worst <= 1e-2, f"{config}: worst element off by {worst:.3g} of max |ref|"


# Channels-last shapes the TMA kernel serves (unit stride, Cg a multiple of 16): ragged
# outputs, padding, dilation, groups, batch 1, and one layer-sized case for the pipeline.
TMA_CASES = {
    "c64_13x11_k40_3x3_p1": ((3, 64, 13, 11), (40, 64, 3, 3), dict(padding=1)),
    "c128_9x7_g2_d2": ((1, 128, 9, 7), (72, 64, 3, 3), dict(groups=2, dilation=2, padding=2)),
    "c32_5x5_k24_1x1": ((2, 32, 5, 5), (24, 32, 1, 1), dict()),
    "c64_58x58_k128_3x3": ((16, 64, 58, 58), (128, 64, 3, 3), dict()),
    "c64_7x7_k300_3x3_p1": ((3, 64, 7, 7), (300, 64, 3, 3), dict(padding=1)),
    # unpadded (raster tiles too): runs across rows and images, KG past 256, groups+dilation
    "c64_12x13_k300_3x3": ((3, 64, 12, 13), (300, 64, 3, 3), dict()),
    "c96_11x9_g2_d21_3x2": ((2, 96, 11, 9), (80, 48, 3, 2), dict(groups=2, dilation=(2, 1))),
    # strided views: taps in every parity class, padding, 32-channel blocks, a 7x7 stem-like
    "c64_14x12_k40_3x3_s2_p1": ((3, 64, 14, 12), (40, 64, 3, 3), dict(stride=2, padding=1)),
    "c32_10x8_k300_1x1_s2": ((2, 32, 10, 8), (300, 32, 1, 1), dict(stride=2)),
    "c32_30x28_k64_7x7_s2": ((2, 32, 30, 28), (64, 32, 7, 7), dict(stride=2)),
    "c128_12x9_g2_s23_p12_d2": (
        (1, 128, 12, 9),
        (72, 64, 3, 3),
        dict(stride=(2, 3), padding=(1, 2), dilation=2, groups=2),
    ),
}


@pytest.mark.parametrize("tier", ["bf16", "fp16", "tf32", "tf32x3"])
@pytest.mark.parametrize("case", TMA_CASES)
def test_tma_candidates(case, tier):
    """Every TMA config autotuning may pick, pinned, with bias, outputs poisoned."""
    torch.manual_seed(3)
    xshape, wshape, kw = TMA_CASES[case]
    dtype, precision = TIERS[tier]
    x, w, b = case_tensors(xshape, wshape, "channels_last", dtype)
    ref = reference(x, w, b, **kw)
    problem = problem_of(xshape, wshape, dtype, precision, channels_last=True, **kw)
    raster = not kw.get("padding") and kw.get("stride", 1) == 1
    assert TMA_RASTER.supports(problem, current_target()) == raster
    eligible = (TMA_RASTER, TMA_WINDOW) if raster else (TMA_WINDOW,)
    for config in [c for v in eligible for c in v.candidates(problem, current_target())]:
        y = im2win.conv2d(x, w, b, **kw, precision=precision, config=config)
        assert_close_everywhere(y, ref, GPU_TIER_TOL[tier], config)


# (input shape, weight shape, conv kwargs): C a multiple of 64 (the strips kernel's channel
# block in 16-bit), sizes no tile divides, batch 1, filters 1x1 to 7x7 and not square,
# dilation, K no tile divides (200 on a 1x1); strided (H and W multiples of the stride, odd
# outputs), a row parity class of one tap and of three; C no channel block divides (40, 72,
# 888: TMA's zeros fill the last block)
STRIPS_CASES = {
    "c64_13x11_k40_3x3_p1": ((1, 64, 13, 11), (40, 64, 3, 3), dict(padding=1)),
    "c64_17x9_k136_3x3_p02": ((3, 64, 17, 9), (136, 64, 3, 3), dict(padding=(0, 2))),
    "c128_10x21_k200_1x1": ((2, 128, 10, 21), (200, 128, 1, 1), dict()),
    "c128_7x7_k264_3x3_p1": ((2, 128, 7, 7), (264, 128, 3, 3), dict(padding=1)),
    "c64_30x5_k24_5x3_p21": ((1, 64, 30, 5), (24, 64, 5, 3), dict(padding=(2, 1))),
    "c64_12x13_k256_5x5": ((2, 64, 12, 13), (256, 64, 5, 5), dict()),
    "c64_9x19_k8_7x7_p3": ((1, 64, 9, 19), (8, 64, 7, 7), dict(padding=3)),
    "c64_15x14_k72_3x3_d2": ((2, 64, 15, 14), (72, 64, 3, 3), dict(padding=2, dilation=2)),
    "c64_18x14_k40_3x3_s2_p1": ((2, 64, 18, 14), (40, 64, 3, 3), dict(stride=2, padding=1)),
    "c128_14x10_k136_1x1_s2": ((1, 128, 14, 10), (136, 128, 1, 1), dict(stride=2)),
    "c64_20x12_k72_5x5_s2_p2": ((1, 64, 20, 12), (72, 64, 5, 5), dict(stride=2, padding=2)),
    "c64_16x9_k24_3x3_s21_p1": ((1, 64, 16, 9), (24, 64, 3, 3), dict(stride=(2, 1), padding=1)),
    "c72_14x11_k40_3x3_s21_p1": ((2, 72, 14, 11), (40, 72, 3, 3), dict(stride=(2, 1), padding=1)),
    "c888_7x7_k136_1x1": ((2, 888, 7, 7), (136, 888, 1, 1), dict()),
    "c40_9x13_k24_5x3_p21": ((1, 40, 9, 13), (24, 40, 5, 3), dict(padding=(2, 1))),
    "c64_16x18_k64_3x3_s2_d2": (
        (2, 64, 16, 18),
        (64, 64, 3, 3),
        dict(stride=2, padding=(2, 1), dilation=(2, 3)),
    ),
}


@pytest.mark.parametrize("tier", ["bf16", "fp16", "tf32"])
@pytest.mark.parametrize("case", STRIPS_CASES)
def test_strips_configs(case, tier):
    """Every strips config the table holds (its rules' tiles and autotuning's candidates),
    pinned, with a bias, outputs poisoned; then one with a whole epilogue."""
    torch.manual_seed(5)
    xshape, wshape, kw = STRIPS_CASES[case]
    dtype, precision = TIERS[tier]
    x, w, b = case_tensors(xshape, wshape, "channels_last", dtype)
    ref = reference(x, w, b, **kw)
    problem = problem_of(xshape, wshape, dtype, precision, channels_last=True, **kw)
    target = current_target()
    assert STRIPS.supports(problem, target)
    table = target.table["strips"]
    tiles = [{key: entry[key] for key in table["candidates_keys"]} for entry in table["tiles"]]
    configs = []
    for config in STRIPS.candidates(problem, target) + tiles:
        configs += [] if config in configs else [config]
    ran = []
    for config in configs:
        try:
            STRIPS.finalize(problem, config, target)
        except ValueError:  # a ring too short for these strips, or fp32 past shared memory
            continue
        pinned = {"VARIANT": "strips", **config}
        y = im2win.conv2d(x, w, b, **kw, precision=precision, config=pinned)
        assert_close_everywhere(y, ref, GPU_TIER_TOL[tier], config)
        ran.append(config)
    assert len(ran) >= 5
    scale = torch.rand(wshape[0], device="cuda").to(dtype) + 0.5
    residual = torch.randn(ref.shape, device="cuda").to(dtype).to(memory_format=torch.channels_last)
    pinned = {"VARIANT": "strips", **ran[0]}  # (these grids are too small for the heuristic)
    y = im2win.conv2d_fused(x, w, b, **kw, scale=scale, activation="silu", residual=residual,
                            precision=precision, config=pinned)  # fmt: skip
    per_channel = (-1, 1, 1)
    acc = reference(x, w, None, **kw)
    want = acc * scale.double().view(per_channel) + b.double().view(per_channel)
    assert_close(y, F.silu(want + residual.double()), GPU_TIER_TOL[tier])


@pytest.mark.parametrize("tier", ["bf16", "fp16", "tf32", "ieee"])
@pytest.mark.parametrize(
    "case", ["c64_13x11_k40_3x3_p1", "c128_7x7_k264_3x3_p1", "c64_18x14_k40_3x3_s2_p1"]
)
def test_staged_nchw(case, tier):
    """NCHW inputs copied channels-last two images at a time (chunks of 2, 2, 1), each
    chunk's choice of its own writing its slice of the NCHW output; a bias and a ReLU."""
    torch.manual_seed(6)
    xshape, wshape, kw = STRIPS_CASES[case]
    dtype, precision = TIERS[tier]
    x, w, b = case_tensors((5, *xshape[1:]), wshape, "nchw", dtype)
    pinned = {"VARIANT": "staged-nchw", "IMAGES": 2}
    plan = im2win.explain(x, w, b, **kw, activation="relu", precision=precision, config=pinned)
    assert plan.choice.variant.name == "staged-nchw" and len(plan.choice.inner) == 2
    y = im2win.conv2d_fused(x, w, b, **kw, activation="relu", precision=precision,
                            config=pinned)  # fmt: skip
    assert y.is_contiguous()
    assert_close(y, F.relu(reference(x, w, b, **kw)), GPU_TIER_TOL[tier])


@pytest.mark.parametrize("tier", ["bf16", "fp16", "tf32"])
def test_outputs_the_strips_kernel_cannot_store(tier):
    """K = 102 output channels (rows of 204 or 408 bytes, which a TMA store cannot write): the
    strips kernel declines and the im2win kernel chosen instead is right."""
    torch.manual_seed(7)
    dtype, precision = TIERS[tier]
    x, w, b = case_tensors((8, 128, 20, 20), (102, 128, 3, 3), "channels_last", dtype)
    plan = im2win.explain(x, w, b, padding=1, precision=precision, backend="triton")
    assert plan.choice.variant is not STRIPS
    y = im2win.conv2d(x, w, b, padding=1, precision=precision, backend="triton")
    assert_close_everywhere(y, reference(x, w, b, padding=1), GPU_TIER_TOL[tier], plan.choice)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", ODD_CASES)
def test_wide_pointer_tiles_on_odd_shapes(case, layout):
    """The tf32 rule's pointer tiles (`variants/pointer_wide.py`), pinned: the heuristic
    gives them only to grids of 1.5 waves of the SMs, which no odd case reaches."""
    torch.manual_seed(0)
    xshape, wshape, kw = ODD_CASES[case]
    x, w, b = case_tensors(xshape, wshape, layout)
    config = current_target().table["pointer-wide"]["tile"]
    y = im2win.conv2d(x, w, b, **kw, precision="tf32", config=config)
    assert_close(y, reference(x, w, b, **kw), GPU_TIER_TOL["tf32"])


# (input shape, weight shape, conv kwargs)
GRAD_CASES = {
    "c32_28x28_k64_3x3_p1": ((8, 32, 28, 28), (64, 32, 3, 3), dict(padding=1)),
    "c16_15x17_k24_4x2_same": ((4, 16, 15, 17), (24, 16, 4, 2), dict(padding="same")),
    "c24_14x14_g3_s2": ((4, 24, 14, 14), (48, 8, 3, 3), dict(groups=3, stride=2)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", GRAD_CASES)
def test_fp32_gradients(case, layout):
    """float32 gradients are fp32-accurate on the GPU too (no silent TF32)."""
    torch.manual_seed(1)
    xshape, wshape, kw = GRAD_CASES[case]
    x, w, b = case_tensors(xshape, wshape, layout)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    leaves64 = [t.double().requires_grad_() for t in (x, w, b)]
    y = im2win.conv2d(*leaves, **kw)
    grad_out = torch.randn_like(y)
    y.backward(grad_out)
    F.conv2d(*leaves64, **kw).backward(grad_out.double())
    for got, want in zip(leaves, leaves64, strict=True):
        assert_close(got.grad, want.grad, GPU_TIER_TOL["ieee"])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tier", ["bf16", "fp16", "tf32", "tf32x3", "ieee"])
@pytest.mark.parametrize("case", ODD_CASES)
def test_grad_kernels_on_odd_shapes(case, tier, layout):
    """`im2win.grad`'s input and weight gradients on the GPU's kernels, every tier, against
    float64 autograd; the weight gradient's slices give the same bits twice."""
    torch.manual_seed(4)
    xshape, wshape, kw = ODD_CASES[case]
    dtype, precision = TIERS[tier]
    x, w, _ = case_tensors(xshape, wshape, layout, dtype)
    dy = torch.randn_like(F.conv2d(x.float(), w.float(), **kw)).to(dtype)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    F.conv2d(x64, w64, **kw).backward(dy.double())
    got_x = grad.conv2d_input(x.shape, w, dy, **kw, precision=precision)
    got_w = grad.conv2d_weight(x, w.shape, dy, **kw, precision=precision)
    assert got_x.dtype == got_w.dtype == dtype
    assert got_x.is_contiguous(memory_format=torch_output_format(x, w))
    assert_close(got_x, x64.grad, GPU_TIER_TOL[tier])
    assert_close(got_w, w64.grad, GPU_TIER_TOL[tier])
    assert torch.equal(got_w, grad.conv2d_weight(x, w.shape, dy, **kw, precision=precision))


# Winograd F(2x2, 3x3): odd outputs (a last row or column of 2x2 tiles half outside), C and K
# past a tile and under one, padding 0, 1 and uneven, batch 1, a layer-sized case.
WINOGRAD_CASES = {
    "c3_13x11_k5_p1": ((2, 3, 13, 11), (5, 3, 3, 3), dict(padding=1)),
    "c64_15x17_k72_p0": ((1, 64, 15, 17), (72, 64, 3, 3), dict()),
    "c40_9x10_k136_same": ((3, 40, 9, 10), (136, 40, 3, 3), dict(padding="same")),
    "c256_14x14_k256_p1": ((8, 256, 14, 14), (256, 256, 3, 3), dict(padding=1)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tier", ["ieee", "tf32x3", "tf32"])
@pytest.mark.parametrize("case", WINOGRAD_CASES)
def test_winograd_candidates(case, tier, layout):
    """Every Winograd tile of the Hopper table, pinned, with a bias, outputs poisoned, in
    each fp32 math mode (fp32-accurate within 1e-5 with IEEE or 3xTF32 GEMMs)."""
    torch.manual_seed(9)
    xshape, wshape, kw = WINOGRAD_CASES[case]
    dtype, precision = TIERS[tier]
    x, w, b = case_tensors(xshape, wshape, layout, dtype)
    ref = reference(x, w, b, **kw)
    table = current_target().table["winograd"]
    for row in table["candidates"]:
        config = dict(zip(table["candidates_keys"], row, strict=True), VARIANT="winograd")
        y = im2win.conv2d(x, w, b, **kw, precision=precision, config=config)
        assert y.is_contiguous(memory_format=torch_output_format(x, w))
        assert_close_everywhere(y, ref, GPU_TIER_TOL[tier], config)


# The warp-specialized weight gradient (channels-last, 16-bit): output channels past a
# consumer's tile (24, 72, 136, 200), Kg of one group's box and past it (groups), strides
# (the parity view, H and W their multiples), dilation, patches past P and Q, batch 1,
# channel blocks of 16, 32 and 64 channels and several of them, a 1x1 filter.
WS_GRAD_CASES = {
    "c64_13x11_k72_3x3_p1": ((3, 64, 13, 11), (72, 64, 3, 3), dict(padding=1)),
    "c128_18x14_k200_3x3_s2_p1": ((2, 128, 18, 14), (200, 128, 3, 3), dict(stride=2, padding=1)),
    "c32_16x9_k24_3x3_s21_p1": ((1, 32, 16, 9), (24, 32, 3, 3), dict(stride=(2, 1), padding=1)),
    "c64_15x14_k64_3x3_d2": ((2, 64, 15, 14), (64, 64, 3, 3), dict(padding=2, dilation=2)),
    "c64_12x12_g2_k48_3x3_p1": ((2, 64, 12, 12), (48, 32, 3, 3), dict(padding=1, groups=2)),
    "c256_7x7_k136_5x5_p2": ((4, 256, 7, 7), (136, 256, 5, 5), dict(padding=2)),
    "c16_20x12_k16_7x7_s2_p3": ((1, 16, 20, 12), (16, 16, 7, 7), dict(stride=2, padding=3)),
    "c128_10x21_k200_1x1": ((2, 128, 10, 21), (200, 128, 1, 1), dict()),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", WS_GRAD_CASES)
def test_warp_specialized_weight_gradient(monkeypatch, case, dtype):
    """Every candidate of the warp-specialized weight-gradient kernel, pinned through the
    rule, with the bias sum, partials poisoned: many short slices (the last ending short)
    and one slice a column (units longer than the ring); dW and the bias against float64,
    the same bits twice."""
    conv2d_wgrad = importlib.import_module("im2win.kernels.conv2d_wgrad")  # the module
    calls = []
    ws = conv2d_wgrad.conv2d_wgrad_ws
    monkeypatch.setattr(conv2d_wgrad, "conv2d_wgrad_ws",
                        lambda *a, **k: calls.append(k["config"]) or ws(*a, **k))  # fmt: skip
    torch.manual_seed(8)
    xshape, wshape, kw = WS_GRAD_CASES[case]
    x, w, _ = case_tensors(xshape, wshape, "channels_last", dtype)
    dy = torch.randn_like(F.conv2d(x.float(), w.float(), **kw)).to(dtype)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    F.conv2d(x64, w64, **kw).backward(dy.double())
    want_bias = dy.double().sum((0, 2, 3))
    params = conv_params(**kw, kernel_size=wshape[2:])
    rule = current_target().table["wgrad"]
    monkeypatch.setitem(rule, "tma_min_taps", 1)  # the 1x1 case too
    for row in rule["ws_candidates"]:
        config = dict(zip(rule["ws_candidates_keys"], row, strict=True))
        monkeypatch.setitem(rule, "ws_tiles", config)
        for max_slices in (rule["max_slices"], 1):
            monkeypatch.setitem(rule, "max_slices", max_slices)
            calls.clear()
            got, bias = grad.weight_grad(x, wshape, dy, params, precision=None, backend="auto",
                                         bias=True)  # fmt: skip
            assert calls and calls[0]["CONSUMERS"] == config["CONSUMERS"], calls
            assert_close_everywhere(got, w64.grad, GPU_TIER_TOL["bf16"], (config, max_slices))
            assert_close(bias, want_bias, GPU_TIER_TOL["bf16"])
            again, _ = grad.weight_grad(x, wshape, dy, params, precision=None, backend="auto",
                                        bias=True)  # fmt: skip
            assert torch.equal(got, again), (config, max_slices)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [c for c in ODD_CASES if ODD_CASES[c][2].get("groups", 1) == 1])
def test_paper_backend(case, layout):
    """conv2d(backend='paper'): the paper's CUDA kernel behind the public API, fp32 IEEE."""
    torch.manual_seed(2)
    xshape, wshape, kw = ODD_CASES[case]
    x = torch.randn(xshape, device="cuda")
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    w, b = torch.randn(wshape, device="cuda"), torch.randn(wshape[0], device="cuda")
    y = im2win.conv2d(x, w, b, **kw, backend="paper")
    assert y.is_contiguous(memory_format=torch_output_format(x, w))
    assert_close(y, reference(x, w, b, **kw), GPU_TIER_TOL["ieee"])


def test_paper_backend_refuses_what_it_cannot_do():
    x, w = torch.randn(2, 4, 9, 9, device="cuda"), torch.randn(4, 2, 3, 3, device="cuda")
    with pytest.raises(ValueError, match="groups=1"):
        im2win.conv2d(x, w, groups=2, backend="paper")
    with pytest.raises(ValueError, match="float32"):
        im2win.conv2d(x.half(), w[:, :1].repeat(1, 4, 1, 1).half(), backend="paper")
