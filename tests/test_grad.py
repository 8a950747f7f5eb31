"""`im2win.grad`: a convolution's input and weight gradients on the im2win kernels, against
float64 autograd through `F.conv2d`, on odd shapes: strides that leave phases without
taps, dilation with stride, groups and depthwise, 'same' padding with an even kernel,
padding wider than the filter, batch 1, C = 1 and 3, channels per group a multiple of 16,
both layouts."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from helpers import HOPPER, TOL, assert_close, current_target, randn
from im2win import dgrad, grad
from im2win import plan as im2win_plan
from im2win.params import conv_params
from im2win.variants import INTERPRETER

# input shape, weight shape, conv2d arguments
CASES = {
    "3x3_p1": ((2, 3, 9, 11), (5, 3, 3, 3), dict(padding=1)),
    "3x3_s2_p1": ((2, 4, 9, 10), (6, 4, 3, 3), dict(stride=2, padding=1)),
    "1x1_s2": ((1, 5, 7, 9), (3, 5, 1, 1), dict(stride=2)),
    "5x3_s32_p21": ((1, 3, 13, 11), (4, 3, 5, 3), dict(stride=(3, 2), padding=(2, 1))),
    "3x3_s2_d2_p2": ((2, 2, 12, 9), (3, 2, 3, 3), dict(stride=2, dilation=2, padding=2)),
    "3x2_d31_same": ((1, 1, 8, 7), (2, 1, 3, 2), dict(dilation=(3, 1), padding="same")),
    "1x1_p2": ((1, 2, 4, 5), (3, 2, 1, 1), dict(padding=2)),
    "groups3_s2": ((2, 6, 9, 8), (9, 2, 3, 3), dict(stride=2, padding=1, groups=3)),
    "depthwise_m2": ((1, 3, 7, 9), (6, 1, 3, 3), dict(stride=(1, 2), padding=1, groups=3)),
    # the depthwise weight-gradient kernel: channels past one block, taps not a power of two
    "depthwise_5x3_s2": ((2, 20, 9, 8), (20, 1, 5, 3), dict(stride=2, padding=(2, 1), groups=20)),
    "depthwise_d2": ((1, 5, 8, 9), (5, 1, 3, 3), dict(dilation=2, padding=2, groups=5)),
    "7x7_s2_p3": ((1, 3, 15, 13), (4, 3, 7, 7), dict(stride=2, padding=3)),
    # Cg a multiple of 16: vector-wide window loads in the weight gradient (NCHW copied first)
    "c32_3x3_s2_p1": ((2, 32, 7, 6), (5, 32, 3, 3), dict(stride=2, padding=1)),
    "c32_g2_3x2_d2": ((1, 32, 6, 7), (6, 16, 3, 2), dict(dilation=2, padding=1, groups=2)),
    # The TMA weight-gradient kernel (channels-last copies, Cg a multiple of 16, K and Kg
    # 16 bytes of channels): pixels past the patches, output channels past a tile, a
    # stride's parity view, groups.
    "tma_c32_3x3_p1": ((2, 32, 9, 7), (24, 32, 3, 3), dict(padding=1)),
    "tma_c16_3x3_s2_p1": ((1, 16, 8, 10), (8, 16, 3, 3), dict(stride=2, padding=1)),
    "tma_c32_g2_3x3_d2": ((1, 32, 6, 6), (16, 16, 3, 3), dict(dilation=2, padding=2, groups=2)),
}
TMA_CASES = [case for case in CASES if case.startswith("tma_")]


def reference(x, w, dy, kw):
    x = x.double().requires_grad_()
    w = w.double().requires_grad_()
    F.conv2d(x, w, **kw).backward(dy.double())
    return x.grad, w.grad


def weight_and_bias_gradients(x, w, dy, kw, tolerance):
    """The weight and bias gradients of one pass (`grad.weight_grad`), each checked against
    float64; the weight gradient returned."""
    params = conv_params(**kw, kernel_size=w.shape[2:])
    weight, bias = grad.weight_grad(x, tuple(w.shape), dy, params, precision=None,
                                    backend="auto", bias=True)  # fmt: skip
    assert_close(weight, reference(x, w, dy, kw)[1], tolerance)
    assert_close(bias, dy.double().sum((0, 2, 3)), tolerance)
    return weight


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_autograd(case, layout):
    torch.manual_seed(3)
    xshape, wshape, kw = CASES[case]
    cl = layout == "channels_last"
    x, w = randn(*xshape, channels_last=cl), randn(*wshape)
    dy = randn(*F.conv2d(x, w, **kw).shape, channels_last=cl)
    want_x, want_w = reference(x, w, dy, kw)
    got_x = grad.conv2d_input(x.shape, w, dy, **kw)
    got_w = grad.conv2d_weight(x, w.shape, dy, **kw)
    assert got_x.shape == x.shape and got_w.shape == w.shape
    assert got_x.dtype == got_w.dtype == torch.float32
    assert_close(got_x, want_x, TOL[torch.float32])
    assert_close(got_w, want_w, TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gradients_in_16_bit(dtype):
    torch.manual_seed(4)
    x, w = randn(2, 4, 9, 10, dtype=dtype), randn(6, 4, 3, 3, dtype=dtype)
    dy = randn(2, 6, 5, 5, dtype=dtype)
    want_x, want_w = reference(x, w, dy, dict(stride=2, padding=1))
    assert_close(grad.conv2d_input(x.shape, w, dy, stride=2, padding=1), want_x, TOL[dtype])
    assert_close(grad.conv2d_weight(x, w.shape, dy, stride=2, padding=1), want_w, TOL[dtype])


@pytest.mark.parametrize(
    "call, fragments",
    [
        (lambda x, w, dy: grad.conv2d_input((2, 3, 9), w, dy), ["input_size", "four ints"]),
        (lambda x, w, dy: grad.conv2d_input((2, 3, 9, 12), w, dy, padding=1),
         ["grad_output", "9 x 12"]),
        (lambda x, w, dy: grad.conv2d_input(x.shape, w.double(), dy), ["grad_output", "weight"]),
        (lambda x, w, dy: grad.conv2d_weight(x, (5, 3, 3), dy), ["weight_size", "four"]),
        (lambda x, w, dy: grad.conv2d_weight(x, (5, 2, 3, 3), dy, padding=1),
         ["weight_size", "groups=1", "input"]),
        (lambda x, w, dy: grad.conv2d_weight(x.half(), w.shape, dy), ["grad_output", "input"]),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(call, fragments):
    x, w, dy = randn(2, 3, 9, 11), randn(5, 3, 3, 3), randn(2, 5, 9, 11)
    with pytest.raises((ValueError, TypeError), match=".*".join(fragments)):
        call(x, w, dy)


@pytest.mark.parametrize("case", ["3x3_s2_p1", "depthwise_5x3_s2"])
def test_weight_gradient_in_slices_is_reproducible(monkeypatch, case):
    """The weight-gradient kernels' reduction cut into slices (as on a GPU's many SMs)
    matches autograd and gives the same bits on every run."""
    monkeypatch.setitem(current_target().table["wgrad"], "waves", 64)  # as many slices as allowed
    torch.manual_seed(6)
    xshape, wshape, kw = CASES[case]
    x, w = randn(*xshape, channels_last=True), randn(*wshape)
    dy = randn(*F.conv2d(x, w, **kw).shape)
    first = grad.conv2d_weight(x, w.shape, dy, **kw)
    assert torch.equal(first, grad.conv2d_weight(x, w.shape, dy, **kw))
    assert_close(first, reference(x, w, dy, kw)[1], TOL[torch.float32])
    # The bias gradient, summed in the same pass and in the same slices.
    assert torch.equal(weight_and_bias_gradients(x, w, dy, kw, TOL[torch.float32]), first)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("taps, kw", [
    ((2, 2), dict(padding=1)),  # taps a power of two: the bias's tap doubles the block
    ((4, 4), dict(stride=2, padding=1)),
    ((1, 1), dict()),
    ((3, 3), dict(stride=2, padding=1)),
    ((7, 7), dict(padding=3)),
])  # fmt: skip
def test_depthwise_weight_gradient_with_bias(taps, kw, dtype):
    """The depthwise weight-gradient kernel sums the bias gradient as one tap more (a window
    of ones): right beside every filter size, with the taps a power of two or not, on
    channels past one block (the interpreter's: 16)."""
    torch.manual_seed(5)
    x = randn(2, 20, 9, 7, dtype=dtype, channels_last=True)
    w = randn(20, 1, *taps, dtype=dtype)
    kw = dict(kw, groups=20)
    dy = randn(*F.conv2d(x.float(), w.float(), **kw).shape, dtype=dtype, channels_last=True)
    weight_and_bias_gradients(x, w, dy, kw, TOL[dtype])


@pytest.mark.parametrize("case", ["3x3_s2_p1", "depthwise_5x3_s2", "tma_c32_3x3_p1"])
def test_weight_gradient_is_planned_once_a_signature(monkeypatch, case):
    """A signature's weight gradient is chosen once and run again with fresh tensors; a change
    of the rule, or tensors of another signature, plan again."""
    torch.manual_seed(9)
    xshape, wshape, kw = CASES[case]
    made = []
    make = grad._wgrad_plan
    monkeypatch.setattr(grad, "_wgrad_plan", lambda *a: made.append(a) or make(*a))
    monkeypatch.setattr(grad, "_WGRAD_PLANS", {})
    for _ in range(2):
        x, w = randn(*xshape, channels_last=True), randn(*wshape)
        dy = randn(*F.conv2d(x, w, **kw).shape)
        assert_close(grad.conv2d_weight(x, w.shape, dy, **kw), reference(x, w, dy, kw)[1],
                     TOL[torch.float32])  # fmt: skip
    assert len(made) == 1
    monkeypatch.setitem(current_target().table["wgrad"], "waves", 64)  # more slices
    assert_close(grad.conv2d_weight(x, w.shape, dy, **kw), reference(x, w, dy, kw)[1],
                 TOL[torch.float32])  # fmt: skip
    assert len(made) == 2
    x = randn(xshape[0], xshape[1], xshape[2] + 1, xshape[3], channels_last=True)
    dy = randn(*F.conv2d(x, w, **kw).shape)
    assert_close(grad.conv2d_weight(x, w.shape, dy, **kw), reference(x, w, dy, kw)[1],
                 TOL[torch.float32])  # fmt: skip
    assert len(made) == 3


@pytest.mark.parametrize("case", ["3x3_s2_p1", "5x3_s32_p21", "groups3_s2", "1x1_p2"])
def test_input_gradient_is_planned_once_a_signature(monkeypatch, case):
    """A signature's input gradient (its phases, their filters' gather, their convolutions'
    plans) is made once and run again on fresh values; another signature plans again."""
    torch.manual_seed(10)
    xshape, wshape, kw = CASES[case]
    made = []
    make = dgrad._plan
    monkeypatch.setattr(dgrad, "_plan", lambda *a: made.append(a) or make(*a))
    monkeypatch.setattr(dgrad, "_PLANS", {})
    for _ in range(2):
        x, w = randn(*xshape, channels_last=True), randn(*wshape)
        dy = randn(*F.conv2d(x, w, **kw).shape, channels_last=True)
        assert_close(grad.conv2d_input(x.shape, w, dy, **kw), reference(x, w, dy, kw)[0],
                     TOL[torch.float32])  # fmt: skip
    assert len(made) == 1
    w = w.to(memory_format=torch.channels_last)  # another signature: the weight's strides
    assert_close(grad.conv2d_input(x.shape, w, dy, **kw), reference(x, w, dy, kw)[0],
                 TOL[torch.float32])  # fmt: skip
    assert len(made) == 2


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed", "sliced"])
def test_input_gradient_reads_weights_of_any_layout(layout):
    """The phases' filters are gathered from the weight's memory where its elements fill it
    (any order of dimensions), from a contiguous copy where they do not (a slice)."""
    torch.manual_seed(11)
    xshape, wshape, kw = CASES["groups3_s2"]
    w = randn(*wshape)
    if layout == "channels_last":
        w = w.to(memory_format=torch.channels_last)
    elif layout == "transposed":  # dense, dimensions in another order
        w = w.transpose(0, 1).contiguous().transpose(0, 1)
    elif layout == "sliced":
        w = torch.cat([w, randn(*wshape)], dim=3)[..., : wshape[3]]
    x = randn(*xshape)
    dy = randn(*F.conv2d(x, w, **kw).shape)
    assert_close(grad.conv2d_input(x.shape, w, dy, **kw), reference(x, w, dy, kw)[0],
                 TOL[torch.float32])  # fmt: skip


@pytest.mark.aten_choice
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_input_gradient_phases_on_pytorchs_convolution(monkeypatch, layout):
    """Where a phase's convolution is PyTorch's (symmetric padding only), its uneven
    padding is a padded copy of the output gradient: every phase on `aten`, symmetric, and
    the gradient right."""
    from im2win.variants.aten import ATEN

    monkeypatch.setattr(ATEN, "heuristic", lambda problem, target: {})
    monkeypatch.setattr(dgrad, "_PLANS", {})
    torch.manual_seed(12)
    xshape, wshape, kw = CASES["3x3_s2_p1"]
    cl = layout == "channels_last"
    x, w = randn(*xshape, channels_last=cl), randn(*wshape)
    dy = randn(*F.conv2d(x, w, **kw).shape, channels_last=cl)
    with im2win_plan.trace() as plans:
        got = grad.conv2d_input(x.shape, w, dy, **kw)
    assert len(plans) == 4
    assert all(p.choice.variant.name == "aten" and p.problem.params.symmetric_padding is not None
               for p in plans)  # fmt: skip
    assert_close(got, reference(x, w, dy, kw)[0], TOL[torch.float32])


def test_strided_input_gradient_copies_only_its_phases(monkeypatch):
    """A 3x3 stride-2 layer's input gradient, channels-last: one gather makes every phase's
    filter, laid out as the forward kernels read them (no flip, no re-lay), the uneven
    padding is the kernels' own (no padded copy), every input position is some phase's (no
    zero fill): besides the convolutions, one copy a phase into the gradient."""
    from torch.profiler import ProfilerActivity, profile
    from triton.runtime.interpreter import InterpretedFunction

    x = randn(2, 32, 8, 8, channels_last=True)
    w = randn(16, 32, 3, 3)
    kw = dict(stride=2, padding=1)
    dy = randn(*F.conv2d(x, w, **kw).shape, channels_last=True)
    got = grad.conv2d_input(x.shape, w, dy, **kw)  # the plan made
    assert_close(got, reference(x, w, dy, kw)[0], TOL[torch.float32])
    # The interpreter's kernels copy their tensors: count with the kernels left out.
    monkeypatch.setattr(InterpretedFunction, "run", lambda *a, **k: None)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        grad.conv2d_input(x.shape, w, dy, **kw)
    # (not fill_: the tests' poisoned torch.empty fills every fresh tensor)
    launched = [e.name for e in prof.events() if e.name in (
        "aten::copy_", "aten::flip", "aten::zero_", "aten::constant_pad_nd",
        "aten::index_select")]  # fmt: skip
    assert sorted(launched) == ["aten::copy_"] * 4 + ["aten::index_select"], launched


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(
    "wshape, groups", [((5, 4, 3, 3), 1), ((4, 1, 3, 3), 4), ((8, 16, 3, 3), 1)]
)
def test_empty_batch(wshape, groups, channels_last):
    """No images: the weight gradient is zeros (every kernel: the gathers, depthwise, and
    a layer the TMA kernel would take), the input gradient empty."""
    x = randn(0, wshape[1] * groups, 6, 6, channels_last=channels_last)
    w, dy = randn(*wshape), randn(0, wshape[0], 4, 4, channels_last=channels_last)
    zeros = torch.zeros(wshape, device=x.device)
    assert torch.equal(grad.conv2d_weight(x, wshape, dy, groups=groups), zeros)
    assert grad.conv2d_input(x.shape, w, dy, groups=groups).shape == x.shape


def count_tma_calls(monkeypatch) -> list:
    """A list that grows by one at each call of the TMA weight-gradient launcher."""
    conv2d_wgrad = importlib.import_module("im2win.kernels.conv2d_wgrad")  # the module
    calls = []
    tma = conv2d_wgrad.conv2d_wgrad_tma
    monkeypatch.setattr(
        conv2d_wgrad, "conv2d_wgrad_tma", lambda *a, **k: calls.append(1) or tma(*a, **k)
    )
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", TMA_CASES)
def test_weight_gradient_by_tma(monkeypatch, case, dtype):
    """The cases the TMA weight-gradient kernel serves go through it (counted), and match
    autograd in fp32 and bf16, with the bias gradient of the same pass."""
    calls = count_tma_calls(monkeypatch)
    torch.manual_seed(7)
    xshape, wshape, kw = CASES[case]
    x, w = randn(*xshape, dtype=dtype, channels_last=True), randn(*wshape, dtype=dtype)
    dy = randn(*F.conv2d(x.float(), w.float(), **kw).shape, dtype=dtype)
    weight = weight_and_bias_gradients(x, w, dy, kw, TOL[dtype])
    assert calls and weight.dtype == dtype


def test_1x1_weight_gradient_keeps_the_gathers(monkeypatch):
    """A 1x1 layer TMA could read runs the gathers' kernel (`tma_min_taps`), and is right."""
    calls = count_tma_calls(monkeypatch)
    torch.manual_seed(8)
    x, w = randn(2, 32, 5, 6, channels_last=True), randn(16, 32, 1, 1)
    dy = randn(2, 16, 5, 6, channels_last=True)
    got = grad.conv2d_weight(x, w.shape, dy)
    assert not calls
    assert_close(got, reference(x, w, dy, {})[1], TOL[torch.float32])


@pytest.mark.parametrize(
    "dtype, wshape, kernel",
    [(torch.bfloat16, (24, 32, 3, 3), "ws"), (torch.float16, (24, 32, 3, 3), "ws"),
     (torch.float32, (24, 32, 3, 3), "tma"), (torch.bfloat16, (24, 32, 1, 1), "gathers")],
)  # fmt: skip
def test_warp_specialized_weight_gradient_choice(monkeypatch, dtype, wshape, kernel):
    """On a Hopper target whose rule has `ws_tiles`, 16-bit layers the TMA kernel serves take
    the warp-specialized kernel, its channel block cut to Cg and its grid to the SMs; fp32
    keeps the TMA kernel, 1x1 filters the gathers (`tma_min_taps`). With the rule's null
    (as shipped until the GPU suite has run it) and on the interpreter, nothing takes it."""
    conv2d_wgrad = importlib.import_module("im2win.kernels.conv2d_wgrad")
    seen = []
    monkeypatch.setattr(conv2d_wgrad, "conv2d_wgrad_ws", lambda *a, **k: seen.append(("ws", k)))
    monkeypatch.setattr(conv2d_wgrad, "conv2d_wgrad_tma", lambda *a, **k: seen.append(("tma", k)))
    monkeypatch.setattr(conv2d_wgrad, "launch", lambda *a: seen.append(("gathers", {})))
    monkeypatch.setattr(conv2d_wgrad, "_finish", lambda *a, **k: (None, None))
    config = dict(BLOCK_P=8, BLOCK_Q=16, BLOCK_K=64, BLOCK_C=64, CONSUMERS=2, num_stages=4)
    x = torch.empty(2, 32, 9, 7, dtype=dtype).to(memory_format=torch.channels_last)
    dy = torch.empty(2, 24, 9 - wshape[2] + 1, 7 - wshape[3] + 1, dtype=dtype)
    dy = dy.to(memory_format=torch.channels_last)
    params = conv_params(kernel_size=wshape[2:])
    for ws_tiles, target in ((None, HOPPER), (config, INTERPRETER), (config, HOPPER)):
        monkeypatch.setitem(target.table["wgrad"], "ws_tiles", ws_tiles)
        seen.clear()
        grad._wgrad_plan(x, wshape, dy, params, None, True, target).run(x, dy)
        served = ws_tiles is not None and target is HOPPER
        want = kernel if served else "gathers" if kernel == "gathers" else "tma"
        assert [name for name, _ in seen] == [want], (ws_tiles, target.arch)
    assert seen[0][0] != "ws" or (seen[0][1]["config"]["BLOCK_C"] == 32
                                  and seen[0][1]["sms"] == HOPPER.sms)  # fmt: skip
