"""Call plans: kept per call signature, reused, and never shared by calls that differ."""

import importlib

import pytest
import torch

import im2win
from helpers import (
    GPU_TIER_TOL,
    TOL,
    CountingKernel,
    assert_close,
    randn,
    reference,
    stage_everything,
)
from im2win import plan


@pytest.fixture(autouse=True)
def no_plans():
    plan._PLANS.clear()
    yield
    plan._PLANS.clear()


def test_a_signature_is_planned_once(monkeypatch):
    torch.manual_seed(0)
    x, w = randn(2, 3, 9, 8), randn(4, 3, 3, 3)
    assert_close(im2win.conv2d(x, w, padding=1), reference(x, w, padding=1), TOL[torch.float32])
    assert len(plan._PLANS) == 1

    def unexpected(*args, **kwargs):
        raise AssertionError("a kept signature was planned again")

    monkeypatch.setattr(plan, "make_plan", unexpected)
    x2, w2 = randn(2, 3, 9, 8), randn(4, 3, 3, 3)  # new values, same signature
    assert_close(im2win.conv2d(x2, w2, padding=1), reference(x2, w2, padding=1),
                 TOL[torch.float32])  # fmt: skip
    w2.mul_(-2)  # an in-place update is seen: plans keep no tensor values
    assert_close(im2win.conv2d(x2, w2, padding=1), reference(x2, w2, padding=1),
                 TOL[torch.float32])  # fmt: skip


def test_a_planned_tma_launch_reads_each_calls_tensors(monkeypatch):
    """The TMA path plans its tiles and descriptor geometry once; every call still builds its
    descriptors from its own input, filter and output (new values, same signature). 64
    channels over 16x16 pixels: window tiles on a GPU (full channel blocks that waste
    nothing), as in the interpreter."""
    module = importlib.import_module("im2win.kernels.conv2d_fwd_tma")
    counting = CountingKernel(module._conv2d_fwd_tma_kernel)
    monkeypatch.setattr(module, "_conv2d_fwd_tma_kernel", counting)
    torch.manual_seed(5)
    for _ in range(3):
        x = randn(2, 64, 16, 16, dtype=torch.float16, channels_last=True)
        w, b = randn(24, 64, 3, 3, dtype=torch.float16), randn(24, dtype=torch.float16)
        y = im2win.conv2d(x, w, b, padding=1, backend="triton")
        assert_close(y, reference(x, w, b, padding=1), TOL[torch.float16])
    assert len(plan._PLANS) == 1
    assert counting.dispatches >= 1  # the TMA kernel served the calls


@pytest.mark.parametrize("bad", [1.0, True, (1.0, 1), (True, 1)])
def test_equal_arguments_of_other_types_still_fail(bad):
    x, w = randn(1, 3, 6, 6), randn(2, 3, 3, 3)
    im2win.conv2d(x, w, stride=1, backend="triton")
    with pytest.raises(TypeError, match="stride"):
        im2win.conv2d(x, w, stride=bad)


def test_signature_tells_apart_what_the_choices_read():
    x, w = randn(2, 4, 8, 8), randn(4, 4, 3, 3)
    base = plan.signature(x, w, None, (1, 0, 1, 1, None, "auto", None))
    variants = {
        "strides": (x.to(memory_format=torch.channels_last), w, None),
        "alignment": (randn(2 * 4 * 8 * 8 + 1)[1:].view(2, 4, 8, 8), w, None),
        "dtype": (x.double(), w.double(), None),
        "bias": (x, w, randn(4)),
    }
    keys = {
        name: plan.signature(*t, (1, 0, 1, 1, None, "auto", None)) for name, t in variants.items()
    }
    assert len({base, *keys.values()}) == 1 + len(variants)
    assert plan.signature(x, w, None, ([1, 1], 0, 1, 1, None, "auto", None)) is None
    assert plan.signature(x.to_sparse(), w, None, (1, 0, 1, 1, None, "auto", None)) is None
    assert plan.signature(x, w, None, (1, 0, 1, 1, None, "auto", None)) == base


def test_lists_and_pinned_configs_are_planned_each_call():
    x, w = randn(1, 3, 7, 7), randn(2, 3, 3, 3)
    im2win.conv2d(x, w, padding=[1, 1])
    config = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=1)
    im2win.conv2d(x, w, config=config)
    assert not plan._PLANS


def test_plans_are_bounded(monkeypatch):
    monkeypatch.setattr(plan, "MAX_PLANS", 3)
    w = randn(2, 1, 1, 1)
    for size in range(1, 8):
        im2win.conv2d(randn(1, 1, size, 1), w)
        assert 1 <= len(plan._PLANS) <= 3


def test_empty_batch_backward():
    x = randn(0, 3, 7, 6).requires_grad_()
    w, b = randn(4, 3, 2, 3).requires_grad_(), randn(4).requires_grad_()
    y = im2win.conv2d(x, w, b, padding=1, backend="triton")
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))


# (kernel module, kernel name, input shape, weight shape, groups, dtype, channels_last, padding)
RELAUNCHED = {
    "pointer-nchw": ("conv2d_fwd", "_conv2d_fwd_kernel", (3, 5, 9, 11), (7, 5, 3, 3), 1,
                     torch.float32, False, 1),
    "pointer-nhwc-flat": ("conv2d_fwd", "_conv2d_fwd_kernel", (2, 3, 10, 9), (4, 3, 3, 2), 1,
                          torch.float16, True, 0),
    "tma-nhwc": ("conv2d_fwd_tma", "_conv2d_fwd_tma_kernel", (2, 64, 16, 16), (128, 64, 3, 3), 1,
                 torch.bfloat16, True, 1),
    "strips-nhwc": ("conv2d_fwd_strips", "_conv2d_fwd_strips_kernel", (64, 128, 28, 28),
                    (128, 128, 3, 3), 1, torch.bfloat16, True, 1),  # Hopper
    "depthwise-nhwc": ("conv2d_dw", "_conv2d_fwd_dw_rows_kernel", (2, 6, 9, 7), (6, 1, 3, 3), 6,
                       torch.float32, True, 1),
    "depthwise-nchw": ("conv2d_dw", "_conv2d_fwd_dw_kernel", (2, 6, 9, 7), (6, 1, 3, 3), 6,
                       torch.float32, False, 1),
    "grouped": ("conv2d_grouped", "_conv2d_fwd_grouped_kernel", (2, 16, 9, 7), (24, 4, 3, 3), 4,
                torch.bfloat16, False, 1),
}  # fmt: skip


TIER_OF = {torch.float32: "ieee", torch.float16: "fp16", torch.bfloat16: "bf16"}


@pytest.mark.gpu
@pytest.mark.parametrize("case", RELAUNCHED)
def test_a_plan_skips_triton_dispatch_after_its_first_call(case, monkeypatch):
    """Later calls of a signature go straight to the compiled kernel, with fresh values."""
    module_name, kernel_name, xshape, wshape, groups, dtype, cl, padding = RELAUNCHED[case]
    module = importlib.import_module(f"im2win.kernels.{module_name}")
    counting = CountingKernel(getattr(module, kernel_name))
    monkeypatch.setattr(module, kernel_name, counting)
    torch.manual_seed(7)
    for _ in range(3):
        x = randn(*xshape, dtype=dtype, channels_last=cl)
        w, b = randn(*wshape, dtype=dtype), randn(wshape[0], dtype=dtype)
        y = im2win.conv2d(x, w, b, padding=padding, groups=groups, backend="triton")
        ref = reference(x, w, b, padding=padding, groups=groups)
        assert_close(y, ref, GPU_TIER_TOL[TIER_OF[dtype]])
    assert counting.dispatches == 1


@pytest.mark.gpu
def test_staged_chunks_relaunch_each_at_its_own_offset(monkeypatch):
    """Three one-image chunks, output slices 45000 bytes apart (every other one off a
    16-byte boundary): each chunk's plan and copy dispatch once, later calls relaunch."""
    stage_everything(monkeypatch, chunk_bytes=64 * 15 * 15 * 2)
    counted = []
    for module_name, kernel_name in (("conv2d_fwd_tma", "_conv2d_fwd_tma_kernel"),
                                     ("relayout", "_to_channels_last_kernel")):  # fmt: skip
        module = importlib.import_module(f"im2win.kernels.{module_name}")
        counted.append(CountingKernel(getattr(module, kernel_name)))
        monkeypatch.setattr(module, kernel_name, counted[-1])
    torch.manual_seed(8)
    for _ in range(3):
        x = randn(3, 64, 15, 15, dtype=torch.bfloat16)
        w, b = randn(100, 64, 3, 3, dtype=torch.bfloat16), randn(100, dtype=torch.bfloat16)
        y = im2win.conv2d(x, w, b, padding=1, backend="triton")
        assert y.is_contiguous()
        assert_close(y, reference(x, w, b, padding=1), GPU_TIER_TOL["bf16"])
    assert [kernel.dispatches for kernel in counted] == [3, 3]


@pytest.mark.parametrize("gluon", [False, True])
def test_a_relaunch_hands_the_launcher_the_descriptor_fields_a_dispatch_would(gluon):
    """After a slot's first launch, descriptors skip the TensorDescriptor's checks: Triton's
    launcher reads the same base, shape, strides and padding of both."""
    from triton.backends.nvidia.driver import make_tensordesc_arg

    from im2win.kernels.launch import Descriptor, descriptor

    if gluon:
        from triton.experimental.gluon import language as gl
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

        rest = ([1, 4, 8, 64], gl.NVMMASharedLayout.get_default_for([1, 4, 8, 64], gl.bfloat16))
    else:
        from triton.tools.tensor_descriptor import TensorDescriptor

        rest = ([1, 4, 8, 64],)
    x = torch.empty(2, 6, 10, 64, dtype=torch.bfloat16)
    shape, strides = list(x.shape), list(x.stride())
    checked = descriptor(TensorDescriptor, {}, x, shape, strides, *rest)  # first launch
    relaunched = descriptor(TensorDescriptor, {"runner": None}, x, shape, strides, *rest)
    assert type(checked) is TensorDescriptor and type(relaunched) is Descriptor
    assert make_tensordesc_arg(relaunched, None) == make_tensordesc_arg(checked, None)
    with pytest.raises(AssertionError):  # the first launch's checks: a misaligned stride
        descriptor(TensorDescriptor, None, x, shape, [630, 63, 63, 1], *rest)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "module_name, kernel_name, xshape, wshape, groups",
    [("conv2d_wgrad_tma", "_conv2d_wgrad_tma_kernel", (4, 64, 14, 13), (72, 64, 3, 3), 1),
     ("conv2d_wgrad", "_conv2d_wgrad_kernel", (4, 64, 14, 13), (72, 64, 1, 1), 1),
     ("conv2d_wgrad", "_conv2d_wgrad_dw_kernel", (4, 32, 14, 13), (32, 1, 3, 3), 32)],
)  # fmt: skip
def test_a_weight_gradient_skips_triton_dispatch_after_its_first_call(
    module_name, kernel_name, xshape, wshape, groups, monkeypatch
):
    """Later weight gradients of a signature relaunch the kernel and the finishing kernel,
    with fresh values, the bias gradient too (`grad._wgrad_kernel`'s plan)."""
    from im2win import grad
    from im2win.params import conv_params

    counted = []
    for module, name in ((module_name, kernel_name), ("conv2d_wgrad", "_wgrad_finish_kernel")):
        module = importlib.import_module(f"im2win.kernels.{module}")
        counted.append(CountingKernel(getattr(module, name)))
        monkeypatch.setattr(module, name, counted[-1])
    monkeypatch.setattr(grad, "_WGRAD_PLANS", {})
    params = conv_params(padding=wshape[2] // 2, groups=groups, kernel_size=wshape[2:])
    torch.manual_seed(10)
    for _ in range(3):
        x = randn(*xshape, dtype=torch.bfloat16, channels_last=True)
        w = randn(*wshape, dtype=torch.bfloat16).requires_grad_()
        x64 = x.double().requires_grad_()
        y = torch.nn.functional.conv2d(x64, w.double(), padding=wshape[2] // 2, groups=groups)
        dy = randn(*y.shape, dtype=torch.bfloat16, channels_last=True)
        got, got_bias = grad.weight_grad(x, wshape, dy, params, precision=None, backend="auto",
                                         bias=True)  # fmt: skip
        want = torch.autograd.grad(y, w, dy.double())[0]
        assert_close(got, want, GPU_TIER_TOL["bf16"])
        assert_close(got_bias, dy.double().sum((0, 2, 3)), GPU_TIER_TOL["bf16"])
    assert [kernel.dispatches for kernel in counted] == [1, 1]
