"""im2win.conv2d against float64 torch.nn.functional.conv2d: the FlagGems-style matrix."""

import importlib
import itertools

import pytest
import torch

import im2win
from helpers import (
    DEVICE,
    HOPPER,
    TOL,
    assert_close,
    current_target,
    poison_split_workspace,
    problem_of,
    randn,
    reference,
    split_sum_output,
    stage_everything,
    tolerance,
    torch_output_format,
)
from im2win import plan
from im2win.kernels.conv2d_dw import taps_major
from im2win.kernels.conv2d_fwd import needs_wide_index, split_tf32
from im2win.params import conv_params
from im2win.variants.grouped import PACKED_GROUPS
from im2win.variants.splits import split_count
from im2win.variants.staged import STAGED_NCHW

# (input shape, weight shape, groups): odd and prime sizes, C = 1 and 3, 1x1 filters,
# reductions Cg*R*S that are not multiples of 16/32/64, batch 1, depthwise and grouped.
CASES = {
    "n2c3_7x11_k4_3x3": ((2, 3, 7, 11), (4, 3, 3, 3), 1),
    "n1c1_13x5_k2_3x3": ((1, 1, 13, 5), (2, 1, 3, 3), 1),
    "n2c5_13x13_k7_1x1": ((2, 5, 13, 13), (7, 5, 1, 1), 1),
    "n3c4_1x1_k5_1x1": ((3, 4, 1, 1), (5, 4, 1, 1), 1),
    "n2c3_11x11_k5_5x2": ((2, 3, 11, 11), (5, 3, 5, 2), 1),
    "n1c7_9x10_k3_2x3": ((1, 7, 9, 10), (3, 7, 2, 3), 1),
    "n1c17_8x8_k19_5x5": ((1, 17, 8, 8), (19, 17, 5, 5), 1),
    "n2c6_9x7_dw3x3": ((2, 6, 9, 7), (6, 1, 3, 3), 6),
    "n1c4_8x8_dwx2_3x3": ((1, 4, 8, 8), (8, 1, 3, 3), 4),
    "n2c6_10x9_g2_3x3": ((2, 6, 10, 9), (4, 3, 3, 3), 2),
    "n2c9_7x8_g3_1x3": ((2, 9, 7, 8), (6, 3, 1, 3), 3),
    "n1c2_5x13_k3_4x2": ((1, 2, 5, 13), (3, 2, 4, 2), 1),
}

GEOMETRIES = {
    "s1p0": dict(),
    "s2p1": dict(stride=2, padding=1),
    "s21_p20_d12": dict(stride=(2, 1), padding=(2, 0), dilation=(1, 2)),
    "s3_valid": dict(stride=3, padding="valid"),
    "same": dict(padding="same"),
    "same_d2": dict(padding="same", dilation=2),
    "p3_d2": dict(padding=3, dilation=2),
    "lists_s12_p01_d21": dict(stride=[1, 2], padding=[0, 1], dilation=[2, 1]),
}

LAYOUTS = ("nchw", "channels_last")


def valid(case, geometry) -> bool:
    (_, _, h, w), (_, _, r, s), groups = CASES[case]
    kw = GEOMETRIES[geometry]
    params = conv_params(
        kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1), groups, kernel_size=(r, s)
    )
    return min(params.output_size(h, w, r, s)) > 0


def matrix(cases, geometries, *axes):
    """pytest params for the valid (case, geometry) pairs crossed with the other axes."""
    return [
        pytest.param(c, g, *rest)
        for c, g, *rest in itertools.product(cases, geometries, *axes)
        if valid(c, g)
    ]


def check_conv(case, geometry, layout, bias, dtype, **options):
    xshape, wshape, groups = CASES[case]
    kw = dict(GEOMETRIES[geometry], groups=groups)
    x = randn(*xshape, dtype=dtype, channels_last=layout == "channels_last")
    w = randn(*wshape, dtype=dtype)
    b = randn(wshape[0], dtype=dtype) if bias else None
    ref = reference(x, w, b, **kw)
    y = im2win.conv2d(x, w, b, **kw, **options)
    assert y.dtype == dtype
    assert y.is_contiguous(memory_format=torch_output_format(x, w))
    assert_close(y, ref, tolerance(dtype, options.get("precision")))


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("case, geometry, layout", matrix(CASES, GEOMETRIES, LAYOUTS))
def test_fp32(case, geometry, layout, bias):
    torch.manual_seed(0)
    check_conv(case, geometry, layout, bias, torch.float32)


@pytest.mark.parametrize("case, geometry, layout", matrix(CASES, GEOMETRIES, LAYOUTS))
def test_fp16(case, geometry, layout):
    torch.manual_seed(1)
    check_conv(case, geometry, layout, True, torch.float16)


@pytest.mark.parametrize(
    "case, geometry, layout",
    matrix(
        [
            "n2c3_7x11_k4_3x3",
            "n1c1_13x5_k2_3x3",
            "n1c17_8x8_k19_5x5",
            "n2c6_9x7_dw3x3",
            "n2c9_7x8_g3_1x3",
            "n1c2_5x13_k3_4x2",
        ],
        ["s2p1", "same"],
        LAYOUTS,
    ),
)
def test_bf16(case, geometry, layout):
    torch.manual_seed(2)
    check_conv(case, geometry, layout, True, torch.bfloat16)


@pytest.mark.parametrize("windows", ["materialized", "streamed"])
@pytest.mark.parametrize("case, geometry, layout", matrix(CASES, GEOMETRIES, LAYOUTS))
def test_window_sources(case, geometry, layout, windows):
    torch.manual_seed(12)
    check_conv(case, geometry, layout, True, torch.float32, windows=windows)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "case, geometry, layout",
    matrix(["n2c6_9x7_dw3x3", "n1c2_5x13_k3_4x2"], ["s2p1", "same"], LAYOUTS),
)
def test_streamed_windows_16bit(case, geometry, layout, dtype):
    torch.manual_seed(13)
    check_conv(case, geometry, layout, True, dtype, windows="streamed")


def test_poison_is_active():
    assert torch.isnan(torch.empty(4, 4)).all()


def test_kernels_are_tested():
    """Without the interpreter, CPU tensors would silently take the reference backend."""
    assert DEVICE == "cuda" or im2win.kernels.interpreted()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched(layout):
    torch.manual_seed(3)
    x = randn(1, 3, 9, 8, channels_last=layout == "channels_last")[0]
    w, b = randn(5, 3, 3, 2), randn(5)
    y = im2win.conv2d(x, w, b, padding=1)
    assert y.shape == (5, 9, 9)
    assert_close(y, reference(x, w, b, padding=1), TOL[torch.float32])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("padding", [0, "same"])
def test_empty_batch(layout, padding):
    x = randn(0, 3, 7, 6, channels_last=layout == "channels_last")
    w = randn(4, 3, 2, 3)
    y = im2win.conv2d(x, w, randn(4), padding=padding)
    assert y.shape == reference(x, w, padding=padding).shape
    assert y.dtype == x.dtype


VIEWS = {
    "sliced": lambda t: t[:, 1:4, ::2, 1:-1],
    "hw_transposed": lambda t: t.transpose(2, 3),
    "expanded": lambda t: t[:1].expand(3, -1, -1, -1),
    "channels_last_sliced": lambda t: t.to(memory_format=torch.channels_last)[:, :3, 2:, :-1],
}


def check_view(view, **options):
    torch.manual_seed(4)
    x = VIEWS[view](randn(2, 5, 14, 11))
    w, b = randn(4, x.shape[1], 3, 3), randn(4)
    y = im2win.conv2d(x, w, b, padding=(1, 2), **options)
    assert_close(y, reference(x, w, b, padding=(1, 2)), TOL[torch.float32])


@pytest.mark.parametrize("view", VIEWS)
def test_non_contiguous_input(view):
    check_view(view)


@pytest.mark.parametrize("view", VIEWS)
def test_non_contiguous_input_streamed(view):
    check_view(view, windows="streamed")


def test_non_contiguous_weight():
    torch.manual_seed(5)
    x = randn(2, 3, 8, 9)
    w = randn(3, 3, 5, 4).permute(0, 1, 3, 2)[1:]  # [2, 3, 4, 5], not contiguous
    y = im2win.conv2d(x, w, stride=(1, 2))
    assert_close(y, reference(x, w, stride=(1, 2)), TOL[torch.float32])


def test_non_contiguous_bias():
    torch.manual_seed(6)
    x, w = randn(1, 3, 5, 5), randn(4, 3, 3, 3)
    b = randn(8)[::2]
    assert_close(im2win.conv2d(x, w, b), reference(x, w, b), TOL[torch.float32])


@pytest.mark.parametrize("precision", ["ieee", "tf32x3", "tf32"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_precision(precision, layout):
    torch.manual_seed(7)
    x = randn(2, 6, 9, 11, channels_last=layout == "channels_last")
    w, b = randn(10, 6, 3, 3), randn(10)
    y = im2win.conv2d(x, w, b, padding=1, precision=precision)
    assert y.dtype == torch.float32
    assert_close(y, reference(x, w, b, padding=1), tolerance(torch.float32, precision))


def test_split_tf32():
    # hi + lo is the filter to 2**-22, both tf32 values (13 low bits zero); the filter matrix
    # becomes hi in place unless it is the user's weight, which stays as it was.
    torch.manual_seed(8)
    weight = torch.randn(6, 50) * torch.logspace(-20, 20, 50)
    kept = weight.clone()
    for filt in (weight.clone(), weight):
        hi, lo = split_tf32(filt, weight)
        assert (hi.data_ptr() == filt.data_ptr()) == (filt is not weight)
        for part in (hi, lo):
            assert not (part.view(torch.int32) & 0x1FFF).any()
        err = (hi.double() + lo.double() - kept.double()).abs() / kept.double().abs()
        assert err.max() <= 2**-22
    assert torch.equal(weight, kept)


@pytest.mark.parametrize("loop", ["flat", "channels"])
def test_tf32x3_channels_last_weight(loop):
    # The tap-by-tap loop reads a channels_last weight in place: the split must not touch it.
    torch.manual_seed(9)
    x = randn(2, 16, 7, 9, channels_last=True)
    w, b = randn(12, 16, 3, 3, channels_last=True), randn(12)
    kept = w.clone()
    config = dict(LOOP_CONFIGS[loop], LOOP=loop)
    y = im2win.conv2d(x, w, b, padding=1, precision="tf32x3", config=config)
    assert torch.equal(w, kept)
    assert_close(y, reference(x, w, b, padding=1), tolerance(torch.float32, "tf32x3"))


CONFIGS = {
    "16x16x16": dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1),
    "32x16x64": dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=64, num_warps=4, num_stages=2),
    "16x64x32": dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=32, num_warps=2, num_stages=3),
    # Every tile larger than the problem below, yet within a GPU's shared memory.
    "larger_than_problem": dict(BLOCK_M=128, BLOCK_N=32, BLOCK_K=64, num_warps=8, num_stages=1),
    # The heuristic's stem tiles (few input channels): past 64 output channels, and under.
    "stem_256x128x32": dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=32, num_warps=8, num_stages=3),
    "stem_128x64x16": dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=16, num_warps=4, num_stages=3),
    # The fp32-accurate tier's (tuning.FP32_STEM_TILES) not listed above.
    "stem_128x128x16": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=16, num_warps=8, num_stages=3),
    "stem_64x64x16": dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=16, num_warps=4, num_stages=3),
    "stem_128x128x32": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, num_warps=4, num_stages=3),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "dtype, precision",
    [(torch.float32, "ieee"), (torch.float32, "tf32x3"), (torch.float16, None)],
    ids=["fp32", "tf32x3", "fp16"],
)
def test_pinned_config(config, groups, layout, dtype, precision):
    # M = 2*7*9 = 126 pixels, 20 channels per group, a reduction of 5*3*3 = 45: ragged tiles.
    torch.manual_seed(8)
    x = randn(2, 5 * groups, 9, 11, dtype=dtype, channels_last=layout == "channels_last")
    w, b = randn(20 * groups, 5, 3, 3, dtype=dtype), randn(20 * groups, dtype=dtype)
    kw = dict(stride=(1, 1), padding=(0, 0), groups=groups, precision=precision)
    y = im2win.conv2d(x, w, b, **kw, config=config)
    tol = tolerance(dtype, precision)
    kw.pop("precision")
    assert_close(y, reference(x, w, b, **kw), tol)
    assert_close(y, im2win.conv2d(x, w, b, **kw).double(), 2 * tol)


# Each reduction loop pinned on a channels-last input it can serve (the "tma" loop's
# condition: a stride that divides H x W), Cg = 16 or 32, ragged P x Q against every tile,
# batch 1 and 3; strides whose taps fall in every parity class, with padding and dilation.
LOOP_CASES = {
    "c16_9x11_k24_3x3_p1": ((2, 16, 9, 11), (24, 16, 3, 3), dict(padding=1)),
    "c64_7x5_g2_3x2_p20_d2": ((1, 64, 7, 5), (40, 32, 3, 2),
                              dict(padding=(2, 0), dilation=2, groups=2)),
    "c32_6x13_k17_1x1": ((3, 32, 6, 13), (17, 32, 1, 1), dict()),
    "c16_5x5_k8_5x5_same": ((1, 16, 5, 5), (8, 16, 5, 5), dict(padding="same")),
    "c16_10x12_k24_3x3_s2_p1": ((2, 16, 10, 12), (24, 16, 3, 3), dict(stride=2, padding=1)),
    "c32_8x6_k17_1x1_s2": ((1, 32, 8, 6), (17, 32, 1, 1), dict(stride=2)),
    "c64_12x9_g2_5x3_s23_p21_d12": ((3, 64, 12, 9), (24, 32, 5, 3),
                                    dict(stride=(2, 3), padding=(2, 1), dilation=(1, 2),
                                         groups=2)),
    "c16_14x14_k8_7x7_s2": ((1, 16, 14, 14), (8, 16, 7, 7), dict(stride=2)),
}  # fmt: skip
LOOP_CONFIGS = {
    "flat": dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=32, num_warps=4, num_stages=1, LOOP="flat"),
    "channels": dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, num_warps=4, num_stages=1,
                     LOOP="channels"),
    "tma_4x8": dict(BLOCK_M=32, BLOCK_Q=8, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1,
                    LOOP="tma"),
    "tma_auto_q": dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=16, num_warps=4, num_stages=1,
                       LOOP="tma"),
    # split-K (split_k.py): slices of 1-2 steps, uneven, and some empty on short reductions
    "flat_split3": dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1,
                        LOOP="flat", SPLIT_K=3),
    "channels_split2": dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, num_warps=4, num_stages=1,
                            LOOP="channels", SPLIT_K=2),
    "tma_split5": dict(BLOCK_M=32, BLOCK_Q=8, BLOCK_N=16, BLOCK_K=16, num_warps=4,
                       num_stages=1, LOOP="tma", SPLIT_K=5),
}  # fmt: skip


@pytest.mark.parametrize("config", LOOP_CONFIGS.values(), ids=LOOP_CONFIGS.keys())
@pytest.mark.parametrize("case", LOOP_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_each_loop(config, case, dtype):
    torch.manual_seed(10)
    check_channels_last(*LOOP_CASES[case], config, dtype)


def check_channels_last(xshape, wshape, kw, config, dtype):
    """One channels-last convolution with bias under `config`, against the reference."""
    x = randn(*xshape, dtype=dtype, channels_last=True)
    w, b = randn(*wshape, dtype=dtype), randn(wshape[0], dtype=dtype)
    y = im2win.conv2d(x, w, b, **kw, config=config)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, reference(x, w, b, **kw), TOL[dtype])


@pytest.mark.parametrize("splits", [2, 7, 40])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_split_k(monkeypatch, splits, layout, dtype):
    # Both output layouts, groups, bias, a 16-bit output summed from fp32 slices; 40 slices
    # of a 9-step reduction leave most empty. The workspace is poisoned (NaN): every slice
    # must write all of its part.
    seen = poison_split_workspace(monkeypatch)
    torch.manual_seed(14)
    x = randn(2, 8, 9, 7, dtype=dtype, channels_last=layout == "channels_last")
    w, b = randn(12, 4, 3, 3, dtype=dtype), randn(12, dtype=dtype)
    kw = dict(padding=1, groups=2)
    config = dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1, SPLIT_K=splits)
    y = im2win.conv2d(x, w, b, **kw, config=dict(config, LOOP="channels"))
    assert [a[0] for a in seen] == [splits]
    assert y.is_contiguous(memory_format=torch_output_format(x, w))
    assert_close(y, reference(x, w, b, **kw), TOL[dtype])


@pytest.mark.parametrize("loop, padding", [("tma", 1), ("tma_raster", 0)])
def test_split_k_tma(monkeypatch, loop, padding):
    seen = poison_split_workspace(monkeypatch)
    torch.manual_seed(15)
    x = randn(2, 32, 9, 7, channels_last=True)
    w, b = randn(24, 16, 3, 3), randn(24)
    kw = dict(padding=padding, groups=2)
    config = dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1, SPLIT_K=4)
    y = im2win.conv2d(x, w, b, **kw, config=dict(config, LOOP=loop))
    assert [a[0] for a in seen] == [4]
    assert_close(y, reference(x, w, b, **kw), TOL[torch.float32])


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_split_k_finish(layout):
    # The slices' sum into outputs of either dense layout (one kernel) or any strides.
    from im2win.kernels.split_k import finish, workspace

    torch.manual_seed(16)
    y = split_sum_output(layout)
    ws = workspace(3, y).copy_(torch.randn(6, 6, 3, 5))
    bias = torch.randn(12, device=DEVICE)[::2]
    finish(ws, 3, bias, y)
    want = ws.view(3, 2, 6, 3, 5).double().sum(0) + bias.double().view(1, -1, 1, 1)
    assert_close(y, want, TOL[torch.float16])


def test_split_count_rule():
    t = HOPPER.table["split-k"]
    assert split_count(100, 64, 1000, HOPPER) == 1  # the grid fills most SMs already
    assert split_count(20, 64, 1000, HOPPER) == 1  # 7 slices would fill them: too few
    assert split_count(4, 28, 1000, HOPPER) == 1  # too short a reduction for 8 slices
    assert split_count(4, 36, 1000, HOPPER) == 9  # 4 steps a slice at least
    assert split_count(2, 400, 1000, HOPPER) == t["max_splits"]
    assert split_count(8, 64, t["workspace_bytes"] // 40, HOPPER) == 10  # the workspace's cap
    assert split_count(8, 64, t["workspace_bytes"] // 12, HOPPER) == 1
    assert split_count(2, 400, 1000, current_target()) == (1 if DEVICE == "cpu" else 16)


def test_wide_index_rule():
    # Shapes only (meta tensors): offsets past 2**31 - 1, or pixel indices, ask for int64.
    small = torch.empty(2, 3, 5, 7, device="meta")
    assert not needs_wide_index((small,), 1000)
    assert needs_wide_index((small,), 2**31)
    assert needs_wide_index((small,), 1000, origin=-(2**31))
    assert needs_wide_index((torch.empty(2**16, 2**15 + 1, device="meta"), small), 1000)


@pytest.mark.parametrize("wide", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("loop", ["flat", "channels"])
def test_both_index_widths(monkeypatch, wide, loop):
    # The 64-bit index path serves only tensors too large to test here: forced on small ones.
    module = importlib.import_module("im2win.kernels.conv2d_fwd")  # not the function
    monkeypatch.setattr(module, "needs_wide_index", lambda *args: wide)
    torch.manual_seed(13)
    x = randn(2, 16, 9, 11, channels_last=True)
    w, b = randn(24, 16, 3, 3), randn(24)
    config = dict(LOOP_CONFIGS[loop], LOOP=loop)
    y = im2win.conv2d(x, w, b, stride=2, padding=1, config=config)
    assert_close(y, reference(x, w, b, stride=2, padding=1), TOL[torch.float32])


@pytest.mark.parametrize("config", LOOP_CONFIGS.values(), ids=LOOP_CONFIGS.keys())
def test_each_loop_channels_last_weight(config):
    # A channels_last weight is the tap-by-tap loops' own layout (read in place); a slice of
    # one starts mid-storage.
    torch.manual_seed(11)
    x = randn(2, 32, 7, 9, channels_last=True)
    w = randn(13, 32, 3, 3, channels_last=True)[1:]  # [12, 32, 3, 3], offset, channels_last
    b = randn(12)
    y = im2win.conv2d(x, w, b, padding=1, config=config)
    assert_close(y, reference(x, w, b, padding=1), TOL[torch.float32])


# Unpadded channels-last shapes the raster tiles serve: runs that wrap across rows and
# images, batch 1 and 5, dilation with groups, a 1x1 (a plain GEMM), images smaller than a run.
RASTER_CASES = {
    "c16_9x11_k24_3x3": ((2, 16, 9, 11), (24, 16, 3, 3), dict()),
    "c32_7x5_g2_3x2_d21": ((3, 32, 7, 5), (40, 16, 3, 2), dict(dilation=(2, 1), groups=2)),
    "c32_6x13_k17_1x1": ((1, 32, 6, 13), (17, 32, 1, 1), dict()),
    "c16_3x4_k8_3x3_b5": ((5, 16, 3, 4), (8, 16, 3, 3), dict()),
}  # fmt: skip
RASTER_CONFIGS = {
    "run32": dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1,
                  LOOP="tma_raster"),
    "run32_split4": dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1,
                         LOOP="tma_raster", SPLIT_K=4),
    "default": None,  # the library's pick: under the interpreter, raster tiles in 16-bit
}  # fmt: skip


@pytest.mark.parametrize("config", RASTER_CONFIGS.values(), ids=RASTER_CONFIGS.keys())
@pytest.mark.parametrize("case", RASTER_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_raster_tiles(config, case, dtype):
    torch.manual_seed(12)
    check_channels_last(*RASTER_CASES[case], config, dtype)


# Depthwise shapes (groups == C): the default path's direct kernel. Channel multipliers 1-3,
# C = 1 and 3, strides, padding, dilation, batch 1.
DEPTHWISE_CASES = {
    "c5_9x11_3x3_p1": ((2, 5, 9, 11), (5, 1, 3, 3), dict(padding=1, groups=5)),
    "c7_13x6_m2_5x1_s21": ((1, 7, 13, 6), (14, 1, 5, 1),
                           dict(stride=(2, 1), padding=(2, 0), groups=7)),
    "c3_10x9_m3_3x2_d21": ((3, 3, 10, 9), (9, 1, 3, 2),
                           dict(stride=2, padding=1, dilation=(2, 1), groups=3)),
    "c1_8x8_m4_same": ((1, 1, 8, 8), (4, 1, 3, 3), dict(padding="same")),
    "c70_7x7_7x7_p3": ((1, 70, 7, 7), (70, 1, 7, 7), dict(padding=3, groups=70)),
}  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", DEPTHWISE_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_depthwise(case, layout, dtype):
    torch.manual_seed(12)
    xshape, wshape, kw = DEPTHWISE_CASES[case]
    x = randn(*xshape, dtype=dtype, channels_last=layout == "channels_last")
    w, b = randn(*wshape, dtype=dtype), randn(wshape[0], dtype=dtype)
    y = im2win.conv2d(x, w, b, **kw)
    assert y.is_contiguous(memory_format=torch_output_format(x, w))
    assert_close(y, reference(x, w, b, **kw), TOL[dtype])
    # The im2win path (a pinned config) agrees.
    pinned = dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1)
    assert_close(y, im2win.conv2d(x, w, b, **kw, config=pinned).double(), 2 * TOL[dtype])


# Weights of a channels-last depthwise call as the row kernel may get them: PyTorch's
# layout (re-laid taps-major for the call), already taps-major (read in place), a strided
# view, a single channel.
DEPTHWISE_WEIGHTS = {
    "contiguous": lambda w: w,
    "taps_major": lambda w: w.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2),
    "strided": lambda w: torch.stack([w, w], dim=-1)[..., 0],
    "channels_sliced": lambda w: (
        torch.cat([w, w]).permute(1, 2, 3, 0).contiguous()[..., ::2].permute(3, 0, 1, 2)
    ),
}


@pytest.mark.parametrize("layout", DEPTHWISE_WEIGHTS)
@pytest.mark.parametrize(
    "case", ["c5_9x11_3x3_p1", "c3_10x9_m3_3x2_d21", "c1_8x8_m4_same", "c70_7x7_7x7_p3"]
)
def test_depthwise_weight_layouts(case, layout):
    torch.manual_seed(12)
    xshape, wshape, kw = DEPTHWISE_CASES[case]
    x = randn(*xshape, dtype=torch.float16, channels_last=True)
    w = DEPTHWISE_WEIGHTS[layout](randn(*wshape, dtype=torch.float16))
    kept = w.clone()
    y = im2win.conv2d(x, w, None, **kw)
    assert_close(y, reference(x, w, None, **kw), TOL[torch.float16])
    assert torch.equal(w, kept)  # the re-laid copy is the kernel's, the weight untouched
    laid = taps_major(w)
    assert torch.equal(laid, w) and laid.stride(0) == 1
    assert (laid.data_ptr() == w.data_ptr()) == (w.stride(0) == 1)  # copied only if needed


# Groups of at most 16 channels in a tensor-core tier: the default path packs several to a
# block-diagonal tile (kernels/conv2d_grouped.py). Depthwise with multipliers 1-3, groups of
# 2-16 input and 1-16 output channels (not powers of two too), strides, padding, dilation,
# batch 1, bias.
GROUPED_CASES = {
    "dw_c5_9x11_3x3_p1": ((2, 5, 9, 11), (5, 1, 3, 3), dict(padding=1, groups=5)),
    "dw_c7_13x6_m2_5x1_s21": ((1, 7, 13, 6), (14, 1, 5, 1),
                              dict(stride=(2, 1), padding=(2, 0), groups=7)),
    "dw_c3_10x9_m3_3x2_d21": ((3, 3, 10, 9), (9, 1, 3, 2),
                              dict(stride=2, padding=1, dilation=(2, 1), groups=3)),
    "g3_c12_9x11_k15": ((2, 12, 9, 11), (15, 4, 3, 3), dict(padding=1, groups=3)),
    "g4_c32_7x9_k32_s2": ((1, 32, 7, 9), (32, 8, 3, 3), dict(stride=2, padding=1, groups=4)),
    "g3_c48_6x7_k48_d2": ((2, 48, 6, 7), (48, 16, 3, 2), dict(dilation=2, padding=2, groups=3)),
    "g5_c10_5x6_k80": ((1, 10, 5, 6), (80, 2, 1, 3), dict(groups=5)),
    "g37_c74_4x5_k37": ((2, 74, 4, 5), (37, 2, 2, 2), dict(groups=37)),
}  # fmt: skip
# Tiles besides the default (BLOCK_G as a multiple of the default's): twice the groups on
# 64 pixels, one stage. "library": conv2d's own pick (the FMA kernel for depthwise NHWC).
GROUPED_TILES = {
    "library": None,
    "default": dict(),
    "wide": dict(BLOCK_M=64, BLOCK_G=2, num_warps=4, num_stages=2),
    "one_stage": dict(BLOCK_M=64, BLOCK_G=1, num_warps=4, num_stages=1),
}


@pytest.mark.parametrize("tiles", GROUPED_TILES.values(), ids=GROUPED_TILES.keys())
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", GROUPED_CASES)
@pytest.mark.parametrize("tier", ["fp16", "tf32"])
def test_grouped(case, layout, tier, tiles):
    torch.manual_seed(12)
    xshape, wshape, kw = GROUPED_CASES[case]
    dtype, precision = (torch.float16, None) if tier == "fp16" else (torch.float32, "tf32")
    x = randn(*xshape, dtype=dtype, channels_last=layout == "channels_last")
    w, b = randn(*wshape, dtype=dtype), randn(wshape[0], dtype=dtype)
    config = None
    if tiles is not None:  # pinned: the packed-groups variant whatever the library prefers
        problem = problem_of(xshape, wshape, dtype, precision, layout == "channels_last", **kw)
        config = dict(PACKED_GROUPS.candidates(problem, current_target())[0], **tiles,
                      VARIANT="packed-groups")  # fmt: skip
        if "BLOCK_G" in tiles:
            default = PACKED_GROUPS.candidates(problem, current_target())[0]["BLOCK_G"]
            config["BLOCK_G"] = tiles["BLOCK_G"] * default
    y = im2win.conv2d(x, w, b, **kw, precision=precision, config=config)
    assert y.is_contiguous(memory_format=torch_output_format(x, w))
    assert_close(y, reference(x, w, b, **kw), tolerance(dtype, precision))


@pytest.mark.parametrize("tier", ["fp16", "tf32"])
def test_grouped_reads_any_strides(tier):
    """A strided view of the input and a channels-last filter, read in place."""
    torch.manual_seed(13)
    dtype, precision = (torch.float16, None) if tier == "fp16" else (torch.float32, "tf32")
    x = randn(2, 12, 11, 14, dtype=dtype)[:, :, 1:, ::2]  # [2, 12, 10, 7], W stride 2
    w = randn(18, 4, 3, 3, dtype=dtype).to(memory_format=torch.channels_last)
    kw = dict(padding=1, groups=3)
    assert im2win.explain(x, w, **kw, precision=precision).choice.variant is PACKED_GROUPS
    y = im2win.conv2d(x, w, **kw, precision=precision)
    assert_close(y, reference(x, w, **kw), tolerance(dtype, precision))


def packs(c, k, groups, hw, dtype=torch.float16, channels_last=True):
    """Whether the heuristic packs a 3x3 layer's groups (HOPPER's table)."""
    problem = problem_of((8, c, hw, hw), (k, c // groups, 3, 3), dtype,
                         "tf32" if dtype == torch.float32 else None, channels_last,
                         padding=1, groups=groups)  # fmt: skip
    return PACKED_GROUPS.supports(problem, HOPPER) and bool(
        PACKED_GROUPS.heuristic(problem, HOPPER)
    )


def test_grouped_rule():
    """Tensor-core tiers, groups of at most 16 channels either way; depthwise in NCHW on
    outputs up to 56x56; tiles fill a tensor-core step."""
    assert packs(256, 256, 32, 28)  # 8 channels a group
    assert packs(512, 512, 32, 112, channels_last=False)
    assert packs(256, 256, 32, 28, torch.float32)  # tf32
    assert not packs(3, 16, 1, 28)  # not grouped
    assert not packs(128, 256, 8, 28)  # 32 outputs a group
    assert not packs(128, 32, 4, 28)  # 32 inputs a group
    assert packs(96, 96, 96, 56, channels_last=False)  # depthwise, NCHW
    assert not packs(96, 96, 96, 57, channels_last=False)  # past 56x56: the FMA kernel
    assert not packs(96, 96, 96, 14)  # depthwise NHWC: the FMA kernel
    fp32 = problem_of((8, 256, 28, 28), (256, 8, 3, 3), padding=1, groups=32)
    assert not PACKED_GROUPS.supports(fp32, HOPPER)  # fp32-accurate: FMA kernels

    def block_g(cg, kg):
        problem = problem_of((1, 4 * cg, 5, 5), (4 * kg, cg, 3, 3), torch.float16, groups=4)
        return PACKED_GROUPS.candidates(problem, HOPPER)[0]["BLOCK_G"]

    assert block_g(1, 1) == 16
    assert block_g(8, 8) == 2
    assert block_g(3, 16) == 4  # Cg padded to 4: 16 reduction lanes


@pytest.mark.parametrize("geometry", ["s1p0", "s21_p20_d12", "same"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_reference_backend_agrees(geometry, layout, dtype):
    torch.manual_seed(9)
    kw = dict(GEOMETRIES[geometry], groups=2)
    x = randn(2, 4, 9, 10, dtype=dtype, channels_last=layout == "channels_last")
    w, b = randn(6, 2, 3, 2, dtype=dtype), randn(6, dtype=dtype)
    y_ref = im2win.conv2d(x, w, b, **kw, backend="reference")
    y_tri = im2win.conv2d(x, w, b, **kw, backend="triton")
    assert y_ref.dtype == y_tri.dtype == dtype
    assert y_ref.is_contiguous(memory_format=torch_output_format(x, w))
    assert_close(y_ref, reference(x, w, b, **kw), TOL[dtype])
    assert_close(y_tri, y_ref.double(), 2 * TOL[dtype])


def test_float64_reference_backend():
    torch.manual_seed(10)
    x, w, b = (randn(*s, dtype=torch.float64) for s in [(2, 4, 7, 9), (6, 2, 2, 3), (6,)])
    y = im2win.conv2d(x, w, b, padding="same", groups=2, backend="reference")
    assert y.dtype == torch.float64
    assert_close(y, reference(x, w, b, padding="same", groups=2), 1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inputs_not_modified(layout):
    torch.manual_seed(11)
    x = randn(2, 3, 8, 7, channels_last=layout == "channels_last").requires_grad_()
    w, b = randn(4, 3, 2, 2).requires_grad_(), randn(4).requires_grad_()
    clones = [t.detach().clone() for t in (x, w, b)]
    y = im2win.conv2d(x, w, b, padding="same")
    y.backward(torch.randn_like(y))
    for t, c in zip((x, w, b), clones, strict=True):
        assert torch.equal(t.detach(), c)
        assert t.stride() == c.stride()


# (input shape, weight shape, groups, stride, padding, dtype): NCHW inputs the library stages
# through channels-last chunks; 100 output channels put every other one-image output slice
# off a 16-byte boundary, so each chunk's plan sees its own alignment.
STAGED = {
    "fp32": ((3, 16, 9, 7), (100, 16, 3, 3), 1, 1, 1, torch.float32),
    "fp32_g2": ((3, 32, 6, 9), (100, 16, 3, 3), 2, 1, 0, torch.float32),
    "fp32_s2": ((3, 16, 11, 8), (100, 16, 3, 3), 1, 2, 1, torch.float32),
    "fp16_1x1": ((3, 48, 5, 7), (100, 48, 1, 1), 1, 1, 0, torch.float16),
    "bf16": ((3, 64, 15, 15), (100, 64, 3, 3), 1, 1, 1, torch.bfloat16),
}


@pytest.mark.parametrize("case", STAGED)
@pytest.mark.parametrize("images", [1, 2])
def test_nchw_staged_in_chunks(case, images, monkeypatch):
    """One or two images a chunk (last chunk short), outputs written in place in NCHW."""
    xshape, wshape, groups, stride, padding, dtype = STAGED[case]
    stage_everything(monkeypatch, images * xshape[1] * xshape[2] * xshape[3] * dtype.itemsize)
    monkeypatch.setattr(plan, "_PLANS", {})
    torch.manual_seed(12)
    x = randn(*xshape, dtype=dtype)
    kwargs = dict(stride=stride, padding=padding, groups=groups)
    choice = im2win.explain(x, randn(*wshape, dtype=dtype), **kwargs).choice
    assert choice.variant is STAGED_NCHW and choice.config["IMAGES"] == images
    assert len(choice.inner) == 1 + (xshape[0] % images > 0)  # the last chunk its own
    clone = x.clone()
    for _ in range(2):  # the second call runs the kept plan
        w, b = randn(*wshape, dtype=dtype), randn(wshape[0], dtype=dtype)
        y = im2win.conv2d(x, w, b, **kwargs)
        assert y.is_contiguous()
        assert_close(y, reference(x, w, b, **kwargs), TOL[dtype])
    assert torch.equal(x, clone)


def staged_images(xshape, wshape, dtype=torch.float32, channels_last=False, **kw) -> int:
    """Images a chunk where the heuristic stages this problem (HOPPER's table), else 0."""
    problem = problem_of(xshape, wshape, dtype, channels_last=channels_last, **kw)
    if not STAGED_NCHW.supports(problem, HOPPER):
        return 0
    config = STAGED_NCHW.heuristic(problem, HOPPER)
    return 0 if config is None else STAGED_NCHW.finalize(problem, config, HOPPER)["IMAGES"]


def test_staging_rule():
    x, half = (64, 256, 5, 5), torch.float16
    # Flops per input byte copied, 2*K*R*S*P*Q / (H*W*itemsize), at least 512; K <= 3C.
    assert staged_images(x, (256, 256, 3, 3), padding=1) == 64  # 2*256*9 / 4 = 1152
    assert staged_images(x, (100, 256, 3, 3), padding=1) == 0  # 450
    assert staged_images(x, (48, 256, 3, 3), half, padding=1) == 0  # 432 in 16-bit
    assert staged_images(x, (64, 256, 4, 4), half, padding=1) == 64  # 4x4 outputs: 655
    assert staged_images(x, (256, 256, 3, 3), stride=2) == 0  # 2x2 outputs of 5x5: 184
    assert staged_images(x, (768, 256, 3, 3), stride=2) == 64  # 553
    assert staged_images(x, (96, 256, 1, 1)) == 0  # 48
    assert staged_images(x, (768, 256, 1, 1), half) == 64  # 768, K = 3C
    assert staged_images(x, (1024, 256, 1, 1), half) == 0  # K = 4C
    assert staged_images((31, 256, 5, 5), (256, 256, 3, 3), padding=1) == 0  # small batch
    assert staged_images((32, 256, 5, 5), (256, 256, 3, 3), padding=1) == 32
    assert staged_images(x, (256, 256, 3, 3), channels_last=True, padding=1) == 0  # NHWC
    assert staged_images(x, (256, 8, 3, 3), groups=32) == 0  # Cg < 16
    assert staged_images(x, (256, 1, 3, 3), groups=256) == 0  # depthwise
    # no pixels, padding makes the output
    assert staged_images((64, 256, 0, 0), (256, 256, 3, 3), padding=2) == 0
    tiny = (70000, 16, 1, 1)  # 65535 images a copy at most
    assert staged_images(tiny, (48, 16, 5, 5), half, padding=2) == 65535
