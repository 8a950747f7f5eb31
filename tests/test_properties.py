"""Property test: random valid convolutions agree with float64 torch.nn.functional.conv2d."""

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import im2win
from helpers import TOL, assert_close, randn, reference, torch_output_format
from im2win.params import conv_params

pair = lambda lo, hi: st.tuples(st.integers(lo, hi), st.integers(lo, hi))


@st.composite
def convolutions(draw):
    groups = draw(st.integers(1, 3))
    c, k = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    n = draw(st.integers(1, 3))
    h, w = draw(pair(1, 12))
    r, s = draw(pair(1, 5))
    stride, dilation = draw(pair(1, 3)), draw(pair(1, 2))
    padding = draw(st.one_of(st.just("valid"), pair(0, 2), st.integers(0, 2)))
    if draw(st.booleans()) and stride == (1, 1):
        padding = "same"
    params = conv_params(stride, padding, dilation, groups, kernel_size=(r, s))
    assume(min(params.output_size(h, w, r, s)) > 0)
    return dict(
        shapes=((n, c, h, w), (k, c // groups, r, s)),
        kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
        bias=draw(st.booleans()),
        channels_last=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(convolutions())
def test_matches_torch(conv):
    torch.manual_seed(conv["seed"])
    xshape, wshape = conv["shapes"]
    x = randn(*xshape, channels_last=conv["channels_last"])
    w = randn(*wshape)
    b = randn(wshape[0]) if conv["bias"] else None
    y = im2win.conv2d(x, w, b, **conv["kwargs"])
    assert y.is_contiguous(memory_format=torch_output_format(x, w))
    assert_close(y, reference(x, w, b, **conv["kwargs"]), TOL[torch.float32])
