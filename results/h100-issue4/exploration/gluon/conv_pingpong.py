"""Persistent ping-pong Gluon convolution: a loader warp and two consumer warp groups that
take turns on whole tiles, so one's epilogue runs under the other's main loop."""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier, warpgroup_mma, warpgroup_mma_wait, fence_async_shared


@gluon.jit
def _tile_coords(t, N, KG, P, Q, BLOCK_P: gl.constexpr, BLOCK_Q: gl.constexpr, BLOCK_N: gl.constexpr):
    num_pid_n = gl.cdiv(KG, BLOCK_N)
    ntq = gl.cdiv(Q, BLOCK_Q)
    ntp = gl.cdiv(P, BLOCK_P)
    pid_n = t % num_pid_n
    tile = t // num_pid_n
    q0 = (tile % ntq) * BLOCK_Q
    p0 = (tile // ntq % ntp) * BLOCK_P
    n = tile // ntq // ntp % N
    group = tile // ntq // ntp // N
    return n, p0, q0, group, pid_n


@gluon.jit
def _loader(x_desc, filt_desc, a_bufs, b_bufs, ready, empty, turn, N, CG, KG, S, P, Q, num_tiles, total, ncb,
            pad_top, pad_left, dh, dw):
    BLOCK_P: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_Q: gl.constexpr = x_desc.block_type.shape[2]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = filt_desc.block_type.shape[0]
    STAGES: gl.constexpr = a_bufs.shape[0]
    step = 0
    for t in range(gl.program_id(0), num_tiles, gl.num_programs(0)):
        n, p0, q0, group, pid_n = _tile_coords(t, N, KG, P, Q, BLOCK_P, BLOCK_Q, BLOCK_N)
        k0 = group * KG + pid_n * BLOCK_N
        for it in range(total):
            slot = step % STAGES
            mbarrier.wait(empty.index(slot), ((step // STAGES) & 1) ^ 1)
            rf = it // ncb
            c = (it % ncb) * BLOCK_K
            r = rf // S
            f = rf % S
            bar = ready.index(slot)
            mbarrier.expect(bar, x_desc.block_type.nbytes + filt_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(x_desc, [n, p0 + r * dh - pad_top, q0 + f * dw - pad_left, group * CG + c],
                                            bar, a_bufs.index(slot))
            tma.async_copy_global_to_shared(filt_desc, [k0, rf * CG + c], bar, b_bufs.index(slot))
            step += 1


@gluon.jit
def _consumer(a_bufs, b_bufs, ready, empty, turn, bias_ptr, y_ptr, N, KG, P, Q, num_tiles, total,
              stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias, WG: gl.constexpr):
    STAGES: gl.constexpr = a_bufs.shape[0]
    BLOCK_P: gl.constexpr = a_bufs.shape[2]
    BLOCK_Q: gl.constexpr = a_bufs.shape[3]
    BLOCK_K: gl.constexpr = a_bufs.shape[4]
    BLOCK_N: gl.constexpr = b_bufs.shape[1]
    BLOCK_M: gl.constexpr = BLOCK_P * BLOCK_Q
    dtype: gl.constexpr = a_bufs.dtype
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BLOCK_N, 256 // dtype.primitive_bitwidth])
    st: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    pid = gl.program_id(0)
    grid = gl.num_programs(0)
    m_tile = 0  # this warp group's count of tiles
    for t in range(pid + WG * grid, num_tiles, 2 * grid):
        # Main loops alternate between the warp groups (turn barriers), so the ready barrier of
        # every step waited on here is at most one phase behind.
        if WG == 0:
            if m_tile > 0:
                mbarrier.wait(turn.index(0), (m_tile - 1) & 1)
        else:
            mbarrier.wait(turn.index(1), m_tile & 1)
        step0 = ((t - pid) // grid) * total
        acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.float32, layout=mma_layout)
        for it in range(total):
            s = step0 + it
            slot = s % STAGES
            mbarrier.wait(ready.index(slot), (s // STAGES) & 1)
            a = a_bufs.index(slot).reshape([BLOCK_M, BLOCK_K])
            b = b_bufs.index(slot).permute((1, 0))
            acc = warpgroup_mma(a, b, acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
            if it > 0:
                mbarrier.arrive(empty.index((s - 1) % STAGES), count=1)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(empty.index((step0 + total - 1) % STAGES), count=1)
        mbarrier.arrive(turn.index(1 - WG), count=1)  # the other warp group's main loop may start

        n, p0, q0, group, pid_n = _tile_coords(t, N, KG, P, Q, BLOCK_P, BLOCK_Q, BLOCK_N)
        if has_bias:
            kb = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma_layout))
            bias = gl.load(bias_ptr + (group * KG + kb) * stride_b, mask=kb < KG, other=0.0)
            acc = acc + bias.to(gl.float32)[None, :]
        out = gl.convert_layout(acc.to(y_ptr.dtype.element_ty), st)
        kn = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, st))
        m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, st))
        p = p0 + m // BLOCK_Q
        q = q0 + m % BLOCK_Q
        pixel = n.to(gl.int64) * stride_yn + p.to(gl.int64) * stride_yp + q.to(gl.int64) * stride_yq
        y_off = pixel[:, None] + ((group * KG + kn).to(gl.int64) * stride_yk)[None, :]
        y_ok = ((p < P) & (q < Q))[:, None] & (kn < KG)[None, :]
        gl.store(y_ptr + y_off, out, mask=y_ok)
        m_tile += 1


@gluon.jit
def _consumer0(a_bufs, b_bufs, ready, empty, turn, bias_ptr, y_ptr, N, KG, P, Q, num_tiles, total,
               stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias):
    _consumer(a_bufs, b_bufs, ready, empty, turn, bias_ptr, y_ptr, N, KG, P, Q, num_tiles, total,
              stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias, 0)


@gluon.jit
def _consumer1(a_bufs, b_bufs, ready, empty, turn, bias_ptr, y_ptr, N, KG, P, Q, num_tiles, total,
               stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias):
    _consumer(a_bufs, b_bufs, ready, empty, turn, bias_ptr, y_ptr, N, KG, P, Q, num_tiles, total,
              stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias, 1)


@gluon.jit
def conv_pingpong(x_desc, filt_desc, bias_ptr, y_ptr,
                  N, CG, KG, R, S, P, Q, num_tiles,
                  stride_b, stride_yn, stride_yk, stride_yp, stride_yq,
                  pad_top, pad_left, dilation_h, dilation_w, has_bias,
                  STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr):
    BLOCK_P: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_Q: gl.constexpr = x_desc.block_type.shape[2]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[3]
    BLOCK_N: gl.constexpr = filt_desc.block_type.shape[0]
    dtype: gl.constexpr = x_desc.dtype
    ncb = CG // BLOCK_K
    total = R * S * ncb

    a_bufs = gl.allocate_shared_memory(dtype, [STAGES, 1, BLOCK_P, BLOCK_Q, BLOCK_K], x_desc.layout)
    b_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, BLOCK_K], filt_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    for s in gl.static_range(2):
        mbarrier.init(turn.index(s), count=1)
    fence_async_shared()

    cargs = (a_bufs, b_bufs, ready, empty, turn, bias_ptr, y_ptr, N, KG, P, Q, num_tiles, total,
             stride_b, stride_yn, stride_yk, stride_yp, stride_yq, has_bias)
    gl.warp_specialize([
        (_consumer0, cargs),
        (_consumer1, cargs),
        (_loader, (x_desc, filt_desc, a_bufs, b_bufs, ready, empty, turn, N, CG, KG, S, P, Q, num_tiles, total, ncb,
                   pad_top, pad_left, dilation_h, dilation_w)),
    ], [4, 1], [CONSUMER_REGS, 40])
