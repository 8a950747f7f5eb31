"""`torch.ops.im2win.conv2d` as PyTorch sees it: opcheck, torch.compile, torch.export,
autocast, CUDA graphs; and the rest of `F.conv2d`'s contract (memory format, float64, numpy
integers, C = 0, sparse inputs, the fp32 precision knob)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import im2win
from helpers import DEVICE, TOL, assert_close, randn, reference, torch_output_format
from im2win.autograd import BACKWARDS
from im2win.params import ConvParams
from im2win.plan import trace
from im2win.problem import MathMode

OP = torch.ops.im2win.conv2d.default

# (input shape, weight shape, stride, padding per side, dilation, groups, channels_last)
SAMPLES = {
    "plain": ((2, 3, 7, 6), (4, 3, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 1, False),
    "strided_dilated": ((1, 4, 9, 8), (6, 4, 2, 3), [2, 1], [0, 0, 2, 2], [2, 1], 1, False),
    "grouped_nhwc": ((2, 6, 6, 7), (6, 2, 3, 3), [1, 2], [1, 1, 0, 0], [1, 1], 3, True),
    "asymmetric_pad": ((1, 2, 5, 5), (3, 2, 4, 2), [1, 1], [1, 2, 0, 1], [1, 1], 1, False),
}


def sample(name, dtype=torch.float32, grad=False):
    xshape, wshape, stride, padding, dilation, groups, cl = SAMPLES[name]
    x = randn(*xshape, dtype=dtype, channels_last=cl).requires_grad_(grad)
    w = randn(*wshape, dtype=dtype).requires_grad_(grad)
    b = randn(wshape[0], dtype=dtype).requires_grad_(grad)
    return (x, w, b, stride, padding, dilation, groups, None, "auto", None)


def small_model() -> torch.nn.Module:
    torch.manual_seed(3)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, groups=2), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1),
    )  # fmt: skip
    return model.to(DEVICE).eval()


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("name", SAMPLES)
def test_opcheck(name, grad):
    """Schema, fake tensor, autograd registration and AOT dispatch (static and dynamic)."""
    torch.library.opcheck(OP, sample(name, grad=grad))


def test_opcheck_bf16():
    torch.library.opcheck(OP, sample("grouped_nhwc", dtype=torch.bfloat16))


# The gradient operators: (grad_output or input layout, geometry, bias), one strided.
GRAD_SAMPLES = {
    "nchw_p1": (False, ((2, 3, 7, 9), (4, 3, 3, 3)), ([1, 1], [1, 1, 1, 1], [1, 1], 1), True),
    "nhwc_s2_groups": (True, ((1, 4, 9, 8), (6, 2, 3, 3)), ([2, 2], [1, 0, 1, 1], [1, 1], 2),
                       False),
}  # fmt: skip


@pytest.mark.parametrize("name", GRAD_SAMPLES)
def test_opcheck_gradient_operators(name):
    """`im2win.conv2d_input_grad` and `conv2d_weight_grad`, which torch.compile traces in
    im2win's backward: schema, fake tensors (shapes, strides, dtypes) against real ones."""
    from im2win import grad

    channels_last, (xshape, wshape), (stride, padding, dilation, groups), bias = GRAD_SAMPLES[name]
    x, w = randn(*xshape, channels_last=channels_last), randn(*wshape)
    p, q = ConvParams(tuple(stride), tuple(padding), tuple(dilation), groups).output_size(
        *xshape[2:], *wshape[2:]
    )
    dy = randn(xshape[0], wshape[0], p, q, channels_last=channels_last)
    geometry = (stride, padding, dilation, groups, None)
    torch.library.opcheck(grad.input_grad_op, (dy, w, list(xshape), *geometry))
    torch.library.opcheck(grad.weight_grad_op, (x, dy, list(wshape), *geometry, bias))


def test_gradient_operators_check_their_arguments():
    """Called as operators, the gradients name a grad_output that does not fit."""
    from im2win import grad

    x, w = randn(2, 3, 7, 9), randn(4, 3, 3, 3)
    dy = randn(2, 4, 5, 5)  # a 7 x 9 input and 3 x 3 filter give 5 x 7 outputs, unpadded
    geometry = ([1, 1], [0, 0, 0, 0], [1, 1], 1, None)
    with pytest.raises(ValueError, match="grad_output.*5 x 7"):
        torch.ops.im2win.conv2d_input_grad(dy, w, [2, 3, 7, 9], *geometry)
    with pytest.raises(ValueError, match="grad_output.*5 x 7"):
        torch.ops.im2win.conv2d_weight_grad(x, dy, [4, 3, 3, 3], *geometry, False)
    with pytest.raises(ValueError, match="weight_size"):
        grad.weight_grad_op(x, randn(2, 4, 5, 7), [4, 3, 3], *geometry, False)


def test_fake_output_matches_the_real_one():
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = sample("grouped_nhwc")
    real = OP(*args)
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = OP(*fake_args)
    assert (fake.shape, fake.stride(), fake.dtype) == (real.shape, real.stride(), real.dtype)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compile_fullgraph_a_converted_model(backend):
    model = small_model()
    x = randn(2, 3, 9, 10)
    expected = reference_model(model, x)
    im2win.convert(model)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    assert_close(compiled(x), expected, TOL[torch.float32])
    # A second batch size: one more graph for the whole model at most, none per layer.
    x1 = randn(1, 3, 9, 10)
    assert_close(compiled(x1), reference_model(model, x1), TOL[torch.float32])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2


@pytest.mark.parametrize("backward_kernels", BACKWARDS)
def test_compiled_training_step_matches_eager(monkeypatch, backward_kernels):
    """With either backward: im2win's traced through its gradient operators."""
    monkeypatch.setenv("IM2WIN_BACKWARD", backward_kernels)
    model = im2win.convert(small_model().train())
    x = randn(2, 3, 9, 10)
    model(x).square().sum().backward()
    eager = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch._dynamo.reset()
    torch.compile(model, fullgraph=True, backend="aot_eager")(x).square().sum().backward()
    for ours, theirs in zip([p.grad for p in model.parameters()], eager, strict=True):
        assert_close(ours, theirs, 1e-5)


def test_export_puts_the_operator_in_the_graph():
    model = im2win.convert(small_model())
    x = randn(2, 3, 9, 10)
    program = torch.export.export(model, (x,))
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert targets.count(OP) == 3
    assert_close(program.module()(x), reference_model(model, x), TOL[torch.float32])


def reference_model(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's function in float64 through PyTorch's own convolution."""
    with torch.no_grad():
        out = x.double()
        for layer in model:
            if isinstance(layer, torch.nn.Conv2d):
                out = F.conv2d(out, layer.weight.double(), layer.bias.double(), layer.stride,
                               layer.padding, layer.dilation, layer.groups)  # fmt: skip
            else:
                out = layer(out)
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_casts_as_conv2d_does(dtype):
    device_type = torch.device(DEVICE).type
    if device_type == "cpu" and dtype == torch.float16:
        pytest.skip("CPU autocast's default and tested dtype is bfloat16")
    x, w, b = randn(2, 3, 8, 9), randn(5, 3, 3, 3), randn(5)
    with torch.autocast(device_type, dtype=dtype):
        ours = im2win.conv2d(x, w, b, padding=1)
        theirs = F.conv2d(x, w, b, padding=1)
        kept = im2win.conv2d(x.double(), w.double(), b.double(), padding=1)  # float64 stays
        # The operator itself (what compiled graphs call) has the same rule.
        direct = OP(x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 1, None, "auto", None)
    assert ours.dtype == theirs.dtype == direct.dtype == dtype and kept.dtype == torch.float64
    cast = [t.to(dtype) for t in (x, w, b)]
    assert_close(ours, reference(*cast, padding=1), TOL[dtype])
    assert_close(direct, reference(*cast, padding=1), TOL[dtype])


def test_autocast_gradients_reach_the_float32_parameters():
    conv = im2win.convert(torch.nn.Conv2d(3, 4, 3, padding=1, device=DEVICE))
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        conv(randn(2, 3, 6, 5)).float().square().sum().backward()
    assert conv.weight.grad.dtype == torch.float32 and torch.isfinite(conv.weight.grad).all()
    assert conv.weight.grad.abs().sum() > 0


def test_autocast_mixes_with_cast_layers():
    """A converted conv after a layer autocast leaves in bf16, before one it casts back."""
    model = im2win.convert(torch.nn.Sequential(
        torch.nn.Linear(9, 9), torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2),
    ).to(DEVICE))  # fmt: skip
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        out = model(randn(2, 3, 9, 9))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def _format_case(case: str):
    """(input, weight, conv kwargs, backend) of the cases the output format once differed."""
    if case == "cl_weight_nchw_input":
        return randn(2, 4, 7, 6), randn(5, 4, 3, 3, channels_last=True), dict(padding=1), "auto"
    if case == "cl_strided_noncontiguous_input":
        x = randn(2, 4, 7, 12, channels_last=True)[..., ::2]
        return x, randn(5, 4, 3, 3), dict(padding=1), "auto"
    if case == "c1_channels_last":
        return randn(2, 1, 7, 6, channels_last=True), randn(5, 1, 3, 3), dict(padding=1), "auto"
    # The reference backend once returned a non-dense output here.
    kw = dict(stride=3, padding=(3, 2), dilation=2, groups=5)
    return randn(2, 5, 12, 8), randn(5, 1, 4, 4), kw, "reference"


@pytest.mark.parametrize(
    "case",
    ["cl_weight_nchw_input", "cl_strided_noncontiguous_input", "c1_channels_last",
     "reference_depthwise"],
)  # fmt: skip
def test_output_memory_format_follows_pytorch(case):
    x, w, kw, backend = _format_case(case)
    y = im2win.conv2d(x, w, **kw, backend=backend)
    assert y.is_contiguous(memory_format=torch_output_format(x, w))  # dense, PyTorch's format
    assert_close(y, reference(x, w, **kw), TOL[torch.float32])


def test_float64_on_every_device_is_exact():
    x, w, b = (t.double() for t in (randn(2, 3, 7, 6), randn(4, 3, 3, 3), randn(4)))
    y = im2win.conv2d(x, w, b, padding=1)
    assert y.dtype == torch.float64
    assert_close(y, reference(x, w, b, padding=1), 1e-12)


def test_numpy_integer_arguments():
    x, w = randn(2, 3, 9, 8), randn(4, 3, 3, 3)
    kw = dict(stride=np.int64(2), padding=(np.int32(1), 1), dilation=np.int16(1),
              groups=np.int64(1))  # fmt: skip
    assert_close(im2win.conv2d(x, w, **kw), reference(x, w, stride=2, padding=1), 1e-5)


def test_no_input_channels_gives_the_bias():
    x, w, b = randn(2, 0, 5, 6), torch.empty(3, 0, 3, 3, device=DEVICE), randn(3)
    y = im2win.conv2d(x, w, b, padding=1)
    assert y.shape == (2, 3, 5, 6)
    assert torch.equal(y, b.view(1, 3, 1, 1).expand(2, 3, 5, 6))
    assert torch.equal(im2win.conv2d(x, w), torch.zeros(2, 3, 3, 4, device=DEVICE))


def test_sparse_input_is_a_type_error():
    x, w = randn(2, 3, 5, 5).to_sparse(), randn(4, 3, 3, 3)
    with pytest.raises(TypeError, match="input must be a dense.*sparse"):
        im2win.conv2d(x, w)


@pytest.mark.parametrize(
    "knob, mode", [("highest", "ieee"), ("high", "tf32x3"), ("medium", "tf32")]
)
def test_fp32_follows_the_matmul_precision(knob, mode):
    x, w = randn(2, 3, 7, 6), randn(4, 3, 3, 3)
    was = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(knob)
    try:
        assert im2win.explain(x, w).problem.math.value == mode
        assert im2win.explain(x, w, precision="ieee").problem.math.value == "ieee"
        y = im2win.conv2d(x, w)
    finally:
        torch.set_float32_matmul_precision(was)
    assert_close(y, reference(x, w), 2e-3 if mode == "tf32" else 1e-5)


@pytest.mark.aten_choice
def test_trace_reports_each_call_and_its_engine():
    model = im2win.convert(small_model())
    x = randn(2, 3, 9, 10)
    with trace() as plans:
        model(x)
    # On a CPU every call runs the kernels (interpreted); on a GPU the stem does, and the
    # grouped and 1x1 fp32 NCHW layers run PyTorch's convolution, which cuDNN wins.
    on_gpu = torch.device(DEVICE).type == "cuda"
    assert [plan.uses_im2win for plan in plans] == [True, not on_gpu, not on_gpu]
    pinned = im2win.explain(x, randn(8, 3, 3, 3), config=dict(VARIANT="aten"))
    assert not pinned.uses_im2win and "aten (pinned)" in str(pinned)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_pytorch_convolution_choice_gets_pytorch_gradients(dtype):
    """A 16-bit call run by PyTorch's convolution records aten's own autograd node (no Python
    one); fp32 keeps im2win's, whose backward holds the forward's math mode."""
    torch.manual_seed(3)
    x = randn(2, 4, 7, 6, dtype=dtype).requires_grad_()
    w, b = randn(5, 4, 3, 3, dtype=dtype).requires_grad_(), randn(5, dtype=dtype).requires_grad_()
    y = im2win.conv2d(x, w, b, padding=1, config=dict(VARIANT="aten"))
    own_node = "Convolution" in type(y.grad_fn).__name__
    assert own_node == (dtype != torch.float32), type(y.grad_fn).__name__
    grads = torch.autograd.grad(y.sum(), (x, w, b))
    exact = [t.detach().double().requires_grad_() for t in (x, w, b)]
    want = torch.autograd.grad(F.conv2d(*exact, padding=1).sum(), exact)
    for got, expected in zip(grads, want, strict=True):
        assert_close(got, expected, TOL[dtype])


@pytest.mark.gpu
def test_cuda_graph_capture_and_replay():
    model = im2win.convert(small_model())
    x = randn(4, 3, 16, 16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(2):
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        out = model(x)
    x.copy_(randn(4, 3, 16, 16))
    graph.replay()
    assert_close(out, reference_model(model, x), TOL[torch.float32])


@pytest.mark.gpu
@pytest.mark.parametrize("backward_kernels", BACKWARDS)
def test_cuda_graph_training_step(monkeypatch, backward_kernels):
    """A whole training step (forward, loss, backward) captured in a CUDA graph and replayed
    on new data gives the gradients an eager step gives, with either backward."""
    monkeypatch.setenv("IM2WIN_BACKWARD", backward_kernels)
    model = im2win.convert(small_model().train())
    eager_model = copy.deepcopy(model)
    x = randn(4, 3, 16, 16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up: compile, plan, allocate
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            model(x).square().sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    model.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model(x).square().sum().backward()
    x.copy_(randn(4, 3, 16, 16))
    graph.replay()
    eager_model(x).square().sum().backward()
    for got, want in zip(model.parameters(), eager_model.parameters(), strict=True):
        assert_close(got.grad, want.grad, 1e-5)


@pytest.mark.gpu
def test_compile_with_inductor_on_the_gpu():
    model = im2win.convert(small_model())
    x = randn(2, 3, 9, 10)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    assert_close(compiled(x), reference_model(model, x), TOL[torch.float32])


@pytest.mark.gpu
@pytest.mark.aten_choice
def test_compiled_16bit_layers_cudnn_wins_are_traced_as_aten():
    """The stem stays the im2win operator; deeper layers become aten convolutions."""
    model = im2win.convert(small_model()).to(torch.bfloat16)
    x = randn(2, 3, 9, 10, dtype=torch.bfloat16)
    program = torch.export.export(model, (x,))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert targets.count("im2win.conv2d.default") == 1
    assert sum("convolution" in t or "conv2d" in t for t in targets) == 3
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    assert_close(compiled(x), reference_model(model, x), TOL[torch.bfloat16])


def test_fp32_math_mode_is_read_when_a_graph_is_traced():
    """The fp32 math mode follows torch's matmul precision inside a full graph too (dynamo
    cannot trace the getter itself), and a change of precision recompiles."""
    fn = torch.compile(lambda x: x + MathMode.of(x.dtype).value.count("tf32"), fullgraph=True,
                       backend="eager")  # fmt: skip
    x = torch.zeros(3)
    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert fn(x).tolist() == [0.0] * 3  # 'ieee'
        torch.set_float32_matmul_precision("high")
        assert fn(x).tolist() == [1.0] * 3  # 'tf32x3'
    finally:
        torch.set_float32_matmul_precision(saved)
