"""Warp-specialized Gluon conv: a loader warp feeding two consumer warp groups (rows halves)."""
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier, warpgroup_mma, warpgroup_mma_wait, fence_async_shared

WS_EPI = gl.constexpr(1)


@gluon.jit
def _loader(x_desc, filt_desc, a_bufs, b_bufs, ready, empty, n, p0, q0, k0, cbase, CG, S, total, ncb,
            pad_top, pad_left, dh, dw):
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[3]
    STAGES: gl.constexpr = a_bufs.shape[0]
    for it in range(total):
        slot = it % STAGES
        mbarrier.wait(empty.index(slot), ((it // STAGES) & 1) ^ 1)
        rf = it // ncb
        c = (it % ncb) * BLOCK_K
        r = rf // S
        f = rf % S
        bar = ready.index(slot)
        mbarrier.expect(bar, x_desc.block_type.nbytes + filt_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(x_desc, [n, p0 + r * dh - pad_top, q0 + f * dw - pad_left, cbase + c], bar, a_bufs.index(slot))
        tma.async_copy_global_to_shared(filt_desc, [k0, rf * CG + c], bar, b_bufs.index(slot))


@gluon.jit
def _consumer(a_bufs, b_bufs, ready, empty, bias_ptr, y_ptr, n, p0, q0, group, pid_n, KG, P, Q, total,
              stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias, WG: gl.constexpr, EPI: gl.constexpr):
    STAGES: gl.constexpr = a_bufs.shape[0]
    BLOCK_Q: gl.constexpr = a_bufs.shape[3]
    BLOCK_M: gl.constexpr = a_bufs.shape[1] * a_bufs.shape[2] * a_bufs.shape[3]
    BLOCK_K: gl.constexpr = a_bufs.shape[4]
    BLOCK_N: gl.constexpr = b_bufs.shape[1]
    HALF: gl.constexpr = BLOCK_M // 2
    dtype: gl.constexpr = a_bufs.dtype
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BLOCK_N, 256 // dtype.primitive_bitwidth])
    acc = gl.zeros((HALF, BLOCK_N), dtype=gl.float32, layout=mma_layout)
    for it in range(total):
        slot = it % STAGES
        mbarrier.wait(ready.index(slot), (it // STAGES) & 1)
        a = a_bufs.index(slot).reshape([BLOCK_M, BLOCK_K]).slice(WG * HALF, HALF)
        b = b_bufs.index(slot).permute((1, 0))
        acc = warpgroup_mma(a, b, acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
        if it > 0:
            mbarrier.arrive(empty.index((it - 1) % STAGES), count=1)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))

    kn = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma_layout))
    kn_ok = kn < KG
    if has_bias:
        bias = gl.load(bias_ptr + (group * KG + kn) * stride_b, mask=kn_ok, other=0.0)
        acc = acc + bias.to(gl.float32)[None, :]
    m = WG * HALF + gl.arange(0, HALF, layout=gl.SliceLayout(1, mma_layout))
    p = p0 + m // BLOCK_Q
    q = q0 + m % BLOCK_Q
    pixel = n.to(gl.int64) * stride_yn + p.to(gl.int64) * stride_yp + q.to(gl.int64) * stride_yq
    y_off = pixel[:, None] + ((group * KG + kn).to(gl.int64) * stride_yk)[None, :]
    y_ok = ((p < P) & (q < Q))[:, None] & kn_ok[None, :]
    if EPI == 0:
        gl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_ok)
    elif EPI == 1:
        NW: gl.constexpr = gl.num_warps()
        st: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [NW, 1], [1, 0])
        gl.store(gl.convert_layout(y_ptr + y_off, st), gl.convert_layout(acc.to(y_ptr.dtype.element_ty), st), mask=gl.convert_layout(y_ok, st))
    else:
        gl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_ok & (acc != acc))


@gluon.jit
def _consumer0(a_bufs, b_bufs, ready, empty, bias_ptr, y_ptr, n, p0, q0, group, pid_n, KG, P, Q, total,
               stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias):
    _consumer(a_bufs, b_bufs, ready, empty, bias_ptr, y_ptr, n, p0, q0, group, pid_n, KG, P, Q, total,
              stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias, 0, WS_EPI)


@gluon.jit
def _consumer1(a_bufs, b_bufs, ready, empty, bias_ptr, y_ptr, n, p0, q0, group, pid_n, KG, P, Q, total,
               stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias):
    _consumer(a_bufs, b_bufs, ready, empty, bias_ptr, y_ptr, n, p0, q0, group, pid_n, KG, P, Q, total,
              stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias, 1, WS_EPI)


@gluon.jit
def conv_ws(x_desc, filt_desc, bias_ptr, y_ptr,
            N, CG, KG, R, S, P, Q,
            stride_b, stride_yn, stride_yk, stride_yp, stride_yq,
            pad_top, pad_left, dilation_h, dilation_w, has_bias,
            STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr):
    BLOCK_P: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_Q: gl.constexpr = x_desc.block_type.shape[2]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = filt_desc.block_type.shape[0]
    dtype: gl.constexpr = x_desc.dtype

    pid = gl.program_id(0)
    num_pid_n = gl.cdiv(KG, BLOCK_N)
    ntq = gl.cdiv(Q, BLOCK_Q)
    ntp = gl.cdiv(P, BLOCK_P)
    pid_n = pid % num_pid_n
    tile = pid // num_pid_n
    q0 = (tile % ntq) * BLOCK_Q
    p0 = (tile // ntq % ntp) * BLOCK_P
    n = tile // ntq // ntp % N
    group = tile // ntq // ntp // N
    k0 = group * KG + pid_n * BLOCK_N
    cbase = group * CG
    ncb = CG // BLOCK_K
    total = R * S * ncb

    a_bufs = gl.allocate_shared_memory(dtype, [STAGES, 1, BLOCK_P, BLOCK_Q, BLOCK_K], x_desc.layout)
    b_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, BLOCK_K], filt_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=2)  # one arrive per consumer warp group
    fence_async_shared()

    cargs = (a_bufs, b_bufs, ready, empty, bias_ptr, y_ptr, n, p0, q0, group, pid_n, KG, P, Q, total,
             stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias)
    gl.warp_specialize([
        (_consumer0, cargs),
        (_consumer1, cargs),
        (_loader, (x_desc, filt_desc, a_bufs, b_bufs, ready, empty, n, p0, q0, k0, cbase, CG, S, total, ncb,
                   pad_top, pad_left, dilation_h, dilation_w)),
    ], [4, 1], [CONSUMER_REGS, 40])
