"""Plain-PyTorch im2win: the definition the Triton kernels are tested against.

    Win[n][c][p][w][r] = Xpad[n][c][p*sh + r*dh][w]            (NCHW: [N][C][P][Wp*R])
    Win[n][p][w][r][c] = Xpad[n][p*sh + r*dh][w][c]            (NHWC: [N][P][Wp][R][C])
    F'[k][c][f][r]     = F[k][c][r][f]                         (NCHW filter: [K][Cg][S][R])
    F'[k][f][r][c]     = F[k][c][r][f]                         (NHWC filter: [K][S][R][Cg])
    Y[n][k][p][q]      = sum_{c,f,r} F'[k][c][f][r] * Win[n][c][p][q*sw + f*dw][r]

Xpad is the input with its zero padding; Wp = W + left + right. Each output row p owns a
strip of the R input rows it touches, stored column by column, so the window of output
(p, q) starts at column q*sw of its strip: with dw == 1 it is one contiguous run of S*R
values (S*R*Cg in NHWC). See docs/im2win.md for the picture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .params import ConvParams


def window_view(x: torch.Tensor, r: int, params: ConvParams) -> torch.Tensor:
    """The im2win tensor of NCHW-indexed `x` as a 5-D [N, C, P, Wp, R] tensor."""
    top, bottom, left, right = params.padding
    sh, dh = params.stride[0], params.dilation[0]
    xp = F.pad(x, (left, right, top, bottom))
    # unfold over H: [N, C, P, Wp, dh*(R-1)+1]; every dh-th row is a window row.
    return xp.unfold(2, dh * (r - 1) + 1, sh)[..., ::dh]


def transform_reference(x: torch.Tensor, r: int, params: ConvParams, channels_last: bool):
    """im2win tensor: [N, C, P, Wp*R] (NCHW) or [N, P, Wp, R, C] (channels_last)."""
    win = window_view(x, r, params)
    if channels_last:
        return win.permute(0, 2, 3, 4, 1).contiguous()
    n, c, p, wp, _ = win.shape
    return win.reshape(n, c, p, wp * r)


def filter_reference(weight: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Filter re-laid to match the windows: [K, Cg, S, R] (NCHW) or [K, S, R, Cg]."""
    order = (0, 3, 2, 1) if channels_last else (0, 1, 3, 2)
    return weight.permute(*order).contiguous()


def conv2d_reference(x, weight, bias, params: ConvParams) -> torch.Tensor:
    """Convolution computed from the im2win windows, in the dtype of `x` (NCHW result)."""
    k, cg, r, s = weight.shape
    n, c = x.shape[:2]
    g = params.groups
    sw, dw = params.stride[1], params.dilation[1]
    win = window_view(x, r, params)  # [N, C, P, Wp, R]
    # Slide the S-wide window along Wp: [N, C, P, Q, R, S].
    windows = win.unfold(3, dw * (s - 1) + 1, sw)[..., ::dw]
    p, q = windows.shape[2:4]
    windows = windows.reshape(n, g, cg, p, q, r, s)
    y = torch.einsum("ngcpqrs,gkcrs->ngkpq", windows, weight.reshape(g, k // g, cg, r, s))
    y = y.reshape(n, k, p, q)
    if bias is not None:
        y = y + bias.view(1, k, 1, 1)
    return y
