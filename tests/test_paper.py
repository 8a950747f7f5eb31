"""The paper's CUDA kernels (im2win.paper) against float64 torch.nn.functional.conv2d.

Every variant and baseline on odd shapes (no size a multiple of any tile) and on the paper's
twelve layers at batch 128; outputs start as NaN (conftest), so unwritten elements fail.
"""

import pytest
import torch

import im2win.paper as paper
from helpers import assert_close, reference
from im2win.bench.layers import PAPER_BATCH, PAPER_LAYERS

TOL = 1e-5  # fp32 FMA, relative to ||ref||

METHODS = paper.METHODS  # name -> f(x, w, b, **conv kwargs)

# (input shape, weight shape, conv kwargs): N = 1, 2, 3; C = 1, 3, 5, 37; K = 7, 130;
# 13/17/9x11 inputs; 1x1, 3x3, 5x5, 3x5 filters; stride 1/2/3, padding 0/1/2, dilation 1/2.
CASES = {
    "n3c3_13x13_k7_3x3_p1": ((3, 3, 13, 13), (7, 3, 3, 3), dict(padding=1)),
    "n1c1_17x17_k130_5x5_s2p2": ((1, 1, 17, 17), (130, 1, 5, 5), dict(stride=2, padding=2)),
    "n2c5_13x17_k7_1x1_s3": ((2, 5, 13, 17), (7, 5, 1, 1), dict(stride=3)),
    "n3c5_17x13_k130_3x3_p2d2": ((3, 5, 17, 13), (130, 5, 3, 3), dict(padding=2, dilation=2)),
    "n1c3_13x13_k7_5x5_s2d2": ((1, 3, 13, 13), (7, 3, 5, 5), dict(stride=2, dilation=2)),
    "n3c3_17x17_k130_3x3_s3p1": ((3, 3, 17, 17), (130, 3, 3, 3), dict(stride=3, padding=1)),
    "n2c3_13x17_k7_3x5_s21p12d12": (
        (2, 3, 13, 17), (7, 3, 3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    ),
    "n2c37_9x11_k130_3x3_p1": ((2, 37, 9, 11), (130, 37, 3, 3), dict(padding=1)),
    "n1c5_13x13_k7_3x3_same": ((1, 5, 13, 13), (7, 5, 3, 3), dict(padding="same")),
}  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", list(METHODS))
def test_odd_shapes(method, case, bias):
    torch.manual_seed(0)
    xshape, wshape, conv = CASES[case]
    x = torch.randn(xshape, device="cuda")
    w = torch.randn(wshape, device="cuda")
    b = torch.randn(wshape[0], device="cuda") if bias else None
    y = METHODS[method](x, w, b, **conv)
    assert y.dtype == torch.float32 and y.is_contiguous()
    assert_close(y, reference(x, w, b, **conv), TOL)


@pytest.mark.gpu
def test_strided_input_and_gemm_entry():
    """A non-contiguous input, and paper_gemm on a window tensor into a strided output."""
    torch.manual_seed(0)
    x = torch.randn(2, 13, 5, 17, device="cuda").permute(0, 2, 1, 3)  # [2, 5, 13, 17], strided
    w = torch.randn(7, 5, 3, 3, device="cuda")
    b = torch.randn(7, device="cuda")
    ref = reference(x, w, b, padding=1)
    for method in ("paper-kernel", "direct", "direct-naive", "im2win-base"):
        assert_close(METHODS[method](x, w, b, padding=1), ref, TOL)

    from im2win.kernels import im2win_transform
    from im2win.params import conv_params
    from im2win.reference import filter_reference

    params = conv_params(padding=1, kernel_size=(3, 3))
    win = im2win_transform(x, 3, params, channels_last=False, interpreted=False)
    y = torch.empty(2, 13, 17, 7, device="cuda").permute(0, 3, 1, 2)  # NHWC memory, NCHW view
    for variant in paper.VARIANTS:
        y.fill_(float("nan"))
        paper.paper_gemm(win, filter_reference(w, False), b, y, 3, 3, 1, 1, variant=variant)
        assert_close(y, ref, TOL)
    y.fill_(float("nan"))
    paper.im2win_base_gemm(win, filter_reference(w, False), b, y, 3, 3, 1, 1)
    assert_close(y, ref, TOL)


_layer_cache: dict = {}


def _layer_data(layer):
    """(x, w, float64 reference) of one paper layer; only the latest layer is kept."""
    if layer.name not in _layer_cache:
        _layer_cache.clear()
        torch.cuda.empty_cache()
        torch.manual_seed(0)
        xshape, wshape = layer.shapes(PAPER_BATCH)
        x = torch.randn(xshape, device="cuda")
        w = torch.randn(wshape, device="cuda")
        _layer_cache[layer.name] = (x, w, reference(x, w, **layer.conv_kwargs()))
    return _layer_cache[layer.name]


@pytest.mark.gpu
@pytest.mark.parametrize(
    "layer, method",
    [pytest.param(layer, m, id=f"{layer.name}-{m}") for layer in PAPER_LAYERS for m in METHODS],
)
def test_paper_layers(layer, method):
    """All twelve paper layers at batch 128 -- the released kernel is wrong on six of them."""
    x, w, ref = _layer_data(layer)
    y = METHODS[method](x, w, None, **layer.conv_kwargs())
    assert_close(y, ref, TOL)
    del y
    if method == list(METHODS)[-1]:
        _layer_cache.clear()
        torch.cuda.empty_cache()


def test_import_without_gpu_and_clear_errors():
    """Importing needs neither a GPU nor cuda-python; CPU tensors and bad arguments raise."""
    x = torch.randn(1, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3)
    for fn in (paper.paper_conv2d, paper.direct_conv2d, paper.im2win_base_conv2d):
        with pytest.raises(ValueError, match="CUDA"):
            fn(x, w)
    with pytest.raises(ValueError, match="groups"):
        paper.paper_conv2d(torch.randn(1, 4, 8, 8), torch.randn(4, 2, 3, 3), groups=2)
    with pytest.raises(ValueError, match="variant"):
        paper.paper_conv2d(x, w, variant="fast")
    with pytest.raises(TypeError, match="dtype"):
        paper.paper_conv2d(x.double(), w.double())
    assert set(paper.METHODS) >= {"paper-kernel", "paper-kernel-no-smem", "direct", "im2win-base"}
