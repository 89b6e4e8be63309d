// tq-gguf: CUDA device code of the trellis-coded value types tcq2 and tcq3 (docs/FORMAT.md,
// section 12): the encoder (set_rows, f32 -> tcq copies) and the decoders (get_rows,
// conversion, tcq -> f32 copies, the V of the vector FlashAttention kernel).
//
// Included at the end of tq-cuda.cuh, whose helpers (tq_cuda_tree_sum, tq_cuda_scale_to_fp16)
// it shares. The encoder is tq_tcq_quantize_block_ref (native/tq-tcq.c) step for step, so it
// writes the same bytes; ggml-cuda compiles with -use_fast_math, so every float operation of
// the spec is an explicitly rounded intrinsic (no contraction of e = d*d into cost + e).
#pragma once

// block_tcq2/3 and the host tables (unused here); the device tables and the traits
// tq_cuda_type<GGML_TYPE_TCQN> are generated from the type table
#include "../tq-tcq.h"
#include "tq-tcq-tables.cuh"

static_assert(QK_TCQ == QK_TURBO, "the turbo kernels' launch geometry assumes 64-value blocks");

//
// the encoder: one warp per block of 64 values (FORMAT.md 12.5)
//
// Lane l holds x[l] and x[l + 32] as the turbo quantizer does, so the sum of squares and the
// sum of the decoded levels' squares are the same shuffle butterfly (the spec's halving tree).
// The Viterbi runs every candidate scale at once: lane t*S + k keeps the cost of state k under
// candidate t (4 candidates x 8 states = 32 lanes for tcq3; tcq2's 4 x 4 = 16 lanes are
// computed twice, by lanes 0..15 and 16..31) and its 64 decisions as the bits of one word.
// The traceback is uniform across the warp: each step reads the decision of the state it is
// in from the winning candidate's lane.

// rank of the nearest level of subset j: the midpoints strictly below v (on a midpoint, the lower)
template <ggml_type type>
static __device__ __forceinline__ int tq_cuda_tcq_rank(const int j, const float v) {
    constexpr int nmid = tq_cuda_type<type>::ranks - 1;
    const float * mid = tq_cuda_type<type>::midpoints() + j*nmid;
    int r = 0;
#pragma unroll
    for (int k = 0; k < nmid; ++k) {
        r += v > mid[k];
    }
    return r;
}

// the squared distance from v to the nearest level of subset j, rounded as the spec rounds it
template <ggml_type type>
static __device__ __forceinline__ float tq_cuda_tcq_err(const int j, const float v) {
    const float d = __fsub_rn(v, tq_cuda_type<type>::levels()[j + 4*tq_cuda_tcq_rank<type>(j, v)]);
    return __fmul_rn(d, d);
}

// Quantizes x[0..63] into *y with the whole warp. Must be called by all 32 lanes.
template <ggml_type type>
static __device__ void tq_cuda_tcq_quantize_block(const float * __restrict__ x, typename tq_cuda_type<type>::block * __restrict__ y) {
    typedef tq_cuda_type<type> tr;
    constexpr int S  = tr::states;
    constexpr int W  = tr::scales*S;        // lanes of one copy of the search
    constexpr int QS = tr::qs_bytes;
    static_assert(W <= 32 && 32 % W == 0, "the candidates and states do not tile a warp");
    static_assert(QS <= 32, "rank plane too large");
    const int lane = threadIdx.x % 32;

    float a = x[lane];
    float b = x[lane + 32];

    // step 1: any NaN or infinity -> d = 0x7E00, every other bit 0
    if (__any_sync(0xFFFFFFFF, !isfinite(a) || !isfinite(b))) {
        if (lane < QS) {
            y->qs[lane] = 0;
        }
        if (lane < 8) {
            y->qb[lane] = 0;
        }
        if (lane == 0) {
            y->d = __ushort_as_half((unsigned short) TQ_TCQ_SCALE_NONFINITE);
        }
        return;
    }

    // steps 2-4: range conditioning, the sum of squares (each square rounded); zero block: all 0
    a = fminf(fmaxf(a, -TQ_TCQ_CLAMP), TQ_TCQ_CLAMP);
    b = fminf(fmaxf(b, -TQ_TCQ_CLAMP), TQ_TCQ_CLAMP);
    a = fabsf(a) < TQ_TCQ_FLUSH ? 0.0f : a;
    b = fabsf(b) < TQ_TCQ_FLUSH ? 0.0f : b;
    const float ss = tq_cuda_tree_sum(__fmul_rn(a, a), __fmul_rn(b, b));
    if (ss == 0.0f) {
        if (lane < QS) {
            y->qs[lane] = 0;
        }
        if (lane < 8) {
            y->qb[lane] = 0;
        }
        if (lane == 0) {
            y->d = __ushort_as_half((unsigned short) 0);
        }
        return;
    }

    // step 5: one correctly rounded square root and reciprocal
    const float norm = __fsqrt_rn(ss);
    const float inv  = __fdiv_rn(1.0f, norm);

    // step 6: the Viterbi of candidate t, state k on this lane
    const int ln = lane % W;
    const int t  = ln / S;
    const int k  = ln % S;
    const int p0 = k >> 1;
    const int p1 = p0 + S/2;
    const int j0 = tr::subset()[2*p0 + (k & 1)];
    const int j1 = tr::subset()[2*p1 + (k & 1)];
    const float s_t = __fmul_rn(inv, tr::inv_factors()[t]);

    float    cost = k == 0 ? 0.0f : INFINITY; // every block starts in state 0
    uint64_t dec  = 0;                         // bit i: state k after value i came from p1
    for (int i = 0; i < QK_TCQ; ++i) {
        const float xi = __shfl_sync(0xFFFFFFFF, i < 32 ? a : b, i % 32, 32);
        const float v  = __fmul_rn(xi, s_t);
        const float e0 = tq_cuda_tcq_err<type>(j0, v);
        const float e1 = tq_cuda_tcq_err<type>(j1, v);
        const float c0 = __fadd_rn(__shfl_sync(0xFFFFFFFF, cost, t*S + p0, W), e0);
        const float c1 = __fadd_rn(__shfl_sync(0xFFFFFFFF, cost, t*S + p1, W), e1);
        const bool take1 = c1 < c0;              // a tie keeps p0; +inf < +inf is false
        cost = take1 ? c1 : c0;
        dec |= (uint64_t) take1 << i;
    }

    // step 7: metric[t] = cost[0] * F2[t] (on lane t*S); the first of equal metrics wins
    const float metric = __fmul_rn(cost, tr::factors_sq()[t]);
    int   win  = 0;
    float best = __shfl_sync(0xFFFFFFFF, metric, 0, 32);
#pragma unroll
    for (int c = 1; c < tr::scales; ++c) {
        const float m = __shfl_sync(0xFFFFFFFF, metric, c*S, 32);
        if (m < best) {
            best = m;
            win  = c;
        }
    }

    // step 8: the winner's path from state 0 after value 63; every lane walks it (the state is
    // uniform), lane l keeps the rank byte and the squared levels it stores or sums
    const float s_w = __fmul_rn(inv, tr::inv_factors()[win]);
    int      state = 0;
    uint64_t B     = 0;
    int      qsb   = 0;
    float    ca    = 0.0f;
    float    cb    = 0.0f;
    for (int i = QK_TCQ - 1; i >= 0; --i) {
        const uint64_t d = __shfl_sync(0xFFFFFFFF, dec, win*S + state, 32);
        const int prev = (state >> 1) | (int) ((d >> i) & 1)*(S/2);
        const int u    = state & 1;
        const int j    = tr::subset()[2*prev + u];
        const float xi = __shfl_sync(0xFFFFFFFF, i < 32 ? a : b, i % 32, 32);
        const int r    = tq_cuda_tcq_rank<type>(j, __fmul_rn(xi, s_w));
        const float c  = tr::levels()[j + 4*r];
        B |= (uint64_t) u << i;
        if constexpr (QS == 16) {
            qsb |= (i % 16 == lane) ? r << (2*(i / 16)) : 0; // turbo2's arrangement
        } else {
            qsb |= (i / 8 == lane) ? r << (i % 8) : 0;       // bit i of the plane
        }
        if (i == lane) {
            ca = __fmul_rn(c, c);
        }
        if (i == lane + 32) {
            cb = __fmul_rn(c, c);
        }
        state = prev;
    }

    // step 9-10: the norm-preserving scale, fp16 saturating at 65504
    const float cc    = tq_cuda_tree_sum(ca, cb);
    const float scale = __fdiv_rn(norm, __fsqrt_rn(cc));

    if (lane < QS) {
        y->qs[lane] = (uint8_t) qsb;
    }
    if (lane < 8) {
        y->qb[lane] = (uint8_t) (B >> (8*lane));
    }
    if (lane == 0) {
        y->d = tq_cuda_scale_to_fp16(scale);
    }
}

//
// the decoders (FORMAT.md 12.6): each value alone, from its window of branch bits and its rank
//

// The branch-bit plane as the 64-bit word B (bit i: u[i]); blocks are only 2-byte aligned.
template <ggml_type type>
static __device__ __forceinline__ uint64_t tq_cuda_tcq_branches(const typename tq_cuda_type<type>::block * x) {
    uint64_t B;
    ggml_cuda_memcpy_1<8, 2>(&B, x->qb);
    return B;
}

// Bits u[i0 - memory] .. of B from bit 0 on, with u[k < 0] = 0: value i0 + l's window of
// memory + 1 branch bits is (window >> l) & (2^(memory + 1) - 1).
template <ggml_type type>
static __device__ __forceinline__ uint32_t tq_cuda_tcq_window(const uint64_t B, const int i0) {
    constexpr int m = tq_cuda_type<type>::memory;
    return i0 >= m ? (uint32_t) (B >> (i0 - m)) : (uint32_t) (B << (m - i0));
}

// The level of value i of a block (without its scale).
template <ggml_type type>
static __device__ __forceinline__ float tq_cuda_tcq_level(const typename tq_cuda_type<type>::block * x, const uint64_t B, const int i) {
    typedef tq_cuda_type<type> tr;
    constexpr int wmask = (1 << (tr::memory + 1)) - 1;
    const int w = tq_cuda_tcq_window<type>(B, i) & wmask;
    int r;
    if constexpr (tr::qs_bytes == 16) {
        r = (x->qs[i % 16] >> (2*(i / 16))) & 3;
    } else {
        r = (x->qs[i / 8] >> (i % 8)) & 1;
    }
    return tr::window_levels()[w*tr::ranks + r];
}

// ggml's dequantize_kernel_t with qk = 64, qr = 2: values iqs and iqs + 32 of block ib.
// y = f32(d) * L[idx], one multiply.
template <ggml_type type>
static __device__ __forceinline__ void dequantize_tcq(const void * vx, const int64_t ib, const int iqs, float2 & v) {
    const typename tq_cuda_type<type>::block * x = (const typename tq_cuda_type<type>::block *) vx + ib;
    const float    d = __half2float(x->d);
    const uint64_t B = tq_cuda_tcq_branches<type>(x);
    v.x = __fmul_rn(d, tq_cuda_tcq_level<type>(x, B, iqs));
    v.y = __fmul_rn(d, tq_cuda_tcq_level<type>(x, B, iqs + 32));
}

// ne consecutive values i0 .. i0 + ne - 1 of a row (ne = 4 or 8, i0 a multiple of ne) as their
// levels c[] and the block scale, like tq_cuda_load_centroids: the ranks of ne consecutive values
// are ne consecutive bytes of tcq3's plane at one shift, or one byte of tcq2's.
template <ggml_type type, int ne>
static __device__ __forceinline__ float tq_cuda_tcq_load_levels(const char * __restrict__ row, const int i0, float * c) {
    static_assert(ne == 4 || ne == 8, "bad ne");
    typedef tq_cuda_type<type> tr;
    typedef typename tr::block block;
    constexpr int wmask = (1 << (tr::memory + 1)) - 1;
    const block * x = (const block *) row + i0 / QK_TCQ;
    const int     i = i0 % QK_TCQ;

    const uint32_t win = tq_cuda_tcq_window<type>(tq_cuda_tcq_branches<type>(x), i);
    const float * wl = tr::window_levels();
    if constexpr (tr::qs_bytes == 16) {
        uint8_t q[ne];
        ggml_cuda_memcpy_1<ne, 2>(q, x->qs + i % 16);
#pragma unroll
        for (int l = 0; l < ne; ++l) {
            c[l] = wl[((win >> l) & wmask)*tr::ranks + ((q[l] >> (2*(i / 16))) & 3)];
        }
    } else {
        const int q = x->qs[i / 8] >> (i % 8);
#pragma unroll
        for (int l = 0; l < ne; ++l) {
            c[l] = wl[((win >> l) & wmask)*tr::ranks + ((q >> l) & 1)];
        }
    }
    return __half2float(x->d);
}
