"""Bad arguments raise ValueError or TypeError naming the parameter and the bad value."""

import re

import pytest
import torch

import im2win
from helpers import DEVICE, randn

X = (2, 4, 8, 8)  # input shape
W = (6, 4, 3, 3)  # weight shape


def call(x=X, w=W, b=None, **kwargs):
    """conv2d on fresh tensors: shapes become randn tensors, anything else is passed as is."""
    x, w, b = (randn(*t) if isinstance(t, tuple) else t for t in (x, w, b))
    return im2win.conv2d(x, w, b, **kwargs)


CONFIG = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1)

# id: (call arguments, exception, every fragment the message must contain)
ERRORS = {
    "input_2d": (dict(x=(4, 8)), ValueError, ["input", "2-D", "(4, 8)"]),
    "input_5d": (dict(x=(1, 2, 4, 8, 8)), ValueError, ["input", "5-D"]),
    "weight_3d": (dict(w=(6, 4, 3)), ValueError, ["weight", "3-D", "(6, 4, 3)"]),
    "bias_2d": (dict(b=(6, 1)), ValueError, ["bias", "2-D", "(6, 1)"]),
    "bias_wrong_length": (dict(b=(5,)), ValueError, ["bias", "(6,)", "(5,)"]),
    "channel_mismatch": (dict(w=(6, 3, 3, 3)), ValueError, ["weight.shape[1]", "4", "3"]),
    "grouped_channel_mismatch": (
        dict(w=(6, 4, 3, 3), groups=2),
        ValueError,
        ["groups=2", "weight.shape[1]", "2", "4"],
    ),
    "groups_not_dividing_c": (
        dict(w=(6, 1, 3, 3), groups=3),
        ValueError,
        ["groups=3", "input channels", "4"],
    ),
    "groups_not_dividing_k": (
        dict(w=(5, 2, 3, 3), groups=2),
        ValueError,
        ["groups=2", "output channels", "5"],
    ),
    "groups_zero": (dict(groups=0), ValueError, ["groups", "0"]),
    "groups_negative": (dict(groups=-2), ValueError, ["groups", "-2"]),
    "groups_float": (dict(groups=1.0), TypeError, ["groups", "1.0"]),
    "groups_bool": (dict(groups=True), TypeError, ["groups", "True"]),
    "weight_no_kernel": (dict(w=(6, 4, 0, 3)), ValueError, ["weight", "(6, 4, 0, 3)"]),
    "stride_zero": (dict(stride=0), ValueError, ["stride", "0"]),
    "stride_negative": (dict(stride=(1, -2)), ValueError, ["stride", "(1, -2)"]),
    "stride_float": (dict(stride=1.5), TypeError, ["stride", "1.5"]),
    "stride_three": (dict(stride=(1, 1, 1)), TypeError, ["stride", "(1, 1, 1)"]),
    "dilation_zero": (dict(dilation=(0, 1)), ValueError, ["dilation", "(0, 1)"]),
    "dilation_negative": (dict(dilation=-1), ValueError, ["dilation", "-1"]),
    "padding_negative": (dict(padding=-1), ValueError, ["padding", "-1"]),
    "padding_negative_pair": (dict(padding=(0, -3)), ValueError, ["padding", "(0, -3)"]),
    "padding_same_strided": (
        dict(padding="same", stride=2),
        ValueError,
        ["padding='same'", "stride", "(2, 2)"],
    ),
    "padding_unknown": (dict(padding="full"), ValueError, ["padding", "'full'"]),
    "output_empty": (dict(x=(1, 4, 2, 8)), ValueError, ["output would be empty", "2x8", "3x3"]),
    "output_empty_dilated": (dict(dilation=4), ValueError, ["output would be empty", "9x9"]),
    "precision_unknown": (dict(precision="fp8"), ValueError, ["precision", "'fp8'"]),
    "precision_case": (dict(precision="TF32"), ValueError, ["precision", "'TF32'"]),
    "backend_unknown": (dict(backend="cudnn"), ValueError, ["backend", "'cudnn'"]),
    "config_missing_key": (
        dict(config={"BLOCK_M": 16}),
        ValueError,
        ["config", "BLOCK_N", "['BLOCK_M']"],
    ),
    "config_extra_key": (dict(config=dict(CONFIG, GROUP_M=8)), ValueError, ["config", "GROUP_M"]),
    "config_block_not_pow2": (
        dict(config=dict(CONFIG, BLOCK_M=24)),
        ValueError,
        ["config['BLOCK_M']", "24"],
    ),
    "config_block_small": (
        dict(config=dict(CONFIG, BLOCK_K=8)),
        ValueError,
        ["config['BLOCK_K']", "8"],
    ),
    "config_block_str": (
        dict(config=dict(CONFIG, BLOCK_N="32")),
        ValueError,
        ["config['BLOCK_N']", "'32'"],
    ),
    "config_loop_unknown": (
        dict(config=dict(CONFIG, LOOP="rows")),
        ValueError,
        ["config['LOOP']", "'rows'"],
    ),
    "config_block_q_without_tma": (
        dict(config=dict(CONFIG, BLOCK_Q=8)),
        ValueError,
        ["config['BLOCK_Q']", "'tma'"],
    ),
    "config_block_q_over_m": (
        dict(config=dict(CONFIG, LOOP="tma", BLOCK_Q=32)),
        ValueError,
        ["config['BLOCK_Q']", "BLOCK_M", "32"],
    ),
    "config_split_k_zero": (
        dict(config=dict(CONFIG, SPLIT_K=0)),
        ValueError,
        ["config['SPLIT_K']", "1 to 64", "0"],
    ),
    "config_split_k_float": (
        dict(config=dict(CONFIG, SPLIT_K=2.0)),
        ValueError,
        ["config['SPLIT_K']", "2.0"],
    ),
    "config_tma_nchw": (  # TMA needs channels innermost
        dict(x=(2, 16, 8, 8), w=(6, 16, 3, 3), config=dict(CONFIG, LOOP="tma")),
        ValueError,
        ["LOOP 'tma'", "channels-last", "stride"],
    ),
    "config_tma_block_k": (  # a channel block may not straddle two taps
        dict(
            x=randn(1, 48, 6, 6, channels_last=True),
            w=(4, 48, 3, 3),
            config=dict(CONFIG, LOOP="tma", BLOCK_K=32),
        ),
        ValueError,
        ["'tma'", "BLOCK_K", "Cg=48", "32"],
    ),  # fmt: skip
    "config_tma_box_too_tall": (  # a TMA box spans at most 256 elements a dimension
        dict(
            x=randn(1, 16, 6, 6, channels_last=True),
            w=(4, 16, 3, 3),
            config=dict(CONFIG, LOOP="tma", BLOCK_M=512, BLOCK_Q=1),
        ),
        ValueError,
        ["'tma'", "256", "'BLOCK_P': 512"],
    ),
    "config_tma_stride_not_dividing": (  # the strided view must tile the input exactly
        dict(
            x=randn(1, 16, 7, 8, channels_last=True),
            w=(4, 16, 3, 3),
            stride=2,
            config=dict(CONFIG, LOOP="tma"),
        ),
        ValueError,
        ["LOOP 'tma'", "divides its H x W", "stride=(2, 2)", "(1, 16, 7, 8)"],
    ),
    "config_raster_strided": (  # a run of the input grid steps one pixel at a time
        dict(
            x=randn(1, 16, 8, 8, channels_last=True),
            w=(4, 16, 3, 3),
            stride=2,
            config=dict(CONFIG, LOOP="tma_raster"),
        ),
        ValueError,
        ["'tma_raster'", "unit-stride", "stride=(2, 2)"],
    ),
    "config_raster_padded": (  # a run of the input grid cannot see the padding
        dict(
            x=randn(1, 16, 6, 6, channels_last=True),
            w=(4, 16, 3, 3),
            padding=1,
            config=dict(CONFIG, LOOP="tma_raster"),
        ),
        ValueError,
        ["'tma_raster'", "unpadded", "padding=(1, 1, 1, 1)"],
    ),
    "input_not_tensor": (dict(x=[[1.0]]), TypeError, ["input", "list"]),
    "weight_not_tensor": (dict(w=3.0), TypeError, ["weight", "float"]),
    "bias_not_tensor": (dict(b=[0.0] * 6), TypeError, ["bias", "list"]),
}


@pytest.mark.parametrize("kwargs, exc, fragments", ERRORS.values(), ids=ERRORS.keys())
def test_bad_argument(kwargs, exc, fragments):
    with pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments)):
        call(**kwargs)


f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16

# id: ((input, weight, bias) dtypes, every fragment the message must contain)
DTYPE_ERRORS = {
    "weight_fp16_input_fp32": ((f32, f16, None), ["weight", "float16", "input", "float32"]),
    "bias_fp32_input_fp16": ((f16, f16, f32), ["bias", "float32", "input", "float16"]),
    "weight_fp16_input_bf16": ((bf16, f16, None), ["weight", "float16", "bfloat16"]),
    "input_int32": ((torch.int32, torch.int32, None), ["input", "floating", "int32"]),
    "input_bool": ((torch.bool, f32, None), ["input", "floating", "bool"]),
    "weight_int32": ((f32, torch.int32, None), ["weight", "floating", "int32"]),
    "bias_int64": ((f32, f32, torch.int64), ["bias", "floating", "int64"]),
}


@pytest.mark.parametrize("dtypes, fragments", DTYPE_ERRORS.values(), ids=DTYPE_ERRORS.keys())
def test_bad_dtype(dtypes, fragments):
    x, w, b = (
        None if d is None else randn(*s).to(d) for s, d in zip((X, W, (6,)), dtypes, strict=True)
    )
    with pytest.raises(TypeError, match=".*".join(re.escape(f) for f in fragments)):
        im2win.conv2d(x, w, b)


def test_paper_backend_needs_cuda():
    if DEVICE == "cuda":
        pytest.skip("on a GPU the paper backend runs: test_gpu.py checks it")
    with pytest.raises(ValueError, match=r"backend='paper'.*CUDA.*cpu"):
        im2win.conv2d(randn(*X), randn(*W), backend="paper")


def test_float64_runs_only_on_the_reference_backend():
    x, w = randn(*X, dtype=torch.float64), randn(*W, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"input dtype.*torch\.float64"):
        im2win.conv2d(x, w, backend="triton")
    assert im2win.explain(x, w).backend == "reference"  # 'auto' on every device


@pytest.mark.parametrize("precision", ["tf32", "tf32x3"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_precision_needs_float32(precision, dtype):
    x, w = randn(*X, dtype=dtype), randn(*W, dtype=dtype)
    with pytest.raises(ValueError, match=rf"precision='{precision}'.*{dtype}"):
        im2win.conv2d(x, w, precision=precision)


@pytest.mark.parametrize("which", ["weight", "bias"])
def test_device_mismatch(which):
    x, w, b = randn(*X), randn(*W), randn(6)
    if which == "weight":
        w = w.to("meta")
    else:
        b = b.to("meta")
    with pytest.raises(ValueError, match=rf"{which} is on meta but input is on {DEVICE}"):
        im2win.conv2d(x, w, b)


@pytest.mark.parametrize(
    "bad", [dict(num_warps=3), dict(num_warps=0), dict(num_stages=-1), dict(num_warps="4")]
)
def test_config_bad_warps_or_stages(bad):
    name, value = next(iter(bad.items()))
    with pytest.raises(ValueError, match=rf"config\['{name}'\].*{re.escape(repr(value))}"):
        call(config=dict(CONFIG, **bad))


TRANSFORM_ERRORS = {
    "rank3": (lambda: im2win.transform(randn(4, 8, 8), 3), ValueError, ["x", "4-D", "3-D"]),
    "int32": (lambda: im2win.transform(randn(1, 2, 5, 5).int(), 3), TypeError, ["x", "int32"]),
    "kernel_zero": (lambda: im2win.transform(randn(1, 2, 5, 5), 0), ValueError,
                    ["kernel_size", "0"]),
    "stride_zero": (lambda: im2win.transform(randn(1, 2, 5, 5), 3, stride=0), ValueError,
                    ["stride", "0"]),
    "padding_negative": (lambda: im2win.transform(randn(1, 2, 5, 5), 3, padding=-1), ValueError,
                         ["padding", "-1"]),
    "empty": (lambda: im2win.transform(randn(1, 2, 2, 5), 3), ValueError,
              ["output would be empty", "(2, 5)"]),
    "not_tensor": (lambda: im2win.transform("x", 3), TypeError, ["x", "str"]),
    "filter_rank2": (lambda: im2win.transform_filter(randn(3, 3)), ValueError,
                     ["weight", "4-D", "2-D"]),
}  # fmt: skip


@pytest.mark.parametrize("fn, exc, fragments", TRANSFORM_ERRORS.values(), ids=TRANSFORM_ERRORS)
def test_transform_bad_argument(fn, exc, fragments):
    with pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments)):
        fn()


def test_bad_windows():
    with pytest.raises(ValueError, match=r"windows.*'buffered'"):
        call(windows="buffered")
