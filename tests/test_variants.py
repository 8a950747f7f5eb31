"""The registry of kernel variants: its order, the choices it makes, every variant pinned on
odd shapes against float64, and what `explain` shows."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

import im2win
from helpers import (
    HOPPER,
    assert_close,
    current_target,
    problem_of,
    randn,
    reference,
    tolerance,
    torch_output_format,
)
from im2win import variants
from im2win.bench.layers import PAPER_BATCH, PAPER_LAYERS
from im2win.epilogue import NONE, Epilogue
from im2win.params import conv_params
from im2win.problem import MathMode
from im2win.variants import BY_NAME, VARIANTS, Variant
from im2win.variants.strips import KEYS as STRIPS_KEYS
from im2win.variants.strips import STRIPS, strips_would_serve


def test_the_registry_lists_each_variant_once_in_priority_order():
    names = [v.name for v in VARIANTS]
    assert len(set(names)) == len(names) and all(isinstance(v, Variant) for v in VARIANTS)
    assert names == [
        "winograd", "aten", "packed-groups", "staged-nchw", "depthwise", "strips",
        "pointer-wide", "tma-raster", "tma", "pointer", "pointer-materialized",
    ]  # fmt: skip
    assert set(variants.BY_LOOP.values()) <= set(VARIANTS)


LAYER = {layer.name: layer for layer in PAPER_LAYERS}
MODES = {
    "fp32": (torch.float32, None),
    "tf32x3": (torch.float32, "tf32x3"),
    "tf32": (torch.float32, "tf32"),
    "bf16": (torch.bfloat16, None),
}


@pytest.mark.parametrize(
    "layer, mode, layout, picked",
    [
        ("conv1", "bf16", "NCHW", "pointer"),  # a 3-channel stem: the flat loop
        ("conv4", "bf16", "NHWC", "tma"),  # stride 2, 109 wide: strided window tiles
        ("conv4", "bf16", "NCHW", "staged-nchw > tma"),
        ("conv5", "tf32", "NHWC", "strips"),  # 96 channels: three 32-channel fp32 blocks
        ("conv5", "bf16", "NHWC", "pointer"),  # 96 channels: no whole 64-channel block
        ("conv8", "bf16", "NHWC", "strips"),
        ("conv8", "fp32", "NCHW", "staged-nchw > pointer"),
        ("conv9", "tf32", "NCHW", "pointer"),  # 64 channels: too little work to stage
        ("conv12", "bf16", "NHWC", "strips"),
        # 3xTF32 3x3 unit-stride layers of 256+ output channels: Winograd, either layout
        ("conv11", "tf32x3", "NCHW", "winograd"),
        ("conv12", "tf32x3", "NHWC", "winograd"),
        ("conv10", "tf32x3", "NHWC", "pointer"),  # 128 output channels: not its rule's
        ("conv11", "fp32", "NHWC", "pointer"),  # IEEE: not measured, not its rule's
    ],
)
def test_the_heuristic_picks_on_hopper(layer, mode, layout, picked):
    xshape, wshape = LAYER[layer].shapes(PAPER_BATCH)
    dtype, precision = MODES[mode]
    kw = LAYER[layer].conv_kwargs()
    problem = problem_of(xshape, wshape, dtype, precision, layout == "NHWC", **kw)
    choice = variants.choose(problem, HOPPER)
    chunks = [c.variant.name for c in choice.inner[:1]]  # a last, shorter chunk chooses alike
    assert " > ".join([choice.variant.name, *chunks]) == picked
    assert choice.how == "heuristic"


def test_winograd_stays_within_its_workspace_cap():
    """conv11 in 3xTF32 takes Winograd at batch 128 but not at 1024, where its transformed
    tiles would pass the table's `max_workspace_bytes` (1 GiB)."""
    xshape, wshape = LAYER["conv11"].shapes(1024)
    problem = problem_of(xshape, wshape, torch.float32, "tf32x3", **LAYER["conv11"].conv_kwargs())
    assert BY_NAME["winograd"].workspace_bytes(problem, {}) > 2**30
    assert variants.choose(problem, HOPPER).variant.name != "winograd"
    assert BY_NAME["winograd"].candidates(problem, HOPPER) == []


@pytest.mark.parametrize("windows", ["streamed", "materialized"])
def test_windows_restrict_the_choice_to_kernels_reading_them(windows):
    # A depthwise layer takes the FMA kernel unless windows are asked for.
    problem = problem_of((2, 8, 9, 9), (8, 1, 3, 3), padding=1, groups=8)
    assert variants.choose(problem, HOPPER).variant.name == "depthwise"
    choice = variants.choose(problem, HOPPER, windows=windows)
    assert choice.variant.windows == windows
    assert (
        choice.variant.name
        == {"streamed": "pointer", "materialized": "pointer-materialized"}[windows]
    )


# Odd shapes for every variant that serves them: C = 1 and 3, ragged sizes, Cg = 16 and 64
# (TMA), narrow groups and depthwise, stride/padding/dilation, batch 1, K past 256.
ODD = {
    "c1_13x11_k5_3x3_p1": ((3, 1, 13, 11), (5, 1, 3, 3), dict(padding=1)),
    "c3_17x15_k7_5x5_s2": ((1, 3, 17, 15), (7, 3, 5, 5), dict(stride=2, padding=2)),
    "c16_9x11_k24_3x3": ((2, 16, 9, 11), (24, 16, 3, 3), dict()),
    "c64_10x12_k20_3x3_s2_p1": ((2, 64, 10, 12), (20, 64, 3, 3), dict(stride=2, padding=1)),
    "g4_c32_7x9_k32_d2": ((1, 32, 7, 9), (32, 8, 3, 3), dict(dilation=2, padding=2, groups=4)),
    "dw_c6_9x7_m2_3x2": ((3, 6, 9, 7), (12, 1, 3, 2), dict(padding=1, groups=6)),
    "c40_9x7_k260_3x3": ((1, 40, 9, 7), (260, 40, 3, 3), dict()),  # 256-channel tiles
}
PINNED_MODES = {
    "fp32": (torch.float32, None),
    "tf32x3": (torch.float32, "tf32x3"),
    "tf32": (torch.float32, "tf32"),
    "fp16": (torch.float16, None),
}


# Winograd's tiles stay null in the tables until a GPU has run it: pinned with these.
WINOGRAD_TILE = dict(BLOCK_T=16, BLOCK_K=64, BLOCK_C=16, num_warps=4, num_stages=1)


def pinned_config(variant: Variant, problem) -> dict:
    """A config to pin `variant` with: its heuristic's, else its first candidate's; a
    staged input one image a chunk; Winograd's `WINOGRAD_TILE`."""
    if variant.name == "staged-nchw":
        return dict(IMAGES=1, VARIANT=variant.name)
    if variant.name == "winograd":
        return dict(WINOGRAD_TILE, VARIANT=variant.name)
    config = variant.heuristic(problem, current_target())
    config = config if config is not None else variant.candidates(problem, current_target())[0]
    return dict(config, VARIANT=variant.name)


def pinned_cases():
    cases = []
    for variant in VARIANTS:
        for case, (xshape, wshape, kw) in ODD.items():
            for mode, (dtype, precision) in PINNED_MODES.items():
                for layout in ("nchw", "nhwc"):
                    problem = problem_of(xshape, wshape, dtype, precision, layout == "nhwc", **kw)
                    pins = variant.supports(problem, current_target()) and (
                        variant.heuristic(problem, current_target()) is not None
                        or variant.candidates(problem, current_target())
                        or variant.name in ("staged-nchw", "winograd")
                    )
                    if pins:
                        cases.append(
                            pytest.param(
                                variant.name,
                                case,
                                mode,
                                layout,
                                id=f"{variant.name}-{case}-{mode}-{layout}",
                            )  # fmt: skip
                        )
    return cases


@pytest.mark.parametrize("name, case, mode, layout", pinned_cases())
def test_every_variant_pinned_on_odd_shapes(name, case, mode, layout):
    torch.manual_seed(20)
    xshape, wshape, kw = ODD[case]
    dtype, precision = PINNED_MODES[mode]
    x = randn(*xshape, dtype=dtype, channels_last=layout == "nhwc")
    w, b = randn(*wshape, dtype=dtype), randn(wshape[0], dtype=dtype)
    problem = problem_of(xshape, wshape, dtype, precision, layout == "nhwc", **kw)
    config = pinned_config(BY_NAME[name], problem)
    plan = im2win.explain(x, w, b, **kw, precision=precision, config=config)
    assert plan.choice.variant.name == name and plan.choice.how == "pinned"
    y = im2win.conv2d(x, w, b, **kw, precision=precision, config=config)
    assert y.is_contiguous(memory_format=torch_output_format(x, w))
    assert_close(y, reference(x, w, b, **kw), tolerance(dtype, precision))


WINOGRAD_ODD = [
    case
    for case, (xshape, wshape, kw) in ODD.items()
    if BY_NAME["winograd"].supports(
        problem_of(xshape, wshape, torch.float32, None, False, **kw), current_target()
    )
]


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("case", WINOGRAD_ODD)
def test_winograd_in_3xtf32(case, layout):
    """The mode Winograd is for: its filter transform writes U's tf32 part and remainder,
    its GEMMs split V (in the interpreter, tf32 products are exact: a wrong remainder, not
    rounding, is what shows)."""
    torch.manual_seed(21)
    xshape, wshape, kw = ODD[case]
    x = randn(*xshape, channels_last=layout == "nhwc")
    w, b = randn(*wshape), randn(wshape[0])
    config = dict(WINOGRAD_TILE, VARIANT="winograd")
    y = im2win.conv2d(x, w, b, **kw, precision="tf32x3", config=config)
    assert_close(y, reference(x, w, b, **kw), tolerance(torch.float32, "tf32x3"))


def test_every_variant_is_pinned_somewhere():
    # The strips kernel is Gluon, which the interpreter cannot run: test_gpu.py pins it.
    gpu_only = {"strips"} if current_target().interpreted else set()
    assert {param.values[0] for param in pinned_cases()} == set(BY_NAME) - gpu_only


def test_a_shown_config_pins_the_same_choice():
    x = randn(2, 16, 9, 11, dtype=torch.float16, channels_last=True)
    w = randn(24, 16, 3, 3, dtype=torch.float16)
    chosen = im2win.explain(x, w, padding=1).choice
    config = dict(chosen.config, VARIANT=chosen.variant.name)
    pinned = im2win.explain(x, w, padding=1, config=config).choice
    assert (pinned.variant, pinned.config, pinned.how) == (chosen.variant, chosen.config, "pinned")


def test_explain_shows_the_problem_and_the_choice():
    x, w = randn(2, 3, 9, 8), randn(4, 3, 3, 3)
    text = str(im2win.explain(x, w, padding=1))
    assert text.startswith("3x3 conv 3 -> 4 channels, 9x8 -> 9x8, batch 2, NCHW, ieee")
    assert "pointer (heuristic)" in text and "LOOP=flat" in text and "SPLIT_K=1" in text
    assert "reference" in str(im2win.explain(x, w, backend="reference"))
    assert "empty batch" in str(im2win.explain(randn(0, 3, 9, 8), w))


def test_staged_choices_show_their_chunks():
    problem = problem_of((40, 64, 28, 28), (128, 64, 3, 3), torch.bfloat16, padding=1)
    choice = variants.choose(problem, HOPPER)
    assert choice.variant.name == "staged-nchw" and choice.config["IMAGES"] == 40
    assert str(choice).splitlines()[1].startswith("  tma")  # the chunks' own choice
    staged = variants.choose(problem, HOPPER, config=dict(VARIANT="staged-nchw", IMAGES=16))
    # 16 images, then 8
    assert [c.variant.name for c in staged.inner] == ["tma", "tma"]


@pytest.mark.parametrize("dtype, precision", [(torch.bfloat16, None), (torch.float32, "tf32")])
def test_staged_chunks_never_take_the_strips_kernel(dtype, precision):
    """A chunk's input is channels-last but its output NCHW (written in place), and the strips
    kernel stores channels-last outputs only: it refuses the chunk, served with a channels-last
    output, and the chunks' choice falls on another kernel."""
    problem = problem_of((64, 128, 28, 28), (128, 128, 3, 3), dtype, precision, padding=1)
    staged = variants.choose(problem, HOPPER, config=dict(VARIANT="staged-nchw", IMAGES=64))
    chunk = problem.staged(64)
    assert chunk.channels_last and not chunk.output_channels_last
    assert not STRIPS.supports(chunk, HOPPER)
    assert STRIPS.supports(dataclasses.replace(chunk, output_channels_last=True), HOPPER)
    assert [c.variant.name for c in staged.inner] == ["tma"]


@pytest.mark.parametrize(
    "config, fragments",
    [
        (dict(VARIANT="fft"), ["config['VARIANT']", "packed-groups", "'fft'"]),
        (dict(VARIANT="packed-groups", BLOCK_M=64, BLOCK_G=1, num_warps=4, num_stages=1),
         ["'packed-groups'", "cannot serve", "ieee"]),
        (dict(VARIANT="staged-nchw", IMAGES=0), ["IMAGES", "int >= 1"]),
        (dict(VARIANT="depthwise", BLOCK_M=64, BLOCK_C=16, num_warps=4),
         ["BLOCK_Q", "channels-last", "BLOCK_M", "NCHW"]),
    ],
)  # fmt: skip
def test_bad_pinned_variants(config, fragments):
    x = randn(2, 4, 8, 8, channels_last=True)
    w = randn(4, 1, 3, 3)
    with pytest.raises(ValueError, match=".*".join(map(re.escape, fragments))):
        im2win.conv2d(x, w, groups=4, config=config)


def test_math_modes():
    assert MathMode.of(torch.float32) is MathMode.IEEE
    assert MathMode.of(torch.float32, "tf32x3").tier == "fp32"
    assert MathMode.of(torch.bfloat16).precision == "ieee"
    assert [m.tile_class for m in (MathMode.FP16, MathMode.BF16, MathMode.TF32)] == [
        "16bit", "16bit", "tf32",
    ]  # fmt: skip
    assert {m for m in MathMode if m.tensor_cores} == {MathMode.TF32, MathMode.FP16, MathMode.BF16}
    assert MathMode.TF32.max_rel_err == 2e-3 and MathMode.TF32X3.max_rel_err == 1e-5


def test_workspace_of_each_choice():
    x = torch.empty(40, 64, 28, 28, dtype=torch.bfloat16, device="meta")
    problem = problem_of(x.shape, (128, 64, 3, 3), torch.bfloat16, padding=1)
    staged = variants.choose(problem, HOPPER)
    assert staged.variant.workspace_bytes(problem, staged.config) == 40 * 64 * 28 * 28 * 2
    windows = variants.choose(problem, HOPPER, windows="materialized")
    window_tensor = 40 * 64 * 28 * 30 * 3 * 2  # N*C*P*Wp*R elements of 2 bytes
    assert windows.variant.workspace_bytes(problem, windows.config) == window_tensor


@pytest.mark.aten_choice
@pytest.mark.parametrize(
    "xshape, wshape, dtype, channels_last, runs",
    [
        ((64, 256, 14, 14), (256, 256, 3, 3), torch.bfloat16, True, "aten"),  # deep: cuDNN
        ((64, 64, 56, 56), (64, 64, 1, 1), torch.float32, False, "aten"),  # fp32 NCHW
        ((64, 3, 224, 224), (64, 3, 7, 7), torch.bfloat16, True, "im2win"),  # stem
        ((64, 64, 56, 56), (64, 64, 3, 3), torch.float32, True, "im2win"),  # fp32 NHWC
        ((64, 144, 56, 56), (144, 1, 3, 3), torch.float32, True, "aten"),  # fp32 depthwise 3x3
        ((64, 96, 56, 56), (96, 1, 7, 7), torch.float32, True, "im2win"),  # fp32 depthwise 7x7
    ],
)
def test_auto_hands_the_layers_cudnn_wins_to_aten(xshape, wshape, dtype, channels_last, runs):
    groups = xshape[1] if wshape[1] == 1 else 1
    problem = problem_of(xshape, wshape, dtype, channels_last=channels_last,
                         padding=wshape[2] // 2, groups=groups)  # fmt: skip
    choice = variants.choose(problem, HOPPER, aten=True)
    assert (choice.variant.name == "aten") == (runs == "aten")
    assert variants.choose(problem, HOPPER).variant.name != "aten"  # backend='triton'


RELU_ADD = Epilogue(activation="relu", residual="before")


@pytest.mark.aten_choice
@pytest.mark.parametrize(
    "xshape, wshape, dtype, groups, channels_last, epilogue, biased, runs",
    [
        ((64, 64, 56, 56), (256, 64, 1, 1), torch.bfloat16, 1, True, RELU_ADD, True, "im2win"),
        ((64, 256, 56, 56), (512, 256, 1, 1), torch.bfloat16, 1, True, NONE, True, "im2win"),
        ((64, 128, 28, 28), (128, 128, 3, 3), torch.float16, 1, True, Epilogue("relu"), False,
         "im2win"),
        ((64, 256, 14, 14), (256, 256, 3, 3), torch.bfloat16, 1, True, Epilogue("relu"), True,
         "im2win"),  # the strips kernel serves it
        ((64, 256, 14, 14), (256, 256, 3, 3), torch.bfloat16, 1, True, NONE, False, "aten"),
        ((64, 96, 56, 56), (96, 1, 3, 3), torch.bfloat16, 96, True, Epilogue("silu"), True,
         "aten"),
        ((64, 64, 56, 56), (256, 64, 1, 1), torch.float32, 1, True, RELU_ADD, True, "aten"),
        ((64, 64, 56, 56), (256, 64, 1, 1), torch.bfloat16, 1, False, RELU_ADD, True, "aten"),
    ],
)  # fmt: skip
def test_auto_fuses_16bit_dense_layers_with_a_bias_or_epilogue(
    xshape, wshape, dtype, groups, channels_last, epilogue, biased, runs
):
    """cuDNN adds a bias and runs an epilogue as passes of their own: in 16-bit a dense
    channels-last layer with either runs an im2win kernel, but the long 3x3 reductions the
    strips kernel does not serve (NCHW was not measured; float32 here is TF32)."""
    precision = "tf32" if dtype == torch.float32 else None
    plain = problem_of(xshape, wshape, dtype, precision, channels_last=channels_last,
                       padding=wshape[2] // 2, groups=groups)  # fmt: skip
    problem = dataclasses.replace(plain, epilogue=epilogue, biased=biased)
    chosen = variants.choose(problem, HOPPER, aten=True).variant.name
    assert (chosen == "aten") == (runs == "aten")


@pytest.mark.aten_choice
@pytest.mark.parametrize("hw, runs", [(28, "strips"), (27, "aten")])
def test_auto_takes_strided_fused_layers_the_strips_kernel_serves(hw, runs):
    """A fused 256-channel 3x3 layer at stride 2 runs the strips kernel; on a 27x27 input
    (which the stride does not divide: no parity view) it stays with cuDNN, the pointer
    kernel's main loop losing there more than the fused epilogue saves."""
    plain = problem_of((64, 256, hw, hw), (256, 256, 3, 3), torch.bfloat16, None,
                       channels_last=True, padding=1, stride=2)  # fmt: skip
    problem = dataclasses.replace(plain, epilogue=Epilogue("relu"), biased=True)
    assert variants.choose(problem, HOPPER, aten=True).variant.name == runs


@pytest.mark.parametrize(
    "dtype, precision, k, layout, serves",
    [(torch.bfloat16, None, 136, "channels_last", True),
     (torch.bfloat16, None, 102, "channels_last", False),  # rows of 204 bytes
     (torch.float32, "tf32", 102, "channels_last", False),  # 408
     (torch.float32, "tf32", 100, "channels_last", True),
     (torch.bfloat16, None, 136, "nchw", False)],
)  # fmt: skip
def test_strips_serves_only_outputs_its_tma_store_writes(dtype, precision, k, layout, serves):
    """The strips kernel stores through TMA only: a dense channels-last output (as a
    channels-last input's is) whose rows of K elements are 16-byte multiples."""
    problem = problem_of((64, 128, 28, 28), (k, 128, 3, 3), dtype, precision,
                         channels_last=layout == "channels_last", padding=1)  # fmt: skip
    assert STRIPS.supports(problem, HOPPER) == serves
    assert (variants.choose(problem, HOPPER).variant is STRIPS) == serves
    if not serves:
        tile = {key: HOPPER.table["strips"]["tiles"][-1][key] for key in STRIPS_KEYS}
        with pytest.raises(ValueError, match="variant 'strips' needs"):
            variants.choose(problem, HOPPER, config={"VARIANT": "strips", **tile})


@pytest.mark.parametrize(
    "c, stride, dtype, supported",
    [(888, 1, torch.bfloat16, True),  # RegNetY-016's 1x1: 14 blocks of 64, the last 56 full
     (72, (2, 1), torch.float16, True),  # rows at stride 2: a class of their own
     (888, 2, torch.bfloat16, False),  # columns at stride 2 share the channels of the view
     (68, 1, torch.float32, True),  # 272 bytes: 32-channel blocks, the last 4 full
     (100, 1, torch.bfloat16, False)],  # 200 bytes: not a multiple of 16
)  # fmt: skip
def test_strips_serves_channels_no_block_divides(c, stride, dtype, supported, monkeypatch):
    """TMA zero-fills the boxes past C: the kernel serves C of 16-byte multiples at unit
    column stride; the heuristic and autotuning take them only once the table allows."""
    precision = "tf32" if dtype == torch.float32 else None
    problem = problem_of((64, c, 14, 14), (256, c, 1, 1), dtype, precision, channels_last=True,
                         stride=stride)  # fmt: skip
    assert STRIPS.supports(problem, HOPPER) == supported
    if supported:
        assert STRIPS.heuristic(problem, HOPPER) is None and not STRIPS.candidates(problem, HOPPER)
        monkeypatch.setitem(HOPPER.table["strips"], "ragged_max_padding", 1.0)  # any zeros
        assert STRIPS.heuristic(problem, HOPPER) is not None
        assert STRIPS.candidates(problem, HOPPER)


@pytest.mark.parametrize("c, takes", [(888, True), (160, True), (96, False), (40, False)])
def test_strips_takes_ragged_channels_up_to_a_share_of_zeros(c, takes, monkeypatch):
    """With `ragged_max_padding` 0.25: 888 channels pad to 896, 160 to 192 (20%); 96 to 128
    (33%) and 40 to 64 are left to the other kernels."""
    monkeypatch.setitem(HOPPER.table["strips"], "ragged_max_padding", 0.25)
    problem = problem_of((64, c, 14, 14), (256, c, 1, 1), torch.bfloat16, None,
                         channels_last=True)  # fmt: skip
    assert (STRIPS.heuristic(problem, HOPPER) is not None) == takes


@pytest.mark.parametrize(
    "xshape, k, rs, stride, dtype, precision, tile",
    [((32, 256, 56, 56), 512, 1, 2, torch.bfloat16, None, (4, 16, 256)),  # l2 downsample
     ((128, 512, 28, 28), 1024, 1, 2, torch.float16, None, (4, 16, 256)),  # l3
     ((128, 1024, 14, 14), 2048, 1, 2, torch.bfloat16, None, (8, 8, 256)),  # l4: 7x7 out
     ((32, 256, 56, 56), 512, 1, 2, torch.float32, "tf32", (8, 16, 128)),
     ((32, 256, 56, 56), 512, 1, 1, torch.bfloat16, None, (8, 16, 128)),
     ((32, 128, 56, 56), 128, 3, 2, torch.bfloat16, None, (8, 16, 128))],
)  # fmt: skip
def test_strips_tiles_of_strided_1x1_layers(xshape, k, rs, stride, dtype, precision, tile):
    """ResNet-50's downsampling 1x1s in 16-bit take 4 x 16 x 256 tiles (7-13% faster than
    8 x 16 x 128 on the H200); tf32, unit stride and 3x3 keep theirs."""
    problem = problem_of(xshape, (k, xshape[1], rs, rs), dtype, precision, channels_last=True,
                         stride=stride, padding=rs // 2)  # fmt: skip
    config = STRIPS.heuristic(problem, HOPPER)
    assert (config["BLOCK_P"], config["BLOCK_Q"], config["BLOCK_N"]) == tile


@pytest.mark.parametrize(
    "xshape, wshape, dtype, tile",
    [((128, 96, 27, 27), (256, 96, 5, 5), torch.float32, (8, 8, 256)),  # conv5
     ((32, 64, 56, 56), (256, 64, 1, 1), torch.float32, (8, 8, 256)),  # ResNet-50 l1 1x1
     ((128, 128, 28, 28), (512, 128, 1, 1), torch.float32, (8, 16, 128)),  # l2: C = 128
     ((128, 64, 56, 56), (256, 64, 1, 1), torch.bfloat16, (8, 16, 128))],
)  # fmt: skip
def test_strips_tiles_of_tf32_layers_with_few_input_channels(xshape, wshape, dtype, tile):
    """tf32 layers of KG >= 256 from at most 96 channels take 8 x 8 x 256 tiles (conv5 23%
    and ResNet-50's l1 1x1 11% faster than 8 x 16 x 128 on the H200); 16-bit keeps its."""
    precision = "tf32" if dtype == torch.float32 else None
    problem = problem_of(xshape, wshape, dtype, precision, channels_last=True)
    config = STRIPS.heuristic(problem, HOPPER)
    assert (config["BLOCK_P"], config["BLOCK_Q"], config["BLOCK_N"]) == tile


@pytest.mark.parametrize("batch, tile", [(128, (8, 8, 256)), (32, (8, 8, 128)), (1, None)])
def test_strips_passes_over_a_tile_whose_grid_is_too_small(batch, tile):
    """ResNet-50's last 1x1 reduction (2048 -> 512 channels on 7x7 maps): 8 x 8 x 256 tiles
    at batch 128; at batch 32 those make 64 tiles, under half the SMs, and the next entry's
    x 128 make 128; at batch 1 none makes enough."""
    problem = problem_of((batch, 2048, 7, 7), (512, 2048, 1, 1), torch.bfloat16, None,
                         channels_last=True)  # fmt: skip
    config = STRIPS.heuristic(problem, HOPPER)
    got = None if config is None else (config["BLOCK_P"], config["BLOCK_Q"], config["BLOCK_N"])
    assert got == tile


@pytest.mark.parametrize(
    "xshape, stride, serves",
    [((64, 128, 28, 28), 1, True), ((1, 128, 28, 28), 1, False), ((128, 28, 28), 1, False),
     ((64, 128, 28, 28), 2, True), ((64, 128, 27, 27), 2, False)],
)  # fmt: skip
def test_a_traced_call_asks_the_strips_kernel_as_the_plan_does(xshape, stride, serves):
    """Under torch.compile a fused call is traced as the fused operator where the strips
    kernel would run it: shapes and strides say so as the plan's choice would (batch 64 and
    a stride dividing the input: yes; batch 1, unbatched, 27x27 at stride 2: no)."""
    if len(xshape) == 4:
        x = torch.empty(xshape, dtype=torch.bfloat16, device="meta")
        x = x.to(memory_format=torch.channels_last)
    else:  # unbatched, channels innermost
        x = torch.empty((*xshape[1:], xshape[0]), dtype=torch.bfloat16, device="meta")
        x = x.permute(2, 0, 1)
    w = torch.empty((128, 128, 3, 3), dtype=torch.bfloat16, device="meta")
    params = conv_params(stride=stride, padding=1, kernel_size=(3, 3))
    assert strips_would_serve(x, w, params, MathMode.BF16, HOPPER) == serves
    if x.dim() == 4:
        problem = problem_of(xshape, w.shape, torch.bfloat16, channels_last=True, padding=1,
                             stride=stride)  # fmt: skip
        assert (variants.choose(problem, HOPPER).variant is STRIPS) == serves


@pytest.mark.parametrize("batch, tile", [(64, (128, 128, 8)), (1, (64, 128, 4))])
def test_pointer_takes_wide_tiles_on_16bit_3x3_layers_that_fill_the_gpu(batch, tile):
    """128x128 tiles (8 warps) once they make two waves on the SMs, else the table's."""
    problem = problem_of((batch, 128, 28, 28), (128, 128, 3, 3), torch.bfloat16,
                         channels_last=True, padding=1)  # fmt: skip
    config = variants.POINTER.heuristic(problem, HOPPER)
    assert (config["BLOCK_M"], config["BLOCK_N"], config["num_warps"]) == tile


@pytest.mark.parametrize("batch, runs", [(64, True), (1, False)])
def test_strips_wants_half_a_wave_of_tiles(batch, runs):
    """ResNet-50's 3x3 128-channel layer: 512 tiles at batch 64 take the strips kernel; 8
    at batch 1, under half the SMs, leave it to kernels with split-K."""
    problem = problem_of((batch, 128, 28, 28), (128, 128, 3, 3), torch.bfloat16, None,
                         channels_last=True, padding=1)  # fmt: skip
    assert STRIPS.supports(problem, HOPPER)
    assert (STRIPS.heuristic(problem, HOPPER) is not None) == runs
    assert (variants.choose(problem, HOPPER).variant is STRIPS) == runs
