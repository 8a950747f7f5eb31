// The im2win paper's FP32 NCHW kernels, re-derived from the paper's description (see
// docs and _cuda.py), with the bounds and reduction-tail masking the released code lacked.
// Compiled at run time by NVRTC, one template instantiation per ablation variant.
//
// Letters (cuDNN): input X [N][C][H][W], filter F [K][C][R][S], output Y [N][K][P][Q].
// Window tensor Win [N][C][P][Wp*R]:  Win[n][c][p][w*R + r] = Xpad[n][c][p*sh + r*dh][w].
// Re-laid filter F' [K][C][S][R]:     F'[k][c][f][r] = F[k][c][r][f].
// Implicit GEMM (M = K channels, columns = N*P*Q pixels, reduction CRS = C*S*R):
//   Y[k, (n,p,q)] = sum_kk A[k, kk] * B[kk, (n,p,q)],   kk = c*S*R + f*R + r
//   A[k, kk] = F'[k][kk]
//   B[kk, (n,p,q)] = Win[n][c][p][(q*sw + f*dw)*R + r]
//                  = win[(n*sWn + p*sWp + q*sw*R)  +  (c*sWc + f*dw*R + r)]
//                       `---- column part ------'     `-- reduction part --'
// Each thread computes the column part of its pixels once; the reduction part is the same
// for every pixel and follows kk incrementally.

typedef long long i64;

// kk -> (c, t = f*R + r), advanced incrementally so the main loop needs no division.
struct ReductionIndex {
    int c, t;
    __device__ __forceinline__ void init(int kk, int SR) { c = kk / SR; t = kk - c * SR; }
    __device__ __forceinline__ void advance(int step, int SR) {
        t += step;
        while (t >= SR) { t -= SR; ++c; }
    }
    // c*sWc + f*dw*R + r; with dw == 1 that is c*sWc + t (a window is one contiguous run).
    __device__ __forceinline__ i64 offset(i64 stride_wc, int R, int dw) const {
        int tw = t;
        if (dw != 1) tw += (t / R) * (dw - 1) * R;
        return c * stride_wc + tw;
    }
};

// Column part of output pixel col = (n, p, q) in the window tensor.
__device__ __forceinline__ i64 window_column(i64 col, int P, int Q, i64 stride_wn, i64 stride_wp,
                                             int sw_r) {
    const i64 n = col / ((i64)P * Q);
    const int pq = (int)(col - n * P * Q);
    const int p = pq / Q, q = pq - p * Q;
    return n * stride_wn + p * stride_wp + (i64)q * sw_r;
}

__device__ __forceinline__ i64 output_column(i64 col, int P, int Q, i64 stride_yn, i64 stride_yp,
                                             i64 stride_yq) {
    const i64 n = col / ((i64)P * Q);
    const int pq = (int)(col - n * P * Q);
    const int p = pq / Q, q = pq - p * Q;
    return n * stride_yn + p * stride_yp + q * stride_yq;
}

// Element i of a thread's T-wide fragment along a BT-wide tile: two T/2-wide halves BT/2
// apart, so the 16 threads of a half-warp read 16 consecutive float4 words (no bank
// conflicts) and the same layout serves the float4 and the scalar variants.
template <int BT, int T>
__device__ __forceinline__ int fragment_index(int t, int i) {
    if constexpr (T == 1) {
        return t;
    } else {
        return i < T / 2 ? t * (T / 2) + i : BT / 2 + t * (T / 2) + (i - T / 2);
    }
}

// One 32-bit shared-memory load that stays one: left to itself the compiler may merge
// neighbouring scalar loads into 128-bit ones, and the no-vector ablation would measure
// nothing. volatile + "memory" keep it ordered with the stores and barriers around it.
__device__ __forceinline__ float lds32(const float* p) {
    float v;
    asm volatile("ld.shared.f32 %0, [%1];"
                 : "=f"(v)
                 : "r"((unsigned)__cvta_generic_to_shared(p))
                 : "memory");
    return v;
}

template <int BT, int T, bool VECTOR>
__device__ __forceinline__ void load_fragment(float (&frag)[T], const float* row, int t) {
    if constexpr (T == 1) {
        frag[0] = row[t];  // nothing to vectorize
    } else if constexpr (VECTOR) {
        static_assert(T == 8, "float4 fragments are two 4-wide halves");
        const float4 lo = *reinterpret_cast<const float4*>(row + t * 4);
        const float4 hi = *reinterpret_cast<const float4*>(row + BT / 2 + t * 4);
        frag[0] = lo.x; frag[1] = lo.y; frag[2] = lo.z; frag[3] = lo.w;
        frag[4] = hi.x; frag[5] = hi.y; frag[6] = hi.z; frag[7] = hi.w;
    } else {
#pragma unroll
        for (int i = 0; i < T; ++i) frag[i] = lds32(row + fragment_index<BT, T>(t, i));
    }
}

// ---------------------------------------------------------------------------------------
// The paper's kernel: implicit GEMM over the im2win tensor.
//   BM x BN block tile (output channels x output pixels), BK = 8 reduction steps per tile,
//   (BM/TM) * (BN/TN) threads, each a TM x TN register micro-tile of outer products.
// Ablation switches (each combination is its own compiled kernel):
//   SMEM      stage both operand tiles k-major in shared memory (false: every thread reads
//             its operands straight from global memory, through L1).
//   PREFETCH  two shared-memory stages (the next tile's global loads are issued into
//             registers before the current tile is multiplied, stored to the other stage
//             after) plus register ping-pong of fragments; false: one stage, two barriers
//             per tile, fragments loaded just before use.
//   VECTOR    float4 shared -> register fragment loads (false: scalar 32-bit loads).
// The micro-kernel ablation is TM = TN = 1 with a 16 x 16 block tile (one output per
// thread, 256 threads, same BK = 8 double-buffered staging); see __init__.py.
// MIN_BLOCKS: resident blocks per SM asked of the register allocator (__launch_bounds__).
//   NOTE: measured on H100 (batch-128 paper layers): MIN_BLOCKS = 2 caps the full kernel at
//   128 registers (48 B spilled) and beat MIN_BLOCKS = 1 (163 registers, one block per SM)
//   on 11 of 12 layers, by 6-30% (conv12: 10% slower); for no-smem, 2 beat 1 on every
//   layer (5.5 vs 3.4 TFLOPS on conv1). So every variant uses 2.
// Masking: loads outside K, N*P*Q or CRS read 0, stores outside K or N*P*Q are skipped.
// ---------------------------------------------------------------------------------------
template <int BM, int BN, int TM, int TN, bool SMEM, bool PREFETCH, bool VECTOR, int MIN_BLOCKS>
__global__ void __launch_bounds__((BM / TM) * (BN / TN), MIN_BLOCKS)
paper_gemm_kernel(const float* __restrict__ win, const float* __restrict__ filt,
                  const float* __restrict__ bias, float* __restrict__ y,
                  int N, int C, int K, int R, int S, int P, int Q,
                  i64 stride_wn, i64 stride_wc, i64 stride_wp,
                  i64 stride_fk, i64 stride_b,
                  i64 stride_yn, i64 stride_yk, i64 stride_yp, i64 stride_yq,
                  int stride_w, int dilation_w) {
    constexpr int BK = 8;
    constexpr int THREADS_N = BN / TN;
    constexpr int THREADS = (BM / TM) * THREADS_N;
    static_assert(THREADS % BK == 0, "staging maps BK rows of threads");

    const int tid = threadIdx.x;
    const int tx = tid % THREADS_N;  // pixel fragment
    const int ty = tid / THREADS_N;  // channel fragment
    // Channel tiles fastest: neighbouring blocks share one window tile, which stays in L2.
    const int m_tiles = (K + BM - 1) / BM;
    const int m0 = (int)(blockIdx.x % m_tiles) * BM;
    const i64 n0 = (i64)(blockIdx.x / m_tiles) * BN;
    const i64 NPQ = (i64)N * P * Q;
    const int SR = S * R;
    const int CRS = C * SR;
    const int sw_r = stride_w * R;

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    if constexpr (SMEM) {
        constexpr int STAGES = PREFETCH ? 2 : 1;
        // A rows padded by 4 floats: the transposing stores below then hit 32 distinct
        // banks, and rows stay 16-byte aligned for float4 reads.
        constexpr int LDA = BM + 4;
        __shared__ __align__(16) float As[STAGES][BK][LDA];  // [kk][channel]
        __shared__ __align__(16) float Bs[STAGES][BK][BN];   // [kk][pixel]

        // Global -> register staging. A: a warp reads 8 consecutive kk of 4 filter rows
        // (full 32-byte sectors). B: a warp reads one kk of 32 consecutive pixels.
        constexpr int A_STEP = THREADS / BK, A_LOADS = (BM + A_STEP - 1) / A_STEP;
        constexpr int B_STEP = THREADS / BK, B_LOADS = (BN + B_STEP - 1) / B_STEP;
        const int a_kk = tid % BK, a_row = tid / BK;
        const int b_kk = tid / B_STEP, b_col = tid % B_STEP;
        i64 b_base[B_LOADS];
        bool b_ok[B_LOADS];
#pragma unroll
        for (int i = 0; i < B_LOADS; ++i) {
            const i64 col = n0 + b_col + i * B_STEP;
            b_ok[i] = b_col + i * B_STEP < BN && col < NPQ;
            b_base[i] = b_ok[i] ? window_column(col, P, Q, stride_wn, stride_wp, sw_r) : 0;
        }
        ReductionIndex red;
        red.init(b_kk, SR);
        float a_reg[A_LOADS], b_reg[B_LOADS];

        auto load_tile = [&](int k0) {  // reads tile k0 into registers, advances `red`
            const int kk = k0 + a_kk;
#pragma unroll
            for (int i = 0; i < A_LOADS; ++i) {
                const int row = a_row + i * A_STEP;
                const bool ok = row < BM && m0 + row < K && kk < CRS;
                a_reg[i] = ok ? filt[(i64)(m0 + row) * stride_fk + kk] : 0.f;
            }
            const i64 off = red.offset(stride_wc, R, dilation_w);
            const bool k_ok = red.c < C;
#pragma unroll
            for (int i = 0; i < B_LOADS; ++i) b_reg[i] = k_ok && b_ok[i] ? win[b_base[i] + off] : 0.f;
            red.advance(BK, SR);
        };
        auto store_tile = [&](int stage) {
#pragma unroll
            for (int i = 0; i < A_LOADS; ++i)
                if (a_row + i * A_STEP < BM) As[stage][a_kk][a_row + i * A_STEP] = a_reg[i];
#pragma unroll
            for (int i = 0; i < B_LOADS; ++i)
                if (b_col + i * B_STEP < BN) Bs[stage][b_kk][b_col + i * B_STEP] = b_reg[i];
        };

        const int tiles = (CRS + BK - 1) / BK;
        int stage = 0;
        load_tile(0);
        store_tile(0);
        __syncthreads();
        for (int tile = 0; tile < tiles; ++tile) {
            const bool more = tile + 1 < tiles;
            if (PREFETCH && more) load_tile((tile + 1) * BK);  // in flight during the FMAs

            float fa[PREFETCH ? 2 : 1][TM], fb[PREFETCH ? 2 : 1][TN];
            if constexpr (PREFETCH) {
                load_fragment<BM, TM, VECTOR>(fa[0], As[stage][0], ty);
                load_fragment<BN, TN, VECTOR>(fb[0], Bs[stage][0], tx);
            }
#pragma unroll
            for (int kk = 0; kk < BK; ++kk) {
                const int cur = PREFETCH ? (kk & 1) : 0;
                if constexpr (PREFETCH) {  // ping-pong: fragment kk+1 loads while kk multiplies
                    if (kk + 1 < BK) {
                        load_fragment<BM, TM, VECTOR>(fa[cur ^ 1], As[stage][kk + 1], ty);
                        load_fragment<BN, TN, VECTOR>(fb[cur ^ 1], Bs[stage][kk + 1], tx);
                    }
                } else {
                    load_fragment<BM, TM, VECTOR>(fa[0], As[stage][kk], ty);
                    load_fragment<BN, TN, VECTOR>(fb[0], Bs[stage][kk], tx);
                }
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(fa[cur][i], fb[cur][j], acc[i][j]);
            }

            if (more) {
                if constexpr (!PREFETCH) {
                    __syncthreads();  // everyone is done reading the single stage
                    load_tile((tile + 1) * BK);
                }
                // Two stages: the other stage was last read before the previous barrier.
                stage = PREFETCH ? stage ^ 1 : 0;
                store_tile(stage);
                __syncthreads();
            }
        }
    } else {
        // No shared memory: each thread reads its TM filter values and TN window values for
        // every reduction step straight from global memory.
        i64 b_base[TN];
        bool b_ok[TN];
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const i64 col = n0 + fragment_index<BN, TN>(tx, j);
            b_ok[j] = col < NPQ;
            b_base[j] = b_ok[j] ? window_column(col, P, Q, stride_wn, stride_wp, sw_r) : 0;
        }
        const float* a_ptr[TM];
        bool a_ok[TM];
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int k = m0 + fragment_index<BM, TM>(ty, i);
            a_ok[i] = k < K;
            a_ptr[i] = filt + (a_ok[i] ? (i64)k * stride_fk : 0);
        }
        ReductionIndex red;
        red.init(0, SR);
        for (int kk = 0; kk < CRS; ++kk) {
            const i64 off = red.offset(stride_wc, R, dilation_w);
            float fa[TM], fb[TN];
#pragma unroll
            for (int i = 0; i < TM; ++i) fa[i] = a_ok[i] ? a_ptr[i][kk] : 0.f;
#pragma unroll
            for (int j = 0; j < TN; ++j) fb[j] = b_ok[j] ? win[b_base[j] + off] : 0.f;
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(fa[i], fb[j], acc[i][j]);
            red.advance(1, SR);
        }
    }

    // Epilogue: bias, then guarded scalar stores into y (any strides).
    i64 y_col[TN];
    bool col_ok[TN];
#pragma unroll
    for (int j = 0; j < TN; ++j) {
        const i64 col = n0 + fragment_index<BN, TN>(tx, j);
        col_ok[j] = col < NPQ;
        y_col[j] = col_ok[j] ? output_column(col, P, Q, stride_yn, stride_yp, stride_yq) : 0;
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int k = m0 + fragment_index<BM, TM>(ty, i);
        if (k >= K) continue;
        const float b = bias != nullptr ? bias[k * stride_b] : 0.f;
        float* y_row = y + (i64)k * stride_yk;
#pragma unroll
        for (int j = 0; j < TN; ++j)
            if (col_ok[j]) y_row[y_col[j]] = acc[i][j] + b;
    }
}

// ---------------------------------------------------------------------------------------
// Baselines. The two "per image" kernels follow the authors' launch: one thread per output
// (p, q) of output channel blockIdx.z, 32 x 32 blocks with threadIdx.x walking p, one launch
// per image. Consecutive threads therefore take consecutive output *rows*: neither the
// reads nor the writes coalesce -- the uncoalesced baseline the paper compares against.
// ---------------------------------------------------------------------------------------

// Direct convolution on the (zero-padded, strided, dilated) NCHW input of one image.
__global__ void direct_naive_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                    const float* __restrict__ bias, float* __restrict__ y,
                                    int C, int H, int W, int K, int R, int S, int P, int Q,
                                    i64 stride_xc, i64 stride_xh, i64 stride_xw,
                                    i64 stride_fk, i64 stride_fc, i64 stride_fr, i64 stride_fs,
                                    i64 stride_b, i64 stride_yk, i64 stride_yp, i64 stride_yq,
                                    int stride_h, int stride_w, int pad_top, int pad_left,
                                    int dilation_h, int dilation_w) {
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    const int q = blockIdx.y * blockDim.y + threadIdx.y;
    const int k = blockIdx.z;
    if (p >= P || q >= Q) return;
    float acc = 0.f;
    for (int c = 0; c < C; ++c) {
        for (int r = 0; r < R; ++r) {
            const int h = p * stride_h - pad_top + r * dilation_h;
            if (h < 0 || h >= H) continue;
            for (int f = 0; f < S; ++f) {
                const int wi = q * stride_w - pad_left + f * dilation_w;
                if (wi < 0 || wi >= W) continue;
                acc = fmaf(x[c * stride_xc + h * stride_xh + wi * stride_xw],
                           w[k * stride_fk + c * stride_fc + r * stride_fr + f * stride_fs], acc);
            }
        }
    }
    if (bias != nullptr) acc += bias[k * stride_b];
    y[k * stride_yk + p * stride_yp + q * stride_yq] = acc;
}

// The same scheme over the window tensor of one image: the window of output (p, q) in
// channel c is the run Win[c][p][q*sw*R + f*dw*R + r], contiguous when dw == 1.
__global__ void im2win_base_kernel(const float* __restrict__ win, const float* __restrict__ filt,
                                   const float* __restrict__ bias, float* __restrict__ y,
                                   int C, int K, int R, int S, int P, int Q,
                                   i64 stride_wc, i64 stride_wp, i64 stride_fk, i64 stride_b,
                                   i64 stride_yk, i64 stride_yp, i64 stride_yq,
                                   int stride_w, int dilation_w) {
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    const int q = blockIdx.y * blockDim.y + threadIdx.y;
    const int k = blockIdx.z;
    if (p >= P || q >= Q) return;
    const float* window = win + p * stride_wp + (i64)q * stride_w * R;
    const float* f_k = filt + k * stride_fk;
    const int SR = S * R, step = dilation_w * R;
    float acc = 0.f;
    for (int c = 0; c < C; ++c) {
        const float* w_c = window + c * stride_wc;
        const float* f_c = f_k + c * SR;
        for (int f = 0; f < S; ++f)
            for (int r = 0; r < R; ++r) acc = fmaf(f_c[f * R + r], w_c[f * step + r], acc);
    }
    if (bias != nullptr) acc += bias[k * stride_b];
    y[k * stride_yk + p * stride_yp + q * stride_yq] = acc;
}

// ---------------------------------------------------------------------------------------
// A reasonable direct convolution (no transform buffer). One block computes a
// DK-channel x DP x DQ-pixel output tile of one image; 256 threads, each 4 consecutive
// channels x 4 pixels (16 accumulators). Per chunk of `cb` input channels the block stages
//   fs[c][r][f][DK]  the filter slice, channels innermost (one float4 per thread and tap)
//   patch[c][PH][PW] the input patch the tile reads, zero where it falls in the padding
// in dynamic shared memory (cb is chosen by the host to fit).
// ---------------------------------------------------------------------------------------
constexpr int DK = 64, DP = 8, DQ = 8;

__global__ void __launch_bounds__(256)
direct_tiled_kernel(const float* __restrict__ x, const float* __restrict__ w,
                    const float* __restrict__ bias, float* __restrict__ y,
                    int N, int C, int H, int W, int K, int R, int S, int P, int Q,
                    i64 stride_xn, i64 stride_xc, i64 stride_xh, i64 stride_xw,
                    i64 stride_fk, i64 stride_fc, i64 stride_fr, i64 stride_fs, i64 stride_b,
                    i64 stride_yn, i64 stride_yk, i64 stride_yp, i64 stride_yq,
                    int stride_h, int stride_w, int pad_top, int pad_left,
                    int dilation_h, int dilation_w, int cb) {
    extern __shared__ __align__(16) float smem[];
    const int PH = (DP - 1) * stride_h + (R - 1) * dilation_h + 1;
    const int PW = (DQ - 1) * stride_w + (S - 1) * dilation_w + 1;
    float* fs = smem;                     // [cb][R][S][DK]
    float* patch = smem + cb * R * S * DK;  // [cb][PH][PW]

    // Block -> (n, p tile, q tile, k tile), k tiles fastest (they share the input patch).
    const int k_tiles = (K + DK - 1) / DK, q_tiles = (Q + DQ - 1) / DQ, p_tiles = (P + DP - 1) / DP;
    i64 b = blockIdx.x;
    const int k0 = (int)(b % k_tiles) * DK; b /= k_tiles;
    const int q0 = (int)(b % q_tiles) * DQ; b /= q_tiles;
    const int p0 = (int)(b % p_tiles) * DP; b /= p_tiles;
    const i64 n = b;
    const float* x_n = x + n * stride_xn;
    const int h0 = p0 * stride_h - pad_top, w0 = q0 * stride_w - pad_left;

    const int tid = threadIdx.x;
    const int tk = tid / 16;  // channels k0 + 4*tk .. +3
    const int tp = tid % 16;  // pixels tp + 16*j, j < 4, of the DP x DQ tile
    int pix_off[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int pi = tp + 16 * j, pr = pi / DQ, pc = pi % DQ;
        pix_off[j] = pr * stride_h * PW + pc * stride_w;
    }
    float acc[4][4] = {};

    const int RS = R * S;
    for (int c0 = 0; c0 < C; c0 += cb) {
        const int n_fs = cb * RS * DK, n_patch = cb * PH * PW;
        for (int e = tid; e < n_fs; e += 256) {
            const int k = e % DK, tap = e / DK;  // tap = (cl*R + r)*S + f
            const int f = tap % S, r = tap / S % R, c = c0 + tap / RS;
            fs[e] = k0 + k < K && c < C
                        ? w[(k0 + k) * stride_fk + c * stride_fc + r * stride_fr + f * stride_fs]
                        : 0.f;
        }
        for (int e = tid; e < n_patch; e += 256) {
            const int pw = e % PW, ph = e / PW % PH, c = c0 + e / (PH * PW);
            const int h = h0 + ph, wi = w0 + pw;
            patch[e] = c < C && h >= 0 && h < H && wi >= 0 && wi < W
                           ? x_n[c * stride_xc + h * stride_xh + wi * stride_xw]
                           : 0.f;
        }
        __syncthreads();
        const int cl_end = min(cb, C - c0);
        for (int cl = 0; cl < cl_end; ++cl) {
            for (int r = 0; r < R; ++r) {
                for (int f = 0; f < S; ++f) {
                    const float4 wv =
                        *reinterpret_cast<const float4*>(fs + ((cl * R + r) * S + f) * DK + 4 * tk);
                    const float* xp = patch + (cl * PH + r * dilation_h) * PW + f * dilation_w;
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        const float xv = xp[pix_off[j]];
                        acc[0][j] = fmaf(wv.x, xv, acc[0][j]);
                        acc[1][j] = fmaf(wv.y, xv, acc[1][j]);
                        acc[2][j] = fmaf(wv.z, xv, acc[2][j]);
                        acc[3][j] = fmaf(wv.w, xv, acc[3][j]);
                    }
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int k = k0 + 4 * tk + i;
        if (k >= K) continue;
        const float bk = bias != nullptr ? bias[k * stride_b] : 0.f;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int pi = tp + 16 * j, p = p0 + pi / DQ, q = q0 + pi % DQ;
            if (p < P && q < Q)
                y[n * stride_yn + k * stride_yk + p * stride_yp + q * stride_yq] = acc[i][j] + bk;
        }
    }
}
