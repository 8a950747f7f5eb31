"""Tuning: the heuristics' picks on Hopper's table, the tables themselves, and autotuning
(every candidate correct on odd shapes; the search picks, keeps and reuses)."""

from __future__ import annotations

import json

import pytest
import torch

import im2win
from helpers import (
    HOPPER,
    TOL,
    assert_close,
    current_target,
    problem_of,
    randn,
    reference,
    tolerance,
)
from im2win import tuning, variants
from im2win.variants import pointer, tma
from im2win.variants.pointer_wide import POINTER_WIDE

# (input shape, weight shape, conv kwargs): odd sizes, C = 3 (flat loop) and C = 17
# (channels loop, a channel block with a tail), padding (masked windows), batch 1.
CASES = {
    "c3_13x11_k5_3x3_p1": ((1, 3, 13, 11), (5, 3, 3, 3), dict(padding=1)),
    "c17_7x9_k19_2x3_s2": ((2, 17, 7, 9), (19, 17, 2, 3), dict(stride=2, padding=(1, 0))),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_every_pointer_candidate_is_correct(dtype, case, channels_last):
    torch.manual_seed(3)
    xshape, wshape, kw = CASES[case]
    x = randn(*xshape, dtype=dtype, channels_last=channels_last)
    w, b = randn(*wshape, dtype=dtype), randn(wshape[0], dtype=dtype)
    ref = reference(x, w, b, **kw)
    problem = problem_of(xshape, wshape, dtype, channels_last=channels_last, **kw)
    for variant in (pointer.POINTER, pointer.POINTER_MATERIALIZED):
        for config in variant.candidates(problem, current_target()):
            y = im2win.conv2d(x, w, b, **kw, windows=variant.windows, config=config)
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
    problem = problem_of(x.shape, w.shape, dtype, channels_last=True, padding=padding)
    eligible = [v for v in (tma.TMA_RASTER, tma.TMA_WINDOW) if v.supports(problem, HOPPER)]
    assert (tma.TMA_RASTER in eligible) == (padding == 0)
    for variant in eligible:
        for config in variant.candidates(problem, HOPPER):
            y = im2win.conv2d(x, w, b, padding=padding, config=config)
            assert_close(y, ref, TOL[dtype])


def stem(c, k, rs, stride, dtype=torch.float32, precision=None, layout="NCHW", hw=227):
    return problem_of((128, c, hw, hw), (k, c, rs, rs), dtype, precision,
                      channels_last=layout == "NHWC", stride=stride)  # fmt: skip


@pytest.mark.parametrize(
    "problem, is_stem, tile",
    [
        (stem(3, 96, 11, 4, torch.bfloat16, layout="NHWC"), True, (256, 128, 32, 8)),  # conv1
        (stem(3, 96, 11, 4, precision="tf32"), True, (256, 128, 32, 8)),
        (stem(3, 96, 11, 4, layout="NHWC"), True, (128, 128, 32, 4)),  # IEEE FMA
        (stem(3, 96, 11, 4, precision="tf32x3"), True, (128, 128, 16, 8)),
        (stem(3, 96, 11, 4, precision="tf32x3", layout="NHWC"), True, (128, 64, 16, 4)),
        (stem(3, 64, 7, 2, precision="tf32x3", layout="NHWC"), True, (64, 64, 16, 4)),  # conv3
        (stem(3, 64, 7, 2), True, (128, 64, 32, 4)),  # IEEE NCHW: the default kept
        (stem(3, 64, 7, 2, layout="NHWC"), True, (128, 64, 16, 4)),
        (stem(3, 32, 7, 2, precision="tf32x3", layout="NHWC"), True, (128, 32, 32, 4)),  # KG 32
        (stem(3, 96, 11, 4, torch.bfloat16), False, (64, 128, 32, 4)),  # not a stem
        (stem(3, 64, 3, 1, precision="tf32", hw=224), True, (128, 64, 16, 4)),  # conv7
        (stem(3, 64, 7, 2, torch.bfloat16, layout="NHWC"), True, (128, 64, 16, 4)),  # conv3
        (stem(3, 64, 7, 2, torch.bfloat16), True, (128, 64, 32, 4)),
        (stem(24, 64, 5, 1, torch.bfloat16, layout="NHWC"), True, (128, 64, 64, 4)),  # 600 long
    ],
)
def test_pointer_tiles(problem, is_stem, tile):
    config = pointer.default_tiles(problem, HOPPER, stem=is_stem)
    assert (config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"], config["num_warps"]) == tile


def window_pick(p, q, kg, dtype=torch.bfloat16, cg=64, rs=3, **kw):
    """The TMA variants' pick for a channels-last problem with a P x Q output."""
    precision = "tf32" if dtype == torch.float32 else None
    xshape, wshape = (128, cg, p + rs - 1, q + rs - 1), (kg, cg, rs, rs)
    problem = problem_of(xshape, wshape, dtype, precision, channels_last=True, **kw)
    return problem, tma.tma_pick(problem, HOPPER)


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
    # Padded 3x3 (the input P x Q too): window tiles, whose patch the efficiency picks.
    problem = problem_of((128, 64, p, q), (kg, 64, 3, 3), torch.bfloat16, channels_last=True,
                         padding=1)  # fmt: skip
    config = tma.TMA_WINDOW.heuristic(problem, HOPPER)
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
    _, config = window_pick(p, q, kg, dtype, cg=64 if dtype.itemsize == 2 else 32, rs=rs)
    if tile is None or tile == "tma":
        assert (config and config["LOOP"]) == tile
    else:
        assert config["LOOP"] == "tma_raster" and "BLOCK_Q" not in config
        assert (config["BLOCK_M"], config["BLOCK_N"], config["num_warps"]) == tile


@pytest.mark.parametrize(
    "p, q, kg, cg, tile",
    [
        (109, 109, 64, 32, (16, 16, 64)),  # conv4: 32-channel blocks, 256 x 64 tiles
        (28, 28, 512, 64, (4, 16, 256)),  # ResNet-50 l2-down-s2
        (28, 28, 128, 64, (4, 32, 128)),  # l2-3x3-s2
        (14, 14, 1024, 64, None),  # l3-down-s2: narrower outputs stay on the pointer kernel
        (7, 7, 512, 64, None),  # l4-3x3-s2
    ],
)
def test_strided_layers_take_window_tiles_on_wide_outputs(p, q, kg, cg, tile):
    problem = problem_of((8, cg, 2 * p, 2 * q), (kg, cg, 3, 3), torch.bfloat16,
                         channels_last=True, stride=2, padding=1)  # fmt: skip
    assert (problem.p, problem.q) == (p, q)
    config = tma.tma_pick(problem, HOPPER)
    got = config and (config["BLOCK_M"] // config["BLOCK_Q"], config["BLOCK_Q"],
                      config["BLOCK_N"])  # fmt: skip
    assert got == tile and (config is None or config["LOOP"] == "tma")


@pytest.mark.parametrize(
    "xshape, wshape, precision, wide",
    [
        ((128, 96, 24, 24), (256, 96, 5, 5), "tf32", True),  # conv5: raster tiles waste 31%
        ((128, 256, 12, 12), (512, 256, 3, 3), "tf32", True),  # conv6
        ((128, 512, 7, 7), (2048, 512, 1, 1), "tf32", True),  # l4-1x1-2048: 8x8 windows
        ((128, 256, 14, 14), (256, 256, 3, 3), "tf32", False),  # conv11: 144 tiles too few
        ((128, 512, 28, 28), (256, 512, 1, 1), "tf32", False),  # wastes an eighth
        ((128, 96, 24, 24), (128, 96, 5, 5), "tf32", False),  # half a 256 tile idle
        ((128, 96, 24, 24), (256, 96, 5, 5), "tf32x3", False),  # not measured
    ],
)
def test_wide_pointer_tiles_replace_wasteful_tma_tiles(xshape, wshape, precision, wide):
    problem = problem_of(xshape, wshape, torch.float32, precision, channels_last=True)
    config = POINTER_WIDE.heuristic(problem, HOPPER)
    assert config == (HOPPER.table["pointer-wide"]["tile"] if wide else None)
    bf16 = problem_of(xshape, wshape, torch.bfloat16, channels_last=True)
    assert POINTER_WIDE.heuristic(bf16, HOPPER) is None  # lost in 16-bit


def test_tma_efficiency_counts_what_each_tile_kind_computes():
    problem = problem_of((2, 64, 24, 24), (64, 64, 5, 5), torch.bfloat16, channels_last=True)
    assert tma.efficiency(dict(LOOP="tma_raster", BLOCK_M=128), problem) == 400 / 576
    window = dict(LOOP="tma", BLOCK_M=64, BLOCK_Q=16)
    assert tma.efficiency(window, problem) == 400 / (20 * 32)  # 4 x 16 patches over 20 x 20


def test_wide_pointer_tiles_are_correct():
    # The rule's tiles pinned on a ragged tf32 case (exact fp32 under the interpreter), bias.
    torch.manual_seed(5)
    x = randn(2, 40, 9, 7, channels_last=True)
    w, b = randn(260, 40, 3, 3), randn(260)
    config = HOPPER.table["pointer-wide"]["tile"]
    y = im2win.conv2d(x, w, b, precision="tf32", config=config)
    assert_close(y, reference(x, w, b), tolerance(torch.float32, "tf32"))


def test_tables_name_where_they_were_measured():
    sm90, interpreter = tuning.table("sm90"), tuning.table("interpreter")
    for name, section in sm90.items():
        assert name == "about" or section["measured"].startswith("notes/tuning.md#"), name
    assert tuning.table("sm100") == sm90  # no table of its own: Hopper's
    assert interpreter["staged-nchw"] == sm90["staged-nchw"]  # sections it does not name
    assert interpreter["pointer"]["num_stages"] == 1 and sm90["pointer"]["block_k"] == 32


@pytest.mark.parametrize("arch", ["sm90", "interpreter"])
def test_table_entries_set_only_known_conditions(arch):
    """An entry's condition key that `entry_matches` does not read (a typo, say) would hold
    for every problem: every lower-case key of the entries it reads is one it knows."""
    table = tuning.table(arch)
    lists = [table["strips"]["tiles"]] if "strips" in table else []
    lists += [table["tma"]["window_tiles"], table["tma"]["raster_tiles"]]
    for entry in (entry for entries in lists for entry in entries):
        conditions = {key for key in entry if key.islower() and not key.startswith("num_")}
        assert conditions <= set(variants.base.ENTRY_CONDITIONS), entry


def test_tuning_key_classes_shapes_and_names_the_variants():
    a = problem_of((128, 3, 227, 227), (96, 3, 11, 11), torch.bfloat16, stride=4)
    b = problem_of((100, 3, 220, 230), (70, 3, 11, 11), torch.bfloat16, stride=4)
    nhwc = problem_of((128, 3, 227, 227), (96, 3, 11, 11), torch.bfloat16, channels_last=True,
                      stride=4)  # fmt: skip
    hopper = variants.Target("sm90", sms=132, tma=True, device=torch.device("cpu"))
    key = lambda p, names: variants.tuning_key(p, names, hopper)  # noqa: E731
    monkey = {"device_key": lambda device: "GPU|triton 3.6|keys v5"}
    with pytest.MonkeyPatch.context() as mp:
        for name, fn in monkey.items():
            mp.setattr(tuning, name, fn)
        eligible = [pointer.POINTER]
        assert key(a, eligible) == key(b, eligible)  # sizes rounded up to powers of two
        assert key(a, eligible) != key(nhwc, eligible)
        assert key(a, eligible) != key(a, [pointer.POINTER, tma.TMA_WINDOW])
        assert key(a, eligible).endswith("|pointer|GPU|triton 3.6|keys v5")


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


def test_autotuning_times_every_variants_candidates_and_keeps_the_fastest(tmp_path, monkeypatch):
    """The search over every eligible variant (PyTorch's own convolution among them), with a
    stand-in timer that runs each candidate once (so each must run, into an output of the
    call's layout: the strips kernel stores dense channels-last ones only) and calls the last
    one fastest: that one is chosen and cached, and a second search reads the cache."""
    monkeypatch.setattr(tuning.autotune, "CACHE", tuning.TuningCache(tmp_path / "tuning.json"))
    monkeypatch.setattr(tuning, "device_key", lambda device: "test-device")
    runs = []

    def timer(fn):
        y = fn()
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
        runs.append(1)
        return 1.0 / len(runs)

    monkeypatch.setattr(tuning, "median_ms", timer)
    problem = problem_of((1, 16, 5, 6), (8, 16, 3, 3), torch.float16, channels_last=True)
    target = current_target()
    choice = variants.choose(problem, target, autotune=True, aten=True)
    eligible = [v for v in variants.VARIANTS if v.windows != "materialized"
                and v.supports(problem, target)]  # fmt: skip
    every = [(v, c) for v in eligible for c in v.candidates(problem, target)]
    assert len(runs) == len(every) > 1 and every[0][0].name == "aten"
    last_variant, last_config = every[-1]
    assert choice.how == "autotuned" and choice.variant is last_variant
    assert {k: choice.config[k] for k in last_config} == last_config
    again = variants.choose(problem, target, autotune=True, aten=True)
    assert len(runs) == len(every) and again == choice


@pytest.mark.gpu
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_autotune_on_gpu_is_correct_and_cached(tmp_path, monkeypatch, channels_last):
    """IM2WIN_AUTOTUNE=1: the first call searches, stores its choice, and is still correct."""
    monkeypatch.setenv("IM2WIN_AUTOTUNE", "1")
    monkeypatch.setattr(tuning.autotune, "CACHE", tuning.TuningCache(tmp_path / "tuning.json"))
    torch.manual_seed(4)
    x = randn(8, 32, 15, 17, dtype=torch.bfloat16, channels_last=channels_last)
    w = randn(48, 32, 3, 3, dtype=torch.bfloat16)
    for _ in range(2):
        y = im2win.conv2d(x, w, padding=1)
        assert_close(y, reference(x, w, padding=1), 5e-3)
    entries = json.loads((tmp_path / "tuning.json").read_text())
    assert len(entries) == 1
    problem = problem_of(x.shape, w.shape, torch.bfloat16, channels_last=channels_last, padding=1)
    allowed = [
        dict(c, VARIANT=v.name)
        for v in variants.VARIANTS
        if v.windows != "materialized" and v.supports(problem, current_target())
        for c in v.candidates(problem, current_target())
    ]
    assert next(iter(entries.values())) in allowed
