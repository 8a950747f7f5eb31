"""Autotuning: every candidate config is correct on odd shapes; the cache picks and keeps."""

from __future__ import annotations

import json

import pytest
import torch

import im2win
from helpers import TOL, assert_close, randn, reference, tolerance
from im2win.kernels import tuning

# (input shape, weight shape, conv kwargs): odd sizes, C = 3 (flat loop) and C = 17
# (channels loop, a channel block with a tail), padding (masked windows), batch 1.
CASES = {
    "c3_13x11_k5_3x3_p1": ((1, 3, 13, 11), (5, 3, 3, 3), dict(padding=1)),
    "c17_7x9_k19_2x3_s2": ((2, 17, 7, 9), (19, 17, 2, 3), dict(stride=2, padding=(1, 0))),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_every_candidate_is_correct(dtype, case, channels_last):
    torch.manual_seed(3)
    xshape, wshape, kw = CASES[case]
    x = randn(*xshape, dtype=dtype, channels_last=channels_last)
    w, b = randn(*wshape, dtype=dtype), randn(wshape[0], dtype=dtype)
    ref = reference(x, w, b, **kw)
    for config in tuning.candidate_configs(dtype):
        for windows in ("streamed", "materialized"):
            y = im2win.conv2d(x, w, b, **kw, windows=windows, config=config)
            assert_close(y, ref, TOL[dtype])


@pytest.mark.parametrize("padding", [1, 0], ids=["window", "raster"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_every_tma_candidate_is_correct(dtype, padding):
    # Cg = 64 (full channel blocks in both widths), a ragged 9x11 input, bias; unpadded,
    # the raster tiles too.
    torch.manual_seed(4)
    x = randn(2, 64, 9, 11, dtype=dtype, channels_last=True)
    w, b = randn(20, 64, 3, 3, dtype=dtype), randn(20, dtype=dtype)
    ref = reference(x, w, b, padding=padding)
    block_k = im2win.kernels.tma_block_k(64, dtype)
    configs = tuning.tma_candidate_configs(block_k, raster=padding == 0)
    assert any(c["LOOP"] == "tma_raster" for c in configs) == (padding == 0)
    for config in configs:
        y = im2win.conv2d(x, w, b, padding=padding, config=config)
        assert_close(y, ref, TOL[dtype])


@pytest.mark.parametrize(
    "kg, reduction, dtype, precision, layout, tile",
    [
        (96, 363, torch.bfloat16, "ieee", "NHWC", (256, 128, 32, 8)),  # conv1
        (96, 363, torch.float32, "tf32", "NCHW", (256, 128, 32, 8)),
        (96, 363, torch.float32, "ieee", "NHWC", (128, 128, 32, 4)),  # FMA
        (96, 363, torch.float32, "tf32x3", "NCHW", (128, 128, 16, 8)),
        (96, 363, torch.float32, "tf32x3", "NHWC", (128, 64, 16, 4)),
        (64, 147, torch.float32, "tf32x3", "NHWC", (64, 64, 16, 4)),  # conv3
        (64, 147, torch.float32, "ieee", "NCHW", (128, 64, 32, 4)),  # the default kept
        (64, 147, torch.float32, "ieee", "NHWC", (128, 64, 16, 4)),
        (32, 147, torch.float32, "tf32x3", "NHWC", (128, 32, 32, 4)),  # KG 32: not measured
        (96, 363, torch.bfloat16, "ieee", None, (64, 128, 32, 4)),  # not a stem
        (64, 27, torch.float32, "tf32", "NCHW", (128, 64, 16, 4)),  # conv7
        (64, 147, torch.bfloat16, "ieee", "NHWC", (128, 64, 16, 4)),  # conv3
        (64, 147, torch.bfloat16, "ieee", "NCHW", (128, 64, 32, 4)),
        (64, 600, torch.bfloat16, "ieee", "NHWC", (128, 64, 64, 4)),  # a long reduction
    ],
)
def test_stem_tiles(kg, reduction, dtype, precision, layout, tile):
    config = tuning.conv2d_fwd_config(128 * 55 * 55, kg, reduction, dtype, False, precision,
                                      stem_layout=layout)  # fmt: skip
    assert (config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"], config["num_warps"]) == tile


def test_candidates_are_valid_configs():
    for dtype in (torch.float32, torch.bfloat16):
        for config in tuning.candidate_configs(dtype):
            assert tuning.check_config(config) == config
    for config in tuning.tma_candidate_configs(64, raster=True):
        assert tuning.check_config(config) == config


@pytest.mark.parametrize(
    "p, q, kg, tile",
    [
        (7, 7, 512, (8, 8, 256)),  # ResNet-50 stage 4
        (14, 14, 256, (8, 8, 256)),  # stage 3: 8x8 and 4x16 waste alike
        (12, 12, 256, (4, 16, 256)),  # conv11: 4x16 wastes least
        (7, 7, 128, (8, 8, 128)),  # too few channels for 256
        (28, 28, 256, (4, 16, 256)),  # 4x16 wastes least
        (56, 56, 512, (8, 8, 256)),
        (28, 28, 128, (4, 32, 128)),
        (5, 5, 512, None),  # 64-pixel tiles waste over a quarter: the pointer kernel
    ],
)
def test_many_output_channels_take_64_by_256_tiles(p, q, kg, tile):
    config = tuning.tma_config(p, q, kg, 64, torch.bfloat16, "ieee", True, 9, interpreted=False)
    got = None if config is None else (config["BLOCK_M"] // config["BLOCK_Q"],
                                       config["BLOCK_Q"], config["BLOCK_N"])  # fmt: skip
    assert got == tile


@pytest.mark.parametrize(
    "p, q, kg, rs, dtype, tile",
    [
        (26, 26, 128, 3, torch.bfloat16, (128, 128, 8)),  # conv10: unpadded 3x3
        (12, 12, 256, 3, torch.float32, (128, 128, 4)),  # conv11 in tf32
        (10, 10, 512, 3, torch.float32, (128, 256, 8)),  # conv6 in tf32: KG >= 512
        (54, 54, 64, 3, torch.bfloat16, (128, 64, 4)),  # conv9: KG <= 64
        (14, 14, 1024, 1, torch.bfloat16, (128, 128, 8)),  # 1x1: window tiles waste 23%
        (7, 7, 2048, 1, torch.float16, (128, 128, 8)),
        (28, 28, 256, 1, torch.bfloat16, "tma"),  # 1x1: window tiles waste 12%
        (14, 14, 1024, 1, torch.float32, "tma"),  # tf32 1x1: no steady win measured
        (5, 5, 512, 3, torch.bfloat16, None),  # conv12: a run wastes half (pointer kernel)
    ],
)
def test_unpadded_layers_take_raster_tiles(p, q, kg, rs, dtype, tile):
    h, w = p + rs - 1, q + rs - 1
    block_k = 64 if dtype.itemsize == 2 else 32
    precision = "tf32" if dtype == torch.float32 else "ieee"
    config = tuning.tma_config(p, q, kg, block_k, dtype, precision, False, rs * rs,
                               interpreted=False, raster_hw=(h, w))  # fmt: skip
    if tile is None or tile == "tma":
        assert (config and config["LOOP"]) == tile
    else:
        assert config["LOOP"] == "tma_raster" and "BLOCK_Q" not in config
        assert (config["BLOCK_M"], config["BLOCK_N"], config["num_warps"]) == tile


@pytest.mark.parametrize(
    "p, q, kg, block_k, tile",
    [
        (109, 109, 64, 32, (16, 16, 64)),  # conv4: 32-channel blocks, 256 x 64 tiles
        (28, 28, 512, 64, (4, 16, 256)),  # ResNet-50 l2-down-s2
        (28, 28, 128, 64, (4, 32, 128)),  # l2-3x3-s2
        (14, 14, 1024, 64, None),  # l3-down-s2: narrower outputs stay on the pointer kernel
        (7, 7, 512, 64, None),  # l4-3x3-s2
    ],
)
def test_strided_layers_take_window_tiles_on_wide_outputs(p, q, kg, block_k, tile):
    config = tuning.tma_config(p, q, kg, block_k, torch.bfloat16, "ieee", False, 9,
                               interpreted=False, strided=True)  # fmt: skip
    got = config and (config["BLOCK_M"] // config["BLOCK_Q"], config["BLOCK_Q"],
                      config["BLOCK_N"])  # fmt: skip
    assert got == tile and (config is None or config["LOOP"] == "tma")


@pytest.mark.parametrize(
    "pixels, kg, efficiency, dtype, precision, wide",
    [
        (128 * 20 * 20, 256, 400 / 576, torch.float32, "tf32", True),  # conv5: raster tiles
        (128 * 10 * 10, 512, 100 / 144, torch.float32, "tf32", True),  # conv6: 200 tiles
        (128 * 7 * 7, 2048, 49 / 64, torch.float32, "tf32", True),  # l4-1x1-2048
        (128 * 12 * 12, 256, 144 / 196, torch.float32, "tf32", False),  # conv11: 144 tiles
        (128 * 14 * 14, 256, 196 / 256, torch.float32, "tf32", False),  # 196 tiles lost too
        (128 * 28 * 28, 256, 784 / 896, torch.float32, "tf32", False),  # wastes an eighth
        (128 * 20 * 20, 128, 400 / 576, torch.float32, "tf32", False),  # half a tile idle
        (128 * 20 * 20, 256, 400 / 576, torch.bfloat16, "ieee", False),  # lost in 16-bit
        (128 * 20 * 20, 256, 400 / 576, torch.float32, "tf32x3", False),  # not measured
    ],
)
def test_wide_pointer_tiles_replace_wasteful_tma_tiles(pixels, kg, efficiency, dtype,
                                                       precision, wide):  # fmt: skip
    config = tuning.wide_pointer_tiles(pixels, kg, efficiency, dtype, precision, sms=132)
    assert config == (tuning.WIDE_POINTER_TILES if wide else None)


def test_tma_efficiency_counts_what_each_tile_kind_computes():
    raster = dict(LOOP="tma_raster", BLOCK_M=128)
    assert tuning.tma_efficiency(raster, 20, 20, (24, 24)) == 400 / 576
    window = dict(LOOP="tma", BLOCK_M=64, BLOCK_Q=16)
    assert tuning.tma_efficiency(window, 12, 12, None) == 144 / (12 * 16)


def test_wide_pointer_tiles_are_correct():
    # The rule's tiles pinned on a ragged tf32 case (exact fp32 under the interpreter), bias.
    torch.manual_seed(5)
    x = randn(2, 40, 9, 7, channels_last=True)
    w, b = randn(260, 40, 3, 3), randn(260)
    y = im2win.conv2d(x, w, b, precision="tf32", config=tuning.WIDE_POINTER_TILES)
    assert_close(y, reference(x, w, b), tolerance(torch.float32, "tf32"))


def test_shape_class_rounds_sizes_to_powers_of_two():
    assert tuning.shape_class(387200, 96, 363, "bf16") == "524288|128|512|bf16"
    assert tuning.shape_class(300000, 65, 300, "bf16") == tuning.shape_class(
        387200, 96, 363, "bf16"
    )


def test_tuned_config_measures_once_then_reads_the_cache(tmp_path):
    cache = tuning.TuningCache(tmp_path / "sub" / "tuning.json")
    candidates = [dict(BLOCK_M=m) for m in (16, 32, 64)]
    timings = {16: 3.0, 32: 1.0, 64: 2.0}
    measured = []

    def measure(config):
        measured.append(config["BLOCK_M"])
        return timings[config["BLOCK_M"]]

    assert tuning.tuned_config("k", candidates, measure, cache) == dict(BLOCK_M=32)
    assert measured == [16, 32, 64]
    assert tuning.tuned_config("k", candidates, measure, cache) == dict(BLOCK_M=32)
    assert measured == [16, 32, 64]  # no second search
    on_disk = json.loads((tmp_path / "sub" / "tuning.json").read_text())
    assert on_disk == {"k": {"BLOCK_M": 32}}
    # A new process reads it back without measuring.
    fresh = tuning.TuningCache(tmp_path / "sub" / "tuning.json")
    assert tuning.tuned_config("k", candidates, measure, fresh) == dict(BLOCK_M=32)
    assert measured == [16, 32, 64]


def test_tuned_config_skips_candidates_that_fail(tmp_path):
    cache = tuning.TuningCache(tmp_path / "tuning.json")

    def measure(config):
        if config["BLOCK_M"] == 16:
            raise RuntimeError("out of resources: shared memory")
        return config["BLOCK_M"]

    candidates = [dict(BLOCK_M=m) for m in (16, 32, 64)]
    assert tuning.tuned_config("k", candidates, measure, cache) == dict(BLOCK_M=32)
    with pytest.raises(RuntimeError, match="no candidate config could run"):
        tuning.tuned_config("other", candidates[:1], measure, cache)


def test_unreadable_cache_warns_and_starts_empty(tmp_path):
    path = tmp_path / "tuning.json"
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="ignoring unreadable tuning cache"):
        assert tuning.TuningCache(path).get("k") is None


@pytest.mark.gpu
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_autotune_on_gpu_is_correct_and_cached(tmp_path, monkeypatch, channels_last):
    """IM2WIN_AUTOTUNE=1: the first call searches, stores its choice, and is still correct."""
    monkeypatch.setenv("IM2WIN_AUTOTUNE", "1")
    monkeypatch.setattr(tuning, "CACHE", tuning.TuningCache(tmp_path / "tuning.json"))
    torch.manual_seed(4)
    x = randn(8, 32, 15, 17, dtype=torch.bfloat16, channels_last=channels_last)
    w = randn(48, 32, 3, 3, dtype=torch.bfloat16)
    for _ in range(2):
        y = im2win.conv2d(x, w, padding=1)
        assert_close(y, reference(x, w, padding=1), 5e-3)
    entries = json.loads((tmp_path / "tuning.json").read_text())
    assert len(entries) == 1
    allowed = [dict(c, LOOP="channels") for c in tuning.candidate_configs(torch.bfloat16)]
    allowed += tuning.tma_candidate_configs(32) if channels_last else []  # padded: no raster
    assert next(iter(entries.values())) in allowed
