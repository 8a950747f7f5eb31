"""A persistent Gluon raster convolution whose filter stays in shared memory (not yet run
on a GPU; compiled for sm_90 on a CPU by `compile_check.py`).

Why (notes/performance.md v8 item 5): cuDNN's conv8 kernel moves about 0.7x the L2 traffic
of the library's Triton kernel for the same DRAM traffic; the Triton kernel fetches a
tile's filter block again for every tile and every tap. Here each persistent CTA loads its
[BLOCK_N, R*S*Cg] slice of the filter once (conv8 bf16: 9 blocks of 128 x 64, 144 KiB) and
then streams only raster A tiles (the [N*H*W, C] view of an unpadded unit-stride input,
see kernels/conv2d_fwd_tma.py) through a ring of STAGES slots, loads running STAGES - 1
steps ahead across tile boundaries, so the next tile's first loads overlap this tile's
last wgmmas and its epilogue. The epilogue stores straight from the wgmma layout (no
shared-memory round trip: the filter takes the room). Groups == 1.
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)


@gluon.jit
def _load_a(x_desc, a_buf, bar, it, first, step, CG, S, W, dilation_h, dilation_w,
            NKB: gl.constexpr):  # fmt: skip
    """Issue global step `it` (tile it // NKB of this CTA, k-block it % NKB) into a_buf."""
    BLOCK_M: gl.constexpr = x_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[1]
    kk = it % NKB
    m0 = (first + (it // NKB) * step) * BLOCK_M
    ncb = CG // BLOCK_K
    rf = kk // ncb
    r = rf // S
    f = rf % S
    c = (kk % ncb) * BLOCK_K
    mbarrier.expect(bar, x_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(x_desc, [m0 + r * dilation_h * W + f * dilation_w, c], bar,
                                    a_buf)  # fmt: skip


@gluon.jit
def conv_resident(x_desc, filt_desc, bias_ptr, y_ptr,
                  N, CG, KG, S, P, Q, H, W,
                  stride_b, stride_yn, stride_yk, stride_yp, stride_yq,
                  dilation_h, dilation_w,
                  HAS_BIAS: gl.constexpr, NKB: gl.constexpr, STAGES: gl.constexpr,
                  num_warps: gl.constexpr):  # fmt: skip
    BLOCK_M: gl.constexpr = x_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = filt_desc.block_type.shape[0]
    dtype: gl.constexpr = x_desc.dtype

    # CTA pid keeps output channels pid_n and takes every step-th raster tile from `first`.
    pid = gl.program_id(0)
    num_pid_n = gl.cdiv(KG, BLOCK_N)
    pid_n = pid % num_pid_n
    first = pid // num_pid_n
    step = gl.num_programs(0) // num_pid_n
    num_tiles = gl.cdiv((N - 1) * H * W + (P - 1) * W + Q, BLOCK_M)
    my_tiles = gl.cdiv(gl.maximum(num_tiles - first, 0), step)
    total = my_tiles * NKB

    b_res = gl.allocate_shared_memory(dtype, [NKB, BLOCK_N, BLOCK_K], filt_desc.layout)
    a_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_M, BLOCK_K], x_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    b_bar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(bars.index(s), count=1)
    mbarrier.init(b_bar.index(0), count=1)

    # The filter slice, once: block kk is columns kk*BLOCK_K of the [K, R*S*Cg] matrix.
    mbarrier.expect(b_bar.index(0), NKB * filt_desc.block_type.nbytes)
    for blk in gl.static_range(NKB):
        tma.async_copy_global_to_shared(filt_desc, [pid_n * BLOCK_N, blk * BLOCK_K],
                                        b_bar.index(0), b_res.index(blk))  # fmt: skip
    for s in gl.static_range(STAGES - 1):
        if s < total:
            _load_a(x_desc, a_bufs.index(s), bars.index(s), s, first, step, CG, S, W,
                    dilation_h, dilation_w, NKB)  # fmt: skip
    mbarrier.wait(b_bar.index(0), 0)

    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1],
        instr_shape=[16, BLOCK_N, 256 // dtype.primitive_bitwidth])  # fmt: skip
    kn = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, mma_layout))
    kn_ok = kn < KG
    if HAS_BIAS:
        bias = gl.load(bias_ptr + kn * stride_b, mask=kn_ok, other=0.0).to(gl.float32)
    rows = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, mma_layout))
    for j in range(my_tiles):
        acc = gl.zeros((BLOCK_M, BLOCK_N), dtype=gl.float32, layout=mma_layout)
        for kk in range(NKB):
            it = j * NKB + kk
            slot = it % STAGES
            mbarrier.wait(bars.index(slot), (it // STAGES) & 1)
            acc = warpgroup_mma(a_bufs.index(slot), b_res.index(kk).permute((1, 0)), acc,
                                is_async=True)  # fmt: skip
            # The wgmma before this one is done: its slot, (it - 1) % STAGES, takes the
            # load STAGES - 1 steps ahead (the next tile's, near this tile's end).
            acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
            nxt = it + STAGES - 1
            if nxt < total:
                ns = nxt % STAGES
                _load_a(x_desc, a_bufs.index(ns), bars.index(ns), nxt, first, step, CG, S, W,
                        dilation_h, dilation_w, NKB)  # fmt: skip
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        if HAS_BIAS:
            acc = acc + bias[None, :]
        m = (first + j * step) * BLOCK_M + rows  # raster grid points; not all are outputs
        n = m // (H * W)
        p = m // W % H
        q = m % W
        pixel = n.to(gl.int64) * stride_yn + p.to(gl.int64) * stride_yp + q.to(gl.int64) * stride_yq
        y_off = pixel[:, None] + (kn.to(gl.int64) * stride_yk)[None, :]
        y_ok = ((n < N) & (p < P) & (q < Q))[:, None] & kn_ok[None, :]
        gl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_ok)

    for s in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(s))
    mbarrier.invalidate(b_bar.index(0))
