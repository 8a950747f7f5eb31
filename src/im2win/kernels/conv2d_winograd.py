"""Winograd F(2x2, 3x3): a 3x3, stride-1 convolution as 16 GEMMs over transformed tiles.

Each 2x2 block of outputs (a *tile*: T = N * ceil(P/2) * ceil(Q/2) of them) reads a 4x4 block
d of the input. With the minimal-filtering transforms (Lavin and Gray, 2016)

    V = B^T d B    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    U = G g G^T    G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    Y = A^T M A    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

the 2x2 outputs of a tile are A^T (sum over input channels of U * V) A, and the channel sum
at each of the 16 places xi of the 4x4 is a GEMM:

    M[xi] [T, K] = V[xi] [T, C] @ U[xi]^T    (U[xi] [K, C])

Every workspace keeps channels innermost, so both GEMM operands are read along their
reduction (K-major, as tensor cores take tf32 operands from shared memory) and a
channels-last input and output are read and written along their contiguous dimension.

16 products a tile and channel pair where the direct convolution takes 36 (2.25x fewer).
Four kernels: the filter transform writes U, the input transform V, the GEMMs M (in the
call's math mode: IEEE fp32, 3xTF32 or TF32), the output transform reads M and writes the
output with the fused epilogue. U, V and M are fp32 workspaces of 16 (K C + C T + K T)
elements (3xTF32 adds U's remainder, 16 K C more); the transforms' coefficients are 1 and
1/2, so they add few roundings. In 3xTF32 the filter transform writes U as its tf32 part and
the remainder's, and the GEMMs take V as the operand they split (`common.dot_tf32x3`, the
scheme of the direct kernels: each step's three products summed in fp32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..problem import ConvProblem
from .common import apply_epilogue, dot_tf32x3, round_tf32, store_output
from .launch import launch
from .sizes import cdiv, strides_or_zeros

TILE = 4  # the input tile's side; the output tile's is 2
# A transform program's block: 32 tiles (or output channels, for the filter's) x 16
# channels. Each element holds 16 values at once, so 512 elements over 4 warps keep them in
# registers; the GEMM's 64 x 32 blocks spilled the input and filter transforms (sm_90a SASS
# on the CPU, notes/winograd/).
TRANSFORM_ROWS, TRANSFORM_CHANNELS = 32, 16


@triton.jit
def _bt(d0, d1, d2, d3):
    """B^T along one axis of four values."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@triton.jit
def _g(g0, g1, g2):
    """G along one axis of a filter's three values: four."""
    return g0, (g0 + g1 + g2) * 0.5, (g0 - g1 + g2) * 0.5, g2


@triton.jit
def _at(m0, m1, m2, m3):
    """A^T along one axis of four values: two."""
    return m0 + m1 + m2, m1 - m2 - m3


@triton.jit
def _winograd_filter_kernel(
    w_ptr, u_ptr, u_lo_ptr, K, C,
    stride_wk, stride_wc, stride_wr, stride_ws,
    SPLIT: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """U[xi, k, c] = (G g G^T)[xi] of every filter g = weight[k, c] (any strides); with SPLIT,
    its nearest tf32 value, and at u_lo the rest's."""
    k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)  # [BLOCK_K]
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    ok = (k < K)[:, None] & (c < C)[None, :]
    base = w_ptr + (k.to(tl.int64) * stride_wk)[:, None] + (c.to(tl.int64) * stride_wc)[None, :]
    # G g: each filter column's three rows -> four
    a0, b0, c0, d0 = _filter_column(base, 0, stride_wr, stride_ws, ok)
    a1, b1, c1, d1 = _filter_column(base, 1, stride_wr, stride_ws, ok)
    a2, b2, c2, d2 = _filter_column(base, 2, stride_wr, stride_ws, ok)
    # (G g) G^T: each row's three columns -> four, U's places 4i .. 4i + 3
    place = k.to(tl.int64)[:, None] * C + c[None, :]  # place (k, c) of U[0]
    plane = K * C
    u0, u1, u2, u3 = _g(a0, a1, a2)
    _store_u(u_ptr, u_lo_ptr, place, u0, u1, u2, u3, plane, ok, SPLIT)
    u0, u1, u2, u3 = _g(b0, b1, b2)
    _store_u(u_ptr, u_lo_ptr, place + 4 * plane, u0, u1, u2, u3, plane, ok, SPLIT)
    u0, u1, u2, u3 = _g(c0, c1, c2)
    _store_u(u_ptr, u_lo_ptr, place + 8 * plane, u0, u1, u2, u3, plane, ok, SPLIT)
    u0, u1, u2, u3 = _g(d0, d1, d2)
    _store_u(u_ptr, u_lo_ptr, place + 12 * plane, u0, u1, u2, u3, plane, ok, SPLIT)


@triton.jit
def _store_u(u_ptr, u_lo_ptr, place, u0, u1, u2, u3, plane, mask, SPLIT: tl.constexpr):
    """Four places of U from `place` on, a plane apart; with SPLIT as tf32 part and rest."""
    if SPLIT:
        h0, h1, h2, h3 = round_tf32(u0), round_tf32(u1), round_tf32(u2), round_tf32(u3)
        _store_four(u_ptr + place, h0, h1, h2, h3, plane, mask)
        _store_four(u_lo_ptr + place, round_tf32(u0 - h0), round_tf32(u1 - h1),
                    round_tf32(u2 - h2), round_tf32(u3 - h3), plane, mask)  # fmt: skip
    else:
        _store_four(u_ptr + place, u0, u1, u2, u3, plane, mask)


@triton.jit
def _filter_column(base, col, stride_wr, stride_ws, mask):
    """Column `col` of each filter, its three rows times G: four."""
    g0 = tl.load(base + col * stride_ws, mask=mask, other=0.0).to(tl.float32)
    g1 = tl.load(base + stride_wr + col * stride_ws, mask=mask, other=0.0).to(tl.float32)
    g2 = tl.load(base + 2 * stride_wr + col * stride_ws, mask=mask, other=0.0).to(tl.float32)
    return _g(g0, g1, g2)


@triton.jit
def _store_four(ptr, v0, v1, v2, v3, step, mask):
    """v0 .. v3 at ptr, ptr + step, ptr + 2*step, ptr + 3*step."""
    tl.store(ptr, v0, mask=mask)
    tl.store(ptr + step, v1, mask=mask)
    tl.store(ptr + 2 * step, v2, mask=mask)
    tl.store(ptr + 3 * step, v3, mask=mask)


@triton.jit
def _input_row(base, h, w0, H, W, stride_xh, stride_xw, mask):
    """Row h of each tile's input, its four columns from w0 (zeros outside the image), times
    B (B^T along the columns)."""
    ok = mask & ((h >= 0) & (h < H))[:, None]
    ptr = base + (h.to(tl.int64) * stride_xh)[:, None]
    w1, w2, w3 = w0 + 1, w0 + 2, w0 + 3
    d0 = tl.load(ptr + (w0 * stride_xw)[:, None], mask=ok & ((w0 >= 0) & (w0 < W))[:, None],
                 other=0.0)  # fmt: skip
    d1 = tl.load(ptr + (w1 * stride_xw)[:, None], mask=ok & ((w1 >= 0) & (w1 < W))[:, None],
                 other=0.0)  # fmt: skip
    d2 = tl.load(ptr + (w2 * stride_xw)[:, None], mask=ok & ((w2 >= 0) & (w2 < W))[:, None],
                 other=0.0)  # fmt: skip
    d3 = tl.load(ptr + (w3 * stride_xw)[:, None], mask=ok & ((w3 >= 0) & (w3 < W))[:, None],
                 other=0.0)  # fmt: skip
    return _bt(d0.to(tl.float32), d1.to(tl.float32), d2.to(tl.float32), d3.to(tl.float32))


@triton.jit
def _winograd_input_kernel(
    x_ptr, v_ptr, C, H, W, TP, TQ, T,
    stride_xn, stride_xc, stride_xh, stride_xw,
    pad_top, pad_left,
    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """V[xi, t, c] = (B^T d B)[xi] of tile t's input d, channel c (any strides)."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T] tiles
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # [BLOCK_C]
    mask = (t < T)[:, None] & (c < C)[None, :]
    n = t // (TP * TQ)
    h0 = t // TQ % TP * 2 - pad_top
    w0 = t % TQ * 2 - pad_left
    base = x_ptr + (n.to(tl.int64) * stride_xn)[:, None] + (c.to(tl.int64) * stride_xc)[None, :]
    a0, a1, a2, a3 = _input_row(base, h0, w0, H, W, stride_xh, stride_xw, mask)
    b0, b1, b2, b3 = _input_row(base, h0 + 1, w0, H, W, stride_xh, stride_xw, mask)
    c0, c1, c2, c3 = _input_row(base, h0 + 2, w0, H, W, stride_xh, stride_xw, mask)
    d0, d1, d2, d3 = _input_row(base, h0 + 3, w0, H, W, stride_xh, stride_xw, mask)
    out = v_ptr + (t.to(tl.int64) * C)[:, None] + c[None, :]  # place (t, c) of V[0]
    plane = C * T
    # B^T along the rows, column by column: column j of V is places j, 4 + j, 8 + j, 12 + j.
    v0, v1, v2, v3 = _bt(a0, b0, c0, d0)
    _store_four(out, v0, v1, v2, v3, 4 * plane, mask)
    v0, v1, v2, v3 = _bt(a1, b1, c1, d1)
    _store_four(out + plane, v0, v1, v2, v3, 4 * plane, mask)
    v0, v1, v2, v3 = _bt(a2, b2, c2, d2)
    _store_four(out + 2 * plane, v0, v1, v2, v3, 4 * plane, mask)
    v0, v1, v2, v3 = _bt(a3, b3, c3, d3)
    _store_four(out + 3 * plane, v0, v1, v2, v3, 4 * plane, mask)


@triton.jit
def _winograd_gemm_kernel(
    u_ptr, u_lo_ptr, v_ptr, m_ptr, K, C, T,
    PRECISION: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    """M[xi] = V[xi] @ U[xi]^T for place xi = program_id(2), [T, C] @ [C, K]: the input side
    is the A operand, which 3xTF32 splits in registers, the filter side B (its tf32 part at
    u_ptr, the rest at u_lo_ptr)."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T]
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # [BLOCK_K]
    xi = tl.program_id(2).to(tl.int64)
    t_ok, k_ok = t < T, k < K
    v_rows = v_ptr + xi * T * C + (t.to(tl.int64) * C)[:, None]  # [BLOCK_T, 1] rows of V[xi]
    u_rows = xi * K * C + (k.to(tl.int64) * C)[None, :]  # [1, BLOCK_K] rows of U[xi]
    acc = tl.zeros([BLOCK_T, BLOCK_K], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)  # [BLOCK_C]
        c_ok = c < C
        a = tl.load(v_rows + c[None, :], mask=t_ok[:, None] & c_ok[None, :], other=0.0)
        b_off = u_rows + c[:, None]  # [BLOCK_C, BLOCK_K]
        b_ok = c_ok[:, None] & k_ok[None, :]
        b = tl.load(u_ptr + b_off, mask=b_ok, other=0.0)
        if PRECISION == "tf32x3":
            b_lo = tl.load(u_lo_ptr + b_off, mask=b_ok, other=0.0)
            acc = dot_tf32x3(a, b, b_lo, acc)
        else:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    out = m_ptr + xi * T * K + (t.to(tl.int64) * K)[:, None] + k[None, :]
    tl.store(out, acc, mask=t_ok[:, None] & k_ok[None, :])


@triton.jit
def _m_column(m, j, plane, mask):
    """Column j of each tile's 4x4 M (places j, 4 + j, 8 + j, 12 + j), times A^T: two."""
    m0 = tl.load(m + j * plane, mask=mask, other=0.0)
    m1 = tl.load(m + (4 + j) * plane, mask=mask, other=0.0)
    m2 = tl.load(m + (8 + j) * plane, mask=mask, other=0.0)
    m3 = tl.load(m + (12 + j) * plane, mask=mask, other=0.0)
    return _at(m0, m1, m2, m3)


@triton.jit
def _winograd_output_kernel(
    m_ptr, bias_ptr, scale_ptr, res_ptr, y_ptr,
    K, P, Q, TP, TQ, T,
    stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
    stride_yn, stride_yk, stride_yp, stride_yq,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, ACTIVATION: tl.constexpr,
    RESIDUAL: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Y = A^T M A of each tile, through the fused epilogue, into y (any strides)."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T]
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # [BLOCK_K]
    t_ok, k_ok = t < T, k < K
    m = m_ptr + (t.to(tl.int64) * K)[:, None] + k[None, :]  # [BLOCK_T, BLOCK_K] in M[0]
    plane = K * T  # (the variant keeps 16 planes under 2**31 elements)
    mask = t_ok[:, None] & k_ok[None, :]
    s00, s10 = _m_column(m, 0, plane, mask)  # A^T M: rows 0 and 1, column by column
    s01, s11 = _m_column(m, 1, plane, mask)
    s02, s12 = _m_column(m, 2, plane, mask)
    s03, s13 = _m_column(m, 3, plane, mask)
    y00, y01 = _at(s00, s01, s02, s03)  # (A^T M) A: row 0's two outputs
    y10, y11 = _at(s10, s11, s12, s13)
    n = t // (TP * TQ)
    p0 = t // TQ % TP * 2
    q0 = t % TQ * 2
    channel = k.to(tl.int64)
    _output(y00, n, p0, q0, channel, t_ok, k_ok, P, Q, bias_ptr, scale_ptr, res_ptr, y_ptr,
            stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
            stride_yn, stride_yk, stride_yp, stride_yq,
            HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL)  # fmt: skip
    _output(y01, n, p0, q0 + 1, channel, t_ok, k_ok, P, Q, bias_ptr, scale_ptr, res_ptr, y_ptr,
            stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
            stride_yn, stride_yk, stride_yp, stride_yq,
            HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL)  # fmt: skip
    _output(y10, n, p0 + 1, q0, channel, t_ok, k_ok, P, Q, bias_ptr, scale_ptr, res_ptr, y_ptr,
            stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
            stride_yn, stride_yk, stride_yp, stride_yq,
            HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL)  # fmt: skip
    _output(y11, n, p0 + 1, q0 + 1, channel, t_ok, k_ok, P, Q, bias_ptr, scale_ptr, res_ptr,
            y_ptr, stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
            stride_yn, stride_yk, stride_yp, stride_yq,
            HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL)  # fmt: skip


@triton.jit
def _output(
    acc, n, p, q, channel, t_ok, k_ok, P, Q, bias_ptr, scale_ptr, res_ptr, y_ptr,
    stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
    stride_yn, stride_yk, stride_yp, stride_yq,
    HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr, ACTIVATION: tl.constexpr,
    RESIDUAL: tl.constexpr,
):  # fmt: skip
    """One of a tile's four outputs [BLOCK_T, BLOCK_K] (pixel (n, p, q) a tile), where the
    output has it (a last row or column of tiles may pass P or Q)."""
    pixel_ok = t_ok & (p < P) & (q < Q)
    acc = apply_epilogue(
        acc, n[:, None], p[:, None], q[:, None], channel[None, :], k_ok[None, :],
        pixel_ok[:, None] & k_ok[None, :], bias_ptr, scale_ptr, res_ptr,
        stride_b, stride_s, stride_rn, stride_rk, stride_rp, stride_rq,
        HAS_BIAS, HAS_SCALE, ACTIVATION, RESIDUAL,
    )  # fmt: skip
    store_output(y_ptr, acc, n, p, q, channel, pixel_ok, k_ok,
                 stride_yn, stride_yk, stride_yp, stride_yq)  # fmt: skip


def winograd_supported(problem: ConvProblem) -> bool:
    """3x3 filters at unit stride and dilation, one group, fp32 (in any of its math modes),
    and workspaces whose places the kernels' 32-bit offsets reach."""
    params = problem.params
    plane = max(problem.k * problem.c, max(problem.c, problem.k) * winograd_tiles(problem))
    return (
        (problem.r, problem.s) == (3, 3) and params.stride == (1, 1)
        and params.dilation == (1, 1) and problem.groups == 1 and problem.dtype == torch.float32
        and TILE * TILE * plane < 2**31
    )  # fmt: skip


def winograd_tiles(problem: ConvProblem) -> int:
    """T: the 2x2 output tiles of every image."""
    return problem.n * cdiv(problem.p, 2) * cdiv(problem.q, 2)


def winograd_workspace_bytes(problem: ConvProblem) -> int:
    """U, V and M: 16 (K C + C T + K T) fp32 elements; 16 K C more for U's remainder in
    3xTF32."""
    t = winograd_tiles(problem)
    filters = 2 if _splits(problem) else 1
    return 4 * TILE * TILE * (filters * problem.k * problem.c + (problem.c + problem.k) * t)


def _splits(problem: ConvProblem) -> bool:
    """Whether the GEMMs run 3xTF32: U written as tf32 part and remainder."""
    return problem.math.precision == "tf32x3"


def conv2d_fwd_winograd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    problem: ConvProblem,
    *,
    config: dict,
    slots: dict | None = None,
    scale: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill `y` [N, K, P, Q] (any strides) from `x` [N, C, H, W] and `weight` [K, C, 3, 3]
    (any strides) of a call of `problem`'s signature (`winograd_supported`), its epilogue
    (`scale` [K], `residual` shaped as `y`) fused into the output transform. `config`:
    the GEMM's BLOCK_T tiles and BLOCK_K output channels a program, BLOCK_C input channels a
    step, num_warps and num_stages (the transforms take blocks of their own). `slots`: a
    dict the caller keeps for one call signature, where the four kernels keep their
    launches (`launch.py`)."""
    n, c, h, w = x.shape
    k, p, q = problem.k, problem.p, problem.q
    tp, tq = cdiv(p, 2), cdiv(q, 2)
    t = n * tp * tq
    block_t, block_k, block_c = config["BLOCK_T"], config["BLOCK_K"], config["BLOCK_C"]
    places = TILE * TILE
    u = torch.empty((places, k, c), dtype=torch.float32, device=x.device)
    split = _splits(problem)
    u_lo = torch.empty_like(u) if split else u  # U's remainder (3xTF32)
    v = torch.empty((places, t, c), dtype=torch.float32, device=x.device)
    m = torch.empty((places, t, k), dtype=torch.float32, device=x.device)
    slot = (lambda name: None) if slots is None else (lambda name: slots.setdefault(name, {}))
    rows, channels = TRANSFORM_ROWS, TRANSFORM_CHANNELS
    launch(_winograd_filter_kernel, (cdiv(k, rows), cdiv(c, channels)),
           (weight, u, u_lo, k, c, *weight.stride()),
           dict(SPLIT=split, BLOCK_K=rows, BLOCK_C=channels, num_warps=4),
           slot("filter"))  # fmt: skip
    launch(_winograd_input_kernel, (cdiv(t, rows), cdiv(c, channels)),
           (x, v, c, h, w, tp, tq, t, *x.stride(), *problem.pad_top_left),
           dict(BLOCK_T=rows, BLOCK_C=channels, num_warps=4), slot("input"))  # fmt: skip
    launch(_winograd_gemm_kernel, (cdiv(t, block_t), cdiv(k, block_k), places),
           (u, u_lo, v, m, k, c, t),
           dict(PRECISION=problem.math.precision, BLOCK_T=block_t, BLOCK_K=block_k,
                BLOCK_C=block_c, num_warps=config["num_warps"],
                num_stages=config["num_stages"]), slot("gemm"))  # fmt: skip
    args = (
        m, bias, scale, residual, y, k, p, q, tp, tq, t,
        *strides_or_zeros(bias), *strides_or_zeros(scale), *strides_or_zeros(residual, 4),
        *y.stride(),
    )  # fmt: skip
    meta = dict(HAS_BIAS=bias is not None, HAS_SCALE=scale is not None,
                **problem.epilogue.constexprs, BLOCK_T=rows, BLOCK_K=channels,
                num_warps=4)  # fmt: skip
    launch(_winograd_output_kernel, (cdiv(t, rows), cdiv(k, channels)), args, meta,
           slot("output"))  # fmt: skip
    return y
