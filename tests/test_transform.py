"""The im2win layouts: Triton transform vs the plain-PyTorch definition, and the reference
convolution vs torch.nn.functional.conv2d."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import im2win
from helpers import expected_format, randn
from im2win import kernels
from im2win.params import conv_params
from im2win.reference import conv2d_reference, filter_reference, transform_reference

# A copy: exact in every dtype.
DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

# (input shape, kernel size, stride, padding, dilation)
TRANSFORMS = {
    "c3_7x11_k3": ((2, 3, 7, 11), 3, 1, 0, 1),
    "c1_13x5_k2_p1": ((1, 1, 13, 5), 2, 1, 1, 1),
    "c5_9x9_k5_s2_p2": ((2, 5, 9, 9), 5, 2, 2, 1),
    "c4_11x7_k3x2_s3x1_p1x2": ((1, 4, 11, 7), (3, 2), (3, 1), (1, 2), 1),
    "c3_12x9_k3_d2": ((2, 3, 12, 9), 3, 1, 0, 2),
    "c2_8x6_k2x4_s2_p3x1_d3x2": ((1, 2, 8, 6), (2, 4), 2, (3, 1), (3, 2)),
    "c7_1x1_k1": ((3, 7, 1, 1), 1, 1, 0, 1),
    "c6_5x13_same_k4": ((1, 6, 5, 13), 4, 1, "same", 1),
}


@pytest.mark.parametrize(
    "case, layout, dtype",
    list(itertools.product(TRANSFORMS, ["nchw", "channels_last"], DTYPES)),
    ids=lambda v: DTYPES.get(v, v),
)
def test_transform_matches_reference(case, layout, dtype):
    torch.manual_seed(0)
    shape, ks, stride, padding, dilation = TRANSFORMS[case]
    x = randn(*shape, dtype=dtype, channels_last=layout == "channels_last")
    # C == 1 or H == W == 1 is also NCHW-contiguous, and then counts as NCHW.
    channels_last = expected_format(x) == torch.channels_last
    win = im2win.transform(x, ks, stride=stride, padding=padding, dilation=dilation)
    r, s = ks if isinstance(ks, tuple) else (ks, ks)
    params = conv_params(stride, padding, dilation, 1, kernel_size=(r, s))
    expected = transform_reference(x, r, params, channels_last=channels_last)
    assert win.dtype == dtype
    assert torch.equal(win, expected)  # NaN-poisoned buffer: also proves every element written


def test_transform_non_contiguous_input():
    torch.manual_seed(1)
    x = randn(2, 6, 15, 12)[:, ::2, 1:, 2:]
    params = conv_params(2, 1, 1, 1, kernel_size=(3, 3))
    assert torch.equal(
        im2win.transform(x, 3, stride=2, padding=1),
        transform_reference(x, 3, params, channels_last=False),
    )


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_transform_index_formula(layout):
    """Win[n,c,p,w*R+r] == Xpad[n,c,p*sh+r*dh,w] (NCHW) or Win[n,p,w,r,c] (channels_last)."""
    torch.manual_seed(2)
    n, c, h, w, r = 2, 3, 7, 5, 2
    (sh, sw), (pt, pl), (dh, dw) = (2, 1), (1, 2), (2, 1)
    x = randn(n, c, h, w, channels_last=layout == "channels_last")
    win = im2win.transform(x, (r, 3), stride=(sh, sw), padding=(pt, pl), dilation=(dh, dw))
    xpad = F.pad(x, (pl, pl, pt, pt))
    p, wp = (h + 2 * pt - dh * (r - 1) - 1) // sh + 1, w + 2 * pl
    expected_shape = (n, c, p, wp * r) if layout == "nchw" else (n, p, wp, r, c)
    assert win.shape == expected_shape
    for i, j, pi, wi, ri in itertools.product(range(n), range(c), range(p), range(wp), range(r)):
        got = win[i, j, pi, wi * r + ri] if layout == "nchw" else win[i, pi, wi, ri, j]
        assert got == xpad[i, j, pi * sh + ri * dh, wi], (i, j, pi, wi, ri)


@pytest.mark.parametrize("channels_last", [False, True])
def test_transform_filter(channels_last):
    torch.manual_seed(3)
    k, cg, r, s = 4, 3, 2, 5
    weight = randn(k, cg, r, s)
    filt = im2win.transform_filter(weight, channels_last=channels_last)
    assert filt.shape == ((k, s, r, cg) if channels_last else (k, cg, s, r))
    assert filt.is_contiguous()
    for ki, ci, ri, fi in itertools.product(range(k), range(cg), range(r), range(s)):
        got = filt[ki, fi, ri, ci] if channels_last else filt[ki, ci, fi, ri]
        assert got == weight[ki, ci, ri, fi]
    assert torch.equal(filt, filter_reference(weight, channels_last))


# (input shape, weight shape, stride, padding, dilation, groups)
REFERENCE_CASES = {
    "plain": ((2, 3, 7, 11), (4, 3, 3, 3), 1, 0, 1, 1),
    "strided_padded": ((1, 5, 13, 9), (6, 5, 5, 2), (2, 3), (2, 1), 1, 1),
    "dilated": ((2, 2, 12, 10), (3, 2, 3, 3), 1, 1, (2, 3), 1),
    "grouped": ((2, 6, 8, 9), (6, 2, 3, 1), 2, 1, 1, 3),
    "depthwise": ((1, 4, 9, 7), (8, 1, 3, 3), 1, 0, 1, 4),
    "same_even_kernel": ((2, 3, 7, 8), (5, 3, 4, 2), 1, "same", 1, 1),
    "same_even_dilated": ((1, 4, 9, 9), (2, 2, 2, 4), 1, "same", (3, 1), 2),
}


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_conv2d_reference_float64(case):
    torch.manual_seed(4)
    xs, ws, stride, padding, dilation, groups = REFERENCE_CASES[case]
    x, w, b = (randn(*s, dtype=torch.float64) for s in (xs, ws, (ws[0],)))
    params = conv_params(stride, padding, dilation, groups, kernel_size=ws[2:])
    y = conv2d_reference(x, w, b, params)
    expected = F.conv2d(x, w, b, stride, padding, dilation, groups)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_conv2d_reference_asymmetric_padding():
    """Explicit (top, bottom, left, right) padding equals padding the input first."""
    torch.manual_seed(5)
    x, w = randn(2, 3, 6, 7, dtype=torch.float64), randn(4, 3, 3, 2, dtype=torch.float64)
    params = conv_params(1, 0, 1, 1, kernel_size=(3, 2))
    params = type(params)(params.stride, (0, 2, 1, 3), params.dilation, params.groups)
    y = conv2d_reference(x, w, None, params)
    expected = F.conv2d(F.pad(x, (1, 3, 0, 2)), w)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


# (input shape, view): NCHW -> channels-last copies of the staging path. Views make strides
# that are not NCHW-contiguous: a channel slice, and H and W swapped (pixels not flat).
RELAYOUTS = {
    "c1": ((2, 1, 5, 7), None),
    "c3_odd": ((3, 3, 9, 13), None),
    "c70_tiles": ((1, 70, 11, 9), None),
    "c17_channel_slice": ((2, 40, 6, 5), lambda x: x[:, 5:22]),
    "c20_hw_swapped": ((2, 20, 7, 4), lambda x: x.transpose(2, 3)),
}


@pytest.mark.parametrize(
    "case, dtype", list(itertools.product(RELAYOUTS, DTYPES)), ids=lambda v: DTYPES.get(v, v)
)
def test_copy_to_channels_last(case, dtype):
    torch.manual_seed(6)
    shape, view = RELAYOUTS[case]
    x = randn(*shape, dtype=dtype)
    x = view(x) if view else x
    out = torch.full_like(x, float("nan"), memory_format=torch.channels_last)
    kernels.copy_to_channels_last(x, out, interpreted=kernels.interpreted())
    assert torch.equal(out, x)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_copy_to_channels_last_rejects_outputs_it_cannot_fill():
    x = randn(2, 3, 4, 5)
    cases = {
        "must match x": torch.empty(2, 3, 4, 4, device=x.device),
        "must match": torch.empty_like(x, dtype=torch.float16),
        "channels-last and dense": torch.empty_like(x),
    }
    for message, out in cases.items():
        with pytest.raises(ValueError, match=message):
            kernels.copy_to_channels_last(x, out, interpreted=kernels.interpreted())
