import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier, warpgroup_mma, warpgroup_mma_wait


@gluon.jit
def _issue(x_desc, filt_desc, a_buf, b_buf, bar, it, n, p0, q0, k0, cbase, CG, S, ncb, pad_top, pad_left, dh, dw):
    rf = it // ncb
    r = rf // S
    f = rf % S
    c = (it % ncb) * x_desc.block_type.shape[3]
    mbarrier.expect(bar, x_desc.block_type.nbytes + filt_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(x_desc, [n, p0 + r * dh - pad_top, q0 + f * dw - pad_left, cbase + c], bar, a_buf)
    tma.async_copy_global_to_shared(filt_desc, [k0, rf * CG + c], bar, b_buf)


@gluon.jit
def conv_wgmma(x_desc, filt_desc, bias_ptr, y_ptr,
               N, CG, KG, R, S, P, Q,
               stride_b, stride_yn, stride_yk, stride_yp, stride_yq,
               pad_top, pad_left, dilation_h, dilation_w,
               HAS_BIAS: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr, EPI: gl.constexpr):
    BLOCK_P: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_Q: gl.constexpr = x_desc.block_type.shape[2]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = filt_desc.block_type.shape[0]
    BLOCK_M: gl.constexpr = BLOCK_P * BLOCK_Q
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

    a_bufs = gl.allocate_shared_memory(dtype, [STAGES, 1, BLOCK_P, BLOCK_Q, BLOCK_K], x_desc.layout)
    b_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, BLOCK_K], filt_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(bars.index(s), count=1)

    ncb = CG // BLOCK_K
    total = R * S * ncb
    for s in gl.static_range(STAGES - 1):
        if s < total:
            _issue(x_desc, filt_desc, a_bufs.index(s), b_bufs.index(s), bars.index(s), s, n, p0, q0, k0, cbase,
                   CG, S, ncb, pad_top, pad_left, dilation_h, dilation_w)

    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, BLOCK_N, 256 // dtype.primitive_bitwidth])
    acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.float32, layout=mma_layout)
    for it in range(total):
        slot = it % STAGES
        mbarrier.wait(bars.index(slot), (it // STAGES) & 1)
        a = a_bufs.index(slot).reshape([BLOCK_M, BLOCK_K])
        b = b_bufs.index(slot).permute((1, 0))
        acc = warpgroup_mma(a, b, acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
        nxt = it + STAGES - 1
        if nxt < total:
            ns = nxt % STAGES
            _issue(x_desc, filt_desc, a_bufs.index(ns), b_bufs.index(ns), bars.index(ns), nxt, n, p0, q0, k0, cbase,
                   CG, S, ncb, pad_top, pad_left, dilation_h, dilation_w)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    for s in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(s))

    if HAS_BIAS:
        kb = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma_layout))
        bias = gl.load(bias_ptr + (group * KG + kb) * stride_b, mask=kb < KG, other=0.0)
        acc = acc + bias.to(gl.float32)[None, :]
    NW: gl.constexpr = gl.num_warps()
    if EPI == 1:  # channels innermost in y: each thread stores 8 consecutive channels
        st: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [NW, 1], [1, 0])
    else:  # pixels innermost (NCHW y): each thread stores 8 consecutive pixels
        st: gl.constexpr = gl.BlockedLayout([8, 1], [8, 4], [1, NW], [0, 1])
    out = gl.convert_layout(acc.to(y_ptr.dtype.element_ty), st)
    kn = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, st))
    m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, st))
    p = p0 + m // BLOCK_Q
    q = q0 + m % BLOCK_Q
    pixel = n.to(gl.int64) * stride_yn + p.to(gl.int64) * stride_yp + q.to(gl.int64) * stride_yq
    y_off = pixel[:, None] + ((group * KG + kn).to(gl.int64) * stride_yk)[None, :]
    y_ok = ((p < P) & (q < Q))[:, None] & (kn < KG)[None, :]
    gl.store(y_ptr + y_off, out, mask=y_ok)
