"""im2win.conv2d_fused against the unfused sequence in float64: the convolution, then scale,
bias, residual and activation, each in float64 on the (already rounded) inputs."""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import im2win
from helpers import (
    DEVICE,
    GPU_TIER_TOL,
    HOPPER,
    TOL,
    CountingKernel,
    assert_close,
    current_target,
    poison_split_workspace,
    problem_of,
    randn,
    reference,
    split_sum_output,
    tolerance,
    torch_output_format,
)
from im2win import plan, tuning, variants
from im2win.epilogue import ACTIVATIONS, NONE, Epilogue
from im2win.kernels.split_k import finish, workspace
from im2win.ops import check_epilogue_backend
from im2win.variants import BY_NAME, VARIANTS, Variant

# The activations in float64, written out as the issue defines them.
ACT64 = {
    None: lambda y: y,
    "relu": lambda y: y.clamp(min=0),
    "relu6": lambda y: y.clamp(0, 6),
    "silu": lambda y: y * torch.sigmoid(y),
    "gelu": lambda y: 0.5 * y * (1 + torch.erf(y / math.sqrt(2))),
    "hardswish": lambda y: y * (y + 3).clamp(0, 6) / 6,
    "sigmoid": torch.sigmoid,
}
RESIDUAL_MODES = ("none", "before", "after")
LAYOUTS = ("nchw", "channels_last")


def expected(x, w, b, scale, activation, residual, after, **kw) -> torch.Tensor:
    """The unfused sequence in float64: conv, * scale, + bias, residual and activation."""
    y = reference(x, w, **kw)
    channel = [-1 if d == y.dim() - 3 else 1 for d in range(y.dim())]  # [1, K, 1, 1] or [K, 1, 1]
    if scale is not None:
        y = y * scale.double().view(channel)
    if b is not None:
        y = y + b.double().view(channel)
    if residual is not None and not after:
        y = y + residual.double()
    y = ACT64[activation](y)
    if residual is not None and after:
        y = y + residual.double()
    return y


def make_residual(shape, dtype, layout: str) -> torch.Tensor:
    """A residual of `shape` laid out as `layout`: dense in either format, a strided slice of
    a larger tensor, or one image expanded over the batch (stride 0)."""
    n, k, p, q = shape
    if layout == "sliced":
        return randn(n, k + 3, p + 1, 2 * q, dtype=dtype)[:, 2 : k + 2, 1:, ::2]
    if layout == "expanded":
        return randn(1, k, p, q, dtype=dtype).expand(n, -1, -1, -1)
    return randn(n, k, p, q, dtype=dtype, channels_last=layout == "channels_last")


def check_fused(xshape, wshape, kw, *, dtype=torch.float32, layout="nchw", bias=True,
                scale=True, activation="relu", residual="before", residual_layout=None,
                scale_dtype=None, **options) -> torch.Tensor:  # fmt: skip
    """One conv2d_fused call against `expected`, its dtype and memory format checked (the
    output is NaN-poisoned: every element must be written), its inputs left as they were."""
    x = randn(*xshape, dtype=dtype, channels_last=layout == "channels_last")
    w = randn(*wshape, dtype=dtype)
    k = wshape[0]
    b = randn(k, dtype=dtype) if bias else None
    s = randn(k, dtype=scale_dtype or dtype) if scale else None
    fmt = torch_output_format(x, w)
    r = None
    if residual != "none":
        shape = reference(x, w, **kw).shape
        default = "channels_last" if fmt == torch.channels_last else "nchw"
        r = make_residual(shape, dtype, residual_layout or default)
    after = residual == "after"
    inputs = [t for t in (x, w, b, s, r) if t is not None]
    kept = [(t.clone(), t.stride()) for t in inputs]
    y = im2win.conv2d_fused(x, w, b, **kw, scale=s, activation=activation, residual=r,
                            residual_after_activation=after, **options)  # fmt: skip
    for t, (clone, strides) in zip(inputs, kept, strict=True):
        assert torch.equal(t, clone) and t.stride() == strides
    assert y.dtype == dtype
    assert y.is_contiguous(memory_format=fmt)
    assert_close(y, expected(x, w, b, s, activation, r, after, **kw),
                 tolerance(dtype, options.get("precision")))  # fmt: skip
    return y


# (input shape, weight shape, conv kwargs): C = 1, 3, 6 and 16, batch 1 and 2, odd sizes,
# K = 3, 5, 9 and 17 (no tile's multiple), stride 2, asymmetric padding, dilation, groups.
CASES = {
    "c3_7x9_k5_3x3_p1": ((2, 3, 7, 9), (5, 3, 3, 3), dict(padding=1)),
    "c1_9x6_k3_3x2_s2": ((1, 1, 9, 6), (3, 1, 3, 2), dict(stride=2, padding=(1, 0))),
    "c6_8x7_g3_k9_d2": ((2, 6, 8, 7), (9, 2, 3, 3), dict(dilation=2, padding=2, groups=3)),
    "c16_5x6_k17_3x3_same": ((1, 16, 5, 6), (17, 16, 3, 3), dict(padding="same")),
}
BASE = CASES["c3_7x9_k5_3x3_p1"]
# (bias, scale, activation, residual): what each case runs in every dtype and layout.
COMBOS = {
    "bias_scale_silu_before": (True, True, "silu", "before"),
    "scale_gelu_after": (False, True, "gelu", "after"),
    "bias_hardswish": (True, False, "hardswish", "none"),
    "residual_only": (False, False, None, "before"),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("residual", RESIDUAL_MODES)
@pytest.mark.parametrize("activation", (None, *ACTIVATIONS), ids=str)
def test_every_activation_and_residual(activation, residual, layout, dtype):
    """With scale and bias (no activation and no residual: a scale alone, still fused)."""
    torch.manual_seed(0)
    check_fused(*BASE, dtype=DTYPES[dtype], layout=layout, activation=activation,
                residual=residual)  # fmt: skip


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_shapes_dtypes_layouts(case, dtype, layout, combo):
    torch.manual_seed(1)
    bias, scale, activation, residual = COMBOS[combo]
    check_fused(*CASES[case], dtype=DTYPES[dtype], layout=layout, bias=bias, scale=scale,
                activation=activation, residual=residual)  # fmt: skip


@pytest.mark.parametrize("precision", ["ieee", "tf32x3", "tf32"])
def test_fp32_precisions(precision):
    """3xTF32 splits the filter; TF32 is exact fp32 in the interpreter (tier bounds on a GPU)."""
    torch.manual_seed(2)
    check_fused(*CASES["c16_5x6_k17_3x3_same"], layout="channels_last", activation="silu",
                residual="after", precision=precision)  # fmt: skip


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_float32_scale_on_16bit_inputs(dtype):
    """A folded batch norm's scale may stay in float32."""
    torch.manual_seed(2)
    check_fused(*BASE, dtype=DTYPES[dtype], scale_dtype=torch.float32, activation="relu6")


@pytest.mark.parametrize("residual_layout", ["nchw", "channels_last", "sliced", "expanded"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_residual_strides_are_its_own(layout, residual_layout):
    """The residual is read in place with its own strides, whatever the output's layout."""
    torch.manual_seed(3)
    check_fused(*CASES["c6_8x7_g3_k9_d2"], layout=layout, residual="after",
                residual_layout=residual_layout, activation="sigmoid")  # fmt: skip


# The pointer kernel's loops pinned (test_conv2d's tiles), and split-K: slices of 1-2 steps.
LOOP_CONFIGS = {
    "flat": dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=32, num_warps=4, num_stages=1, LOOP="flat"),
    "channels": dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, num_warps=4, num_stages=1,
                     LOOP="channels"),
    "flat_split3": dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1,
                        LOOP="flat", SPLIT_K=3),
    "channels_split2": dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, num_warps=4, num_stages=1,
                            LOOP="channels", SPLIT_K=2),
}  # fmt: skip
# 16 input channels (a channel block), 13 outputs, 63 pixels against 32-pixel tiles.
LOOP_CASE = ((1, 16, 7, 9), (13, 16, 3, 3), dict(padding=1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("windows", ["streamed", "materialized"])
@pytest.mark.parametrize("config", LOOP_CONFIGS)
def test_pinned_loops_windows_and_splits(config, windows, layout, dtype, monkeypatch):
    """Each loop over either window source, and split-K's sum, run the epilogue; the residual
    a strided slice; split-K's workspace poisoned."""
    seen = poison_split_workspace(monkeypatch)
    torch.manual_seed(4)
    pinned, dtype = LOOP_CONFIGS[config], DTYPES[dtype]
    explained = im2win.explain(
        randn(*LOOP_CASE[0], channels_last=layout == "channels_last"), randn(*LOOP_CASE[1]),
        **LOOP_CASE[2], activation="gelu", windows=windows, config=pinned,
    )  # fmt: skip
    assert explained.choice.variant.windows == windows
    assert explained.choice.config["SPLIT_K"] == pinned.get("SPLIT_K", 1)
    check_fused(*LOOP_CASE, dtype=dtype, layout=layout, activation="gelu", residual="after",
                residual_layout="sliced", windows=windows, config=pinned)  # fmt: skip
    assert [a[0] for a in seen] == ([pinned["SPLIT_K"]] if "SPLIT_K" in pinned else [])


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_split_k_finish_runs_the_epilogue(layout):
    """The sum of the slices, then bias, scale and residual: one kernel into outputs dense in
    the workspace's layout, PyTorch ops into any other strides."""
    torch.manual_seed(5)
    y = split_sum_output(layout)
    ws = workspace(3, y).copy_(torch.randn(6, 6, 3, 5))
    bias, scale = randn(12)[::2].half(), randn(6)
    residual = make_residual((2, 6, 3, 5), torch.float16, "sliced")
    epilogue = Epilogue(activation="silu", residual="before", scaled=True)
    finish(ws, 3, bias, y, scale, residual, epilogue=epilogue)
    total = ws.view(3, 2, 6, 3, 5).double().sum(0) * scale.double().view(1, -1, 1, 1)
    want = F.silu(total + bias.double().view(1, -1, 1, 1) + residual.double())
    assert_close(y, want, TOL[torch.float16])


@pytest.mark.aten_choice
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pytorch_convolution_pinned(dtype, layout):
    torch.manual_seed(6)
    pinned = dict(VARIANT="aten")
    x = randn(*BASE[0], channels_last=layout == "channels_last")
    explained = im2win.explain(x, randn(*BASE[1]), **BASE[2], activation="relu", config=pinned)
    assert explained.choice.variant.name == "aten" and not explained.uses_im2win
    check_fused(*BASE, dtype=DTYPES[dtype], layout=layout, activation="hardswish",
                residual="after", residual_layout="sliced", config=pinned)  # fmt: skip


@pytest.mark.aten_choice
@pytest.mark.parametrize("scaled", [False, True], ids=["bias", "scale"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_pytorch_convolution_every_activation(activation, scaled):
    """aten's epilogue runs in place in the output's dtype (`apply_in_place`): every
    activation, after the bias alone or after a float32 scale."""
    torch.manual_seed(8)
    check_fused(*BASE, dtype=torch.bfloat16, layout="channels_last", scale=scaled,
                scale_dtype=torch.float32, activation=activation, residual="before",
                config=dict(VARIANT="aten"))  # fmt: skip


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "fp64"])
def test_reference_backend(dtype):
    torch.manual_seed(7)
    dtype = {"fp64": torch.float64, **DTYPES}[dtype]
    xshape, wshape, kw = CASES["c6_8x7_g3_k9_d2"]
    x, w, b, s = (randn(*shape, dtype=dtype) for shape in (xshape, wshape, (9,), (9,)))
    r = make_residual(reference(x, w, **kw).shape, dtype, "sliced")
    y = im2win.conv2d_fused(x, w, b, **kw, scale=s, activation="gelu", residual=r,
                            backend="reference")  # fmt: skip
    assert y.dtype == dtype
    bound = 1e-12 if dtype == torch.float64 else TOL[dtype]
    assert_close(y, expected(x, w, b, s, "gelu", r, False, **kw), bound)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("residual", ["before", "after"])
def test_gradients_through_pytorch_ops(residual, layout):
    """A call that records gradients runs conv2d and the epilogue in PyTorch ops: every
    gradient (input, weight, bias, scale, residual) against float64 autograd."""
    torch.manual_seed(8)
    xshape, wshape, kw = CASES["c6_8x7_g3_k9_d2"]
    x = randn(*xshape, channels_last=layout == "channels_last")
    w, b, s = randn(*wshape), randn(9), randn(9)
    r = make_residual(reference(x, w, **kw).shape, torch.float32, "sliced")
    leaves = [t.detach().requires_grad_() for t in (x, w, b, s, r)]
    after = residual == "after"
    y = im2win.conv2d_fused(*leaves[:3], **kw, scale=leaves[3], activation="silu",
                            residual=leaves[4], residual_after_activation=after)  # fmt: skip
    assert y.grad_fn is not None and y.is_contiguous(memory_format=torch_output_format(x, w))
    grad_y = torch.randn_like(y)
    grads = torch.autograd.grad(y, leaves, grad_y)
    exact = [t.detach().double().requires_grad_() for t in (x, w, b, s, r)]
    want = expected(*exact[:3], exact[3], "silu", exact[4], after, **kw)
    assert_close(y, want, TOL[torch.float32])
    for got, wanted in zip(grads, torch.autograd.grad(want, exact, grad_y.double()), strict=True):
        assert_close(got, wanted, TOL[torch.float32])


def test_a_residual_alone_may_require_grad():
    torch.manual_seed(9)
    x, w = randn(*BASE[0]), randn(*BASE[1])
    r = randn(*reference(x, w, **BASE[2]).shape).requires_grad_()
    y = im2win.conv2d_fused(x, w, **BASE[2], activation="relu", residual=r)
    (grad,) = torch.autograd.grad(y.sum(), r)
    assert torch.equal(grad, (y > 0).float())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched(layout):
    torch.manual_seed(10)
    x = randn(*BASE[0], channels_last=layout == "channels_last")[0]
    w, s = randn(*BASE[1]), randn(5)
    r = randn(5, 7, 9)
    y = im2win.conv2d_fused(x, w, **BASE[2], scale=s, activation="relu", residual=r)
    assert y.shape == (5, 7, 9)
    assert_close(y, expected(x, w, None, s, "relu", r, False, **BASE[2]), TOL[torch.float32])


@pytest.mark.parametrize("shape", [(0, 3, 7, 9), (2, 0, 7, 9)], ids=["empty_batch", "no_channels"])
def test_nothing_to_multiply(shape):
    """No outputs, or no input channels: zeros, then bias and the epilogue, as unfused."""
    torch.manual_seed(11)
    x, w = randn(*shape), randn(5, shape[1], 3, 3)
    b, s = randn(5), randn(5)
    r = randn(shape[0], 5, 7, 9)
    y = im2win.conv2d_fused(x, w, b, padding=1, scale=s, activation="sigmoid", residual=r)
    want = torch.sigmoid(b.double().view(1, -1, 1, 1) + r.double()).expand(r.shape)
    assert y.shape == r.shape and y.dtype == torch.float32
    if y.numel():
        assert_close(y, want, TOL[torch.float32])


def test_no_epilogue_is_conv2d():
    torch.manual_seed(12)
    plan._PLANS.clear()
    x, w, b = randn(*BASE[0]), randn(*BASE[1]), randn(5)
    y = im2win.conv2d_fused(x, w, b, **BASE[2])
    assert torch.equal(y, im2win.conv2d(x, w, b, **BASE[2]))
    assert len(plan._PLANS) == 1  # the same plan


def test_a_signature_is_planned_once_and_keyed_on_the_epilogue(monkeypatch):
    torch.manual_seed(13)
    plan._PLANS.clear()
    x, w = randn(*BASE[0]), randn(*BASE[1])
    s, r = randn(5), randn(2, 5, 7, 9)
    calls = dict(
        plain=dict(activation="relu"),
        other_activation=dict(activation="silu"),
        residual_before=dict(activation="relu", residual=r),
        residual_after=dict(activation="relu", residual=r, residual_after_activation=True),
        residual_strides=dict(activation="relu", residual=r.to(memory_format=torch.channels_last)),
        residual_offset=dict(activation="relu", residual=randn(r.numel() + 1)[1:].view(r.shape)),
        scaled=dict(scale=s),
        scale_strides=dict(scale=randn(10)[::2]),
    )  # fmt: skip
    for kwargs in calls.values():
        im2win.explain(x, w, **BASE[2], **kwargs)
    for scale in (s.half(), s):  # a 16-bit call's scale in its dtype or in float32
        im2win.explain(x.half(), w.half(), **BASE[2], scale=scale)
    assert len(plan._PLANS) == len(calls) + 2

    def unexpected(*args, **kwargs):
        raise AssertionError("a kept signature was planned again")

    monkeypatch.setattr(plan, "make_plan", unexpected)
    s2, r2 = randn(5), randn(2, 5, 7, 9)  # new values, same signatures
    y = im2win.conv2d_fused(x, w, **BASE[2], activation="relu", residual=r2)
    assert_close(y, expected(x, w, None, None, "relu", r2, False, **BASE[2]), TOL[torch.float32])
    y = im2win.conv2d_fused(x, w, **BASE[2], scale=s2)
    assert_close(y, expected(x, w, None, s2, None, None, False, **BASE[2]), TOL[torch.float32])


def test_explain_shows_the_epilogue():
    x, w = randn(*BASE[0]), randn(*BASE[1])
    r = randn(2, 5, 7, 9)
    text = str(im2win.explain(x, w, **BASE[2], scale=randn(5), activation="silu", residual=r,
                              residual_after_activation=True))  # fmt: skip
    assert text.splitlines()[0].endswith("epilogue: scale, silu, + residual")
    assert "pointer (heuristic)" in text
    assert "epilogue" not in str(im2win.explain(x, w, **BASE[2]))
    assert str(NONE) == "none" and NONE.empty and not Epilogue(scaled=True).empty


def test_every_variant_takes_an_epilogue_and_a_new_one_refuses_it():
    """A variant runs only a plain convolution unless it says otherwise: one that does not
    is never chosen for a fused call, and pinning it raises, naming those that can."""
    fused = Epilogue(activation="relu", residual="after", scaled=True)
    assert all(v.takes_epilogue(fused) and v.takes_epilogue(NONE) for v in VARIANTS)

    class Plain(Variant):
        name = "plain"

    assert Plain().takes_epilogue(NONE) and not Plain().takes_epilogue(fused)
    with pytest.raises(ValueError, match="'plain' cannot run the epilogue 'scale, relu, "
                                         r"\+ residual'.*'pointer'"):  # fmt: skip
        variants.check_takes_epilogue(Plain(), fused)


@pytest.mark.parametrize(
    "xshape, wshape, dtype, channels_last, plain, fused_on",
    [
        ((40, 64, 28, 28), (128, 64, 3, 3), torch.bfloat16, False, "staged-nchw", "pointer"),
        ((8, 64, 28, 28), (128, 64, 3, 3), torch.bfloat16, True, "tma", "pointer"),
        ((8, 64, 28, 28), (64, 8, 3, 3), torch.bfloat16, True, "packed-groups", "packed-groups"),
        ((8, 64, 28, 28), (64, 1, 3, 3), torch.float32, True, "depthwise", "depthwise"),
    ],
)  # fmt: skip
def test_choices_with_an_epilogue(xshape, wshape, dtype, channels_last, plain, fused_on):
    """On Hopper, layers whose variant takes no epilogue take the pointer kernel, or PyTorch's
    convolution where backend='auto' lets it compete; the depthwise and packed-groups
    kernels keep theirs."""
    groups = xshape[1] // wshape[1]
    problem = problem_of(xshape, wshape, dtype, channels_last=channels_last, padding=1,
                         groups=groups)  # fmt: skip
    assert variants.choose(problem, HOPPER).variant.name == plain
    fused = replace(problem, epilogue=Epilogue(activation="relu", residual="before"))
    assert variants.choose(fused, HOPPER).variant.name == fused_on
    assert variants.choose(fused, HOPPER, aten=True).variant.name in ("aten", fused_on)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "activation, residual",
    [("silu", "none"), ("relu6", "before"), ("gelu", "after"), ("sigmoid", "before")],
)
@pytest.mark.parametrize(
    "variant, wshape, groups",
    [("depthwise", (6, 1, 3, 3), 3), ("packed-groups", (6, 2, 3, 3), 2)],
)  # fmt: skip
def test_grouped_kernels_run_the_epilogue(variant, wshape, groups, activation, residual, dtype,
                                          layout):  # fmt: skip
    """The depthwise and packed-groups kernels with the epilogue in their store, pinned, on
    an odd shape with stride and padding (depthwise: two outputs per input channel; packed:
    groups of 2 input and 3 output channels)."""
    torch.manual_seed(9)
    xshape, kw = (2, 3 if variant == "depthwise" else 4, 7, 9), dict(stride=(1, 2), padding=1,
                                                                    groups=groups)  # fmt: skip
    # packed groups run on tensor cores: fp32 as TF32
    precision = "tf32" if variant == "packed-groups" and dtype == "fp32" else None
    problem = problem_of(xshape, wshape, DTYPES[dtype], precision,
                         channels_last=layout == "channels_last", **kw)  # fmt: skip
    fused = replace(problem, epilogue=Epilogue(activation, None if residual == "none" else
                                               residual))  # fmt: skip
    target = current_target()
    found = BY_NAME[variant]
    assert found.supports(fused, target)
    config = found.candidates(fused, target)[0] if variant == "packed-groups" else (
        found.heuristic(fused, target))  # fmt: skip
    check_fused(xshape, wshape, kw, dtype=DTYPES[dtype], layout=layout, activation=activation,
                residual=residual, config=dict(config, VARIANT=variant),
                precision=precision)  # fmt: skip


@pytest.mark.parametrize("split", [1, 2], ids=["whole", "split_k"])
@pytest.mark.parametrize("variant, padding", [("tma", 1), ("tma-raster", 0)])
def test_tma_kernels_run_the_epilogue(variant, padding, split):
    """The TMA kernels, pinned, with a scale, GELU and a residual after it in the store (or,
    under split-K, in the sum of the slices), on a ragged 5x7 input."""
    torch.manual_seed(10)
    xshape, wshape, kw = (2, 16, 5, 7), (12, 16, 3, 3), dict(padding=padding)
    problem = problem_of(xshape, wshape, torch.float16, channels_last=True, **kw)
    fused = replace(problem, epilogue=Epilogue("gelu", "after", scaled=True))
    found, target = BY_NAME[variant], current_target()
    assert found.supports(fused, target)
    config = dict(found.candidates(fused, target)[0], VARIANT=variant, SPLIT_K=split)
    check_fused(xshape, wshape, kw, dtype=torch.float16, layout="channels_last",
                activation="gelu", residual="after", config=config)  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("activation, residual", [("silu", "before"), ("hardswish", "after")])
def test_winograd_runs_the_epilogue_in_its_output_transform(activation, residual, layout):
    """Winograd, pinned (fp32), with the activation and residual in its output transform, on
    odd outputs (9x7: a last row and column of 2x2 tiles half outside)."""
    torch.manual_seed(12)
    xshape, wshape, kw = (2, 5, 9, 7), (6, 5, 3, 3), dict(padding=1)
    config = dict(VARIANT="winograd", BLOCK_T=16, BLOCK_K=16, BLOCK_C=16, num_warps=4,
                  num_stages=1)  # fmt: skip
    check_fused(xshape, wshape, kw, dtype=torch.float32, layout=layout, activation=activation,
                residual=residual, config=config)  # fmt: skip


def test_staged_and_wide_pointer_run_the_epilogue():
    """NCHW staged a chunk of one image at a time (each chunk's kernel reads its slice of an
    NCHW residual), and the wide pointer variant, pinned, on a ragged shape."""
    torch.manual_seed(11)
    xshape, wshape, kw = (3, 16, 5, 7), (12, 16, 3, 3), dict(padding=1)
    staged = dict(VARIANT="staged-nchw", IMAGES=1)
    check_fused(xshape, wshape, kw, dtype=torch.float16, activation="silu", residual="before",
                residual_layout="nchw", config=staged)  # fmt: skip
    problem = problem_of(xshape, wshape, torch.float32, "tf32", channels_last=True, **kw)
    wide = dict(BY_NAME["pointer"].heuristic(problem, current_target()), VARIANT="pointer-wide")
    check_fused(xshape, wshape, kw, layout="channels_last", activation="relu6",
                residual="after", config=wide, precision="tf32")  # fmt: skip


def test_autotuning_times_only_variants_taking_the_epilogue(tmp_path, monkeypatch):
    """Each candidate runs once (scale and residual included) under a stand-in timer that
    calls the last one fastest; the search is keyed apart from the plain problem's."""
    monkeypatch.setattr(tuning.autotune, "CACHE", tuning.TuningCache(tmp_path / "tuning.json"))
    monkeypatch.setattr(tuning, "device_key", lambda device: "test-device")
    runs = []

    def timer(fn):
        y = fn()
        assert torch.isfinite(y).all()
        runs.append(1)
        return 1.0 / len(runs)

    monkeypatch.setattr(tuning, "median_ms", timer)
    plain = problem_of((1, 3, 5, 6), (4, 3, 3, 3), padding=1)
    problem = replace(plain, epilogue=Epilogue(activation="gelu", residual="after", scaled=True))
    target = current_target()
    choice = variants.choose(problem, target, autotune=True, aten=True)
    every = [(v, c) for v in (BY_NAME["aten"], BY_NAME["pointer"])
             for c in v.candidates(problem, target)]  # fmt: skip
    assert len(runs) == len(every) > 1
    assert choice.how == "autotuned" and choice.variant is every[-1][0]
    eligible = [v for v in VARIANTS if v.windows != "materialized" and v.supports(plain, target)]
    assert variants.tuning_key(problem, eligible, target) != variants.tuning_key(
        plain, eligible, target
    )


def test_compile_traces_the_unfused_math():
    """Under torch.compile (fullgraph) the values match the unfused math; a call recording
    gradients is conv2d's operator and PyTorch ops, its gradients those of eager."""
    torch.manual_seed(14)
    x, w, b, s = randn(*BASE[0]), randn(*BASE[1]), randn(5), randn(5)
    r = randn(2, 5, 7, 9)

    def block(x, w, b, s, r):
        return im2win.conv2d_fused(x, w, b, padding=1, scale=s, activation="hardswish",
                                   residual=r, residual_after_activation=True)  # fmt: skip

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    want = expected(x, w, b, s, "hardswish", r, True, padding=1)
    assert_close(compiled(x, w, b, s, r), want, TOL[torch.float32])
    w.requires_grad_()
    (grad,) = torch.autograd.grad(compiled(x, w, b, s, r).sum(), w)
    (eager,) = torch.autograd.grad(block(x, w, b, s, r).sum(), w)
    assert_close(grad, eager.double(), TOL[torch.float32])


FUSED_OP = torch.ops.im2win.conv2d_fused.default


@pytest.mark.parametrize("activation, after", [("relu", False), ("gelu", True), (None, False)])
def test_fused_operator_opcheck(activation, after):
    """Schema, fake tensor and AOT dispatch of `torch.ops.im2win.conv2d_fused`."""
    torch.manual_seed(16)
    x, w, b, s = randn(*BASE[0]), randn(*BASE[1]), randn(5), randn(5)
    r = randn(2, 5, 7, 9, channels_last=True)
    args = (x, w, b, s, r, [1, 1], [1, 1, 1, 1], [1, 1], 1, activation, after, None, "auto", None)
    torch.library.opcheck(FUSED_OP, args)
    assert_close(FUSED_OP(*args), expected(x, w, b, s, activation, r, after, padding=1),
                 TOL[torch.float32])  # fmt: skip


def _graph_ops(fn, *args) -> tuple[torch.Tensor, list]:
    """fn compiled (fullgraph, aot_eager): its output and the call_function targets of the
    graph dynamo traced."""
    targets = []

    def backend(gm, example_inputs):
        targets.extend(node.target for node in gm.graph.nodes if node.op == "call_function")
        return gm

    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend=backend)(*args), targets


def test_compile_traces_the_fused_operator_without_gradients():
    """Under torch.compile a call recording no gradients is the fused operator (one node),
    unbatched too; one that records them is conv2d's operator and PyTorch ops."""
    torch.manual_seed(17)
    x, w, b = randn(*BASE[0]), randn(*BASE[1]), randn(5)
    r = randn(2, 5, 7, 9)

    def block(x, w, b, r):
        return im2win.conv2d_fused(x, w, b, padding=1, activation="silu", residual=r)

    y, targets = _graph_ops(block, x, w, b, r)
    assert targets.count(torch.ops.im2win.conv2d_fused.default) == 1
    assert torch.ops.im2win.conv2d.default not in targets
    assert_close(y, expected(x, w, b, None, "silu", r, False, padding=1), TOL[torch.float32])
    y, targets = _graph_ops(block, x[0], w, b, r[0])
    assert targets.count(torch.ops.im2win.conv2d_fused.default) == 1
    assert_close(y, expected(x[0], w, b, None, "silu", r[0], False, padding=1),
                 TOL[torch.float32])  # fmt: skip
    w.requires_grad_()
    y, targets = _graph_ops(block, x, w, b, r)
    assert torch.ops.im2win.conv2d_fused.default not in targets
    assert torch.ops.im2win.conv2d.default in targets


def test_compiled_optimized_model_runs_the_fused_operator():
    """torch.compile(im2win.optimize(model)): every fused conv is one fused-operator node."""
    torch.manual_seed(18)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.Conv2d(6, 4, 1), torch.nn.SiLU(),
    ).eval()  # fmt: skip
    x = randn(2, 3, 7, 6)
    with torch.no_grad():
        want = model.double()(x.double())
        optimized = im2win.optimize(model.float())
        y, targets = _graph_ops(optimized, x)
    assert targets.count(torch.ops.im2win.conv2d_fused.default) == 2
    assert_close(y, want, TOL[torch.float32])


def test_autocast_casts_the_residual_too():
    device_type = torch.device(DEVICE).type
    torch.manual_seed(15)
    x, w, b, s = randn(*BASE[0]), randn(*BASE[1]), randn(5), randn(5)
    r = randn(2, 5, 7, 9)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        y = im2win.conv2d_fused(x, w, b, padding=1, scale=s, activation="relu", residual=r)
    assert y.dtype == torch.bfloat16
    cast = [t.bfloat16() for t in (x, w, b, r)]
    want = expected(*cast[:3], s, "relu", cast[3], False, padding=1)
    assert_close(y, want, TOL[torch.bfloat16])


def bad_calls():
    """(name, conv2d_fused keyword arguments, exception, message fragments)."""
    r = randn(2, 5, 7, 9)
    return {
        "activation_name": (dict(activation="tanh"), ValueError, ["activation", "relu", "'tanh'"]),
        "activation_type": (dict(activation=1), ValueError, ["activation", "1"]),
        "scale_type": (dict(scale=[1.0] * 5), TypeError, ["scale", "torch.Tensor", "list"]),
        "scale_shape": (dict(scale=randn(6)), ValueError, ["scale", "(5,)", "(6,)"]),
        "scale_dims": (dict(scale=randn(5, 1)), ValueError, ["scale", "1-D", "2-D"]),
        "scale_dtype": (dict(scale=randn(5).half()), TypeError,
                        ["scale dtype must be torch.float32, got torch.float16"]),
        "scale_device": (dict(scale=torch.empty(5, device="meta")), ValueError,
                         ["scale", "meta"]),
        "residual_type": (dict(residual=1.0), TypeError, ["residual", "torch.Tensor", "float"]),
        "residual_shape": (dict(residual=randn(2, 5, 7, 8)), ValueError,
                           ["residual", "(2, 5, 7, 9)", "(2, 5, 7, 8)"]),
        "residual_dtype": (dict(residual=r.half()), TypeError,
                           ["residual", "float16", "float32"]),
        "residual_device": (dict(residual=torch.empty(2, 5, 7, 9, device="meta")), ValueError,
                            ["residual", "meta"]),
        "after_without_residual": (dict(residual_after_activation=True), ValueError,
                                   ["residual_after_activation", "residual=None"]),
        "after_not_bool": (dict(residual=r, residual_after_activation=1), TypeError,
                           ["residual_after_activation", "bool", "1"]),
        "paper_backend": (dict(activation="relu", backend="paper"), ValueError,
                          ["backend='paper'", "epilogue", "relu"]),
        "windows": (dict(activation="relu", windows="cached"), ValueError, ["windows"]),
    }  # fmt: skip


@pytest.mark.parametrize("grad", [False, True], ids=["planned", "with_grad"])
@pytest.mark.parametrize("case", bad_calls())
def test_bad_arguments_name_themselves(case, grad):
    """The same errors whether the call runs a plan or, recording gradients, PyTorch ops."""
    kwargs, error, fragments = bad_calls()[case]
    x, w = randn(*BASE[0]).requires_grad_(grad), randn(*BASE[1])
    with pytest.raises(error, match=".*".join(map(re.escape, fragments))):
        im2win.conv2d_fused(x, w, padding=1, **kwargs)


def test_epilogue_values_are_checked():
    with pytest.raises(ValueError, match="residual must be one of.*'middle'"):
        Epilogue(residual="middle")
    with pytest.raises(ValueError, match="scaled must be a bool, got 1"):
        Epilogue(scaled=1)
    with pytest.raises(ValueError, match="backend='paper'"):
        check_epilogue_backend("paper", Epilogue(activation="gelu"))
    check_epilogue_backend("paper", NONE)


# On a GPU: the automatic choice (PyTorch's convolution off, see conftest) on every tier,
# activation and residual mode, and deep layers at batch 1, which split-K serves.
GPU_TIERS = {
    "ieee": (torch.float32, "ieee"),
    "tf32x3": (torch.float32, "tf32x3"),
    "tf32": (torch.float32, "tf32"),
    "fp16": (torch.float16, None),
    "bf16": (torch.bfloat16, None),
}
GPU_CASES = {
    **CASES,
    "c64_14x14_k96_3x3_s2": ((4, 64, 14, 14), (96, 64, 3, 3), dict(stride=2, padding=1)),
    "deep_c512_7x7_k512_b1": ((1, 512, 7, 7), (512, 512, 3, 3), dict(padding=1)),
}


def check_gpu(case, tier, layout, bias, scale, activation, residual):
    """One call of the library's own choice against `expected`, in the tier's bound."""
    dtype, precision = GPU_TIERS[tier]
    xshape, wshape, kw = GPU_CASES[case]
    x = randn(*xshape, dtype=dtype, channels_last=layout == "channels_last")
    w = randn(*wshape, dtype=dtype)
    b = randn(wshape[0], dtype=dtype) if bias else None
    s = randn(wshape[0]) if scale else None  # float32, as a folded batch norm's may stay
    r = None
    if residual != "none":
        r = make_residual(reference(x, w, **kw).shape, dtype, "sliced")
    options = dict(scale=s, activation=activation, residual=r,
                   residual_after_activation=residual == "after", precision=precision)  # fmt: skip
    y = im2win.conv2d_fused(x, w, b, **kw, **options)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch_output_format(x, w))
    assert im2win.explain(x, w, b, **kw, **options).uses_im2win
    want = expected(x, w, b, s, activation, r, residual == "after", **kw)
    assert_close(y, want, GPU_TIER_TOL[tier])


@pytest.mark.gpu
@pytest.mark.parametrize("residual", RESIDUAL_MODES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("tier", GPU_TIERS)
def test_gpu_every_activation_and_residual(tier, activation, residual):
    torch.manual_seed(16)
    check_gpu("c16_5x6_k17_3x3_same", tier, "channels_last", True, True, activation, residual)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tier", GPU_TIERS)
@pytest.mark.parametrize("case", GPU_CASES)
def test_gpu_shapes_tiers_layouts(case, tier, layout):
    torch.manual_seed(17)
    for bias, scale, activation, residual in COMBOS.values():
        check_gpu(case, tier, layout, bias, scale, activation, residual)


@pytest.mark.gpu
@pytest.mark.aten_choice
@pytest.mark.parametrize("tier", ["ieee", "bf16"])
def test_gpu_auto_with_pytorch_convolution(tier):
    torch.manual_seed(18)
    dtype, precision = GPU_TIERS[tier]
    xshape, wshape, kw = GPU_CASES["c64_14x14_k96_3x3_s2"]
    x, w = randn(*xshape, dtype=dtype), randn(*wshape, dtype=dtype)
    s, r = randn(96), randn(4, 96, 7, 7, dtype=dtype)
    options = dict(scale=s, activation="gelu", residual=r, precision=precision)
    assert not im2win.explain(x, w, **kw, **options).uses_im2win  # an NCHW layer: cuDNN's
    y = im2win.conv2d_fused(x, w, **kw, **options)
    assert_close(y, expected(x, w, None, s, "gelu", r, False, **kw), GPU_TIER_TOL[tier])


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True], ids=["conv2d", "conv2d_fused"])
def test_gpu_split_k_relaunches_its_sum(fused, monkeypatch):
    """Later calls of a signature launch the kernel and split-K's sum past Triton's dispatch,
    with fresh values, plain or fused."""
    counted = {}
    for module_name, name in (("conv2d_fwd", "_conv2d_fwd_kernel"),
                              ("split_k", "_sum_slices_kernel")):  # fmt: skip
        module = importlib.import_module(f"im2win.kernels.{module_name}")
        counted[name] = CountingKernel(getattr(module, name))
        monkeypatch.setattr(module, name, counted[name])
    plan._PLANS.clear()
    torch.manual_seed(19)
    xshape, wshape, kw = GPU_CASES["deep_c512_7x7_k512_b1"]
    for _ in range(3):
        x, w = randn(*xshape, dtype=torch.bfloat16), randn(*wshape, dtype=torch.bfloat16)
        b, s = randn(512, dtype=torch.bfloat16), randn(512)
        r = randn(1, 512, 7, 7, dtype=torch.bfloat16)
        if fused:
            y = im2win.conv2d_fused(x, w, b, **kw, scale=s, activation="silu", residual=r)
            want = expected(x, w, b, s, "silu", r, False, **kw)
        else:
            y = im2win.conv2d(x, w, b, **kw)
            want = reference(x, w, b, **kw)
        assert_close(y, want, GPU_TIER_TOL["bf16"])
    choice = plan._PLANS[next(iter(plan._PLANS))].choice
    assert choice.variant.name == "pointer" and choice.config["SPLIT_K"] > 1
    assert [kernel.dispatches for kernel in counted.values()] == [1, 1]


@pytest.mark.gpu
def test_gpu_compile_with_inductor():
    torch.manual_seed(20)
    x, w, b, s = randn(*BASE[0]), randn(*BASE[1]), randn(5), randn(5)
    r = randn(2, 5, 7, 9)

    def block(x, w, b, s, r):
        return im2win.conv2d_fused(x, w, b, padding=1, scale=s, activation="gelu", residual=r)

    torch._dynamo.reset()
    y = torch.compile(block, fullgraph=True)(x, w, b, s, r)
    assert_close(y, expected(x, w, b, s, "gelu", r, False, padding=1), TOL[torch.float32])


@pytest.mark.gpu
def test_gpu_paper_backend_refuses_an_epilogue():
    x, w = randn(*BASE[0]), randn(*BASE[1])
    with pytest.raises(ValueError, match="backend='paper'.*epilogue"):
        im2win.conv2d_fused(x, w, padding=1, activation="relu", backend="paper")
