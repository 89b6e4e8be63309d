// tq-gguf: CUDA device code of the turbo KV-cache types (docs/FORMAT.md); the trellis-coded
// value types tcq2 and tcq3 are in tq-tcq.cuh, included at the end with the entry points
// (tq_cuda_quantize, dequantize_tq) that take either kind of type.
//
// Included by ggml-cuda's set-rows.cu, dequantize.cuh and fattn-common.cuh once
// common.cuh is in scope. The quantizer follows native/tq-quants.c step for step so
// that it writes the same bytes: one warp quantizes one block of 64 values, lane i
// holding x[i] and x[i + 32], so the spec's halving tree is exactly the xor-shuffle
// butterfly 16, 8, 4, 2, 1 (tests/unit/test_gpu_warp_model.py models it lane by lane).
// ggml-cuda compiles with -use_fast_math (approximate sqrt and division, FMA
// contraction), so every normative step uses an explicitly rounded intrinsic.
#pragma once

#include "../tq-quants.h"

// Codebooks and the per-type traits tq_cuda_type<type> (bits, block, centroids(),
// midpoints(), search_midpoints()), generated from the type table.
#include "tq-codebooks.cuh"

//
// quantization: one warp per block of 64 values
//

// FORMAT.md section 5, step 2. fminf/fmaxf are exact; the flush keeps every later
// intermediate normal, so the -ftz of fast math cannot change a result.
static __device__ __forceinline__ float tq_cuda_condition(float v) {
    v = fminf(fmaxf(v, -TQ_CLAMP), TQ_CLAMP);
    return fabsf(v) < TQ_FLUSH ? 0.0f : v;
}

// The halving tree over 64 values held two per lane: s = a + b is step "i + 32",
// then lane i adds lane i ^ h for h = 16 .. 1, which for i < h is lane i + h.
// Floating-point addition is commutative, so every lane ends with lane 0's sum.
static __device__ __forceinline__ float tq_cuda_tree_sum(const float a, const float b) {
    float s = __fadd_rn(a, b);
#pragma unroll
    for (int h = 16; h >= 1; h >>= 1) {
        s = __fadd_rn(s, __shfl_xor_sync(0xFFFFFFFF, s, h, 32));
    }
    return s;
}

// FORMAT.md step 6: the number of positive midpoints of a candidate strictly below |u|
// (a tie goes to the index nearer zero).
template <int nmid>
static __device__ __forceinline__ int tq_cuda_count(const float a, const float * __restrict__ mid) {
    int k = 0;
#pragma unroll
    for (int j = 0; j < nmid; ++j) {
        k += a > mid[j];
    }
    return k;
}

// FORMAT.md step 8: round to nearest even with fp16 subnormals (the hardware
// conversion keeps them), saturating instead of overflowing to infinity.
static __device__ __forceinline__ half tq_cuda_scale_to_fp16(const float scale) {
    if (scale > 65504.0f) {
        return __ushort_as_half((unsigned short) 0x7BFF);
    }
    return __float2half_rn(scale);
}

// Packs the indices of a block; lane l holds lo = idx[l] and hi = idx[l + 32].
template <ggml_type type>
static __device__ __forceinline__ void tq_cuda_pack(const int lane, const int lo, const int hi,
                                                    typename tq_cuda_type<type>::block * y) {
    if constexpr (type == GGML_TYPE_TURBO4) {
        // qs[j] = idx[j] | idx[j + 32] << 4: lane j already holds both nibbles
        y->qs[lane] = (uint8_t) (lo | hi << 4);
    } else {
        // qs[j] = idx[j] | idx[j + 16] << 2 | idx[j + 32] << 4 | idx[j + 48] << 6 (low two bits
        // of each index); idx[j + 16] and idx[j + 48] are on lane j + 16
        const int lo16 = __shfl_down_sync(0xFFFFFFFF, lo, 16, 32);
        const int hi16 = __shfl_down_sync(0xFFFFFFFF, hi, 16, 32);
        if (lane < 16) {
            y->qs[lane] = (uint8_t) ((lo & 3) | (lo16 & 3) << 2 | (hi & 3) << 4 | (hi16 & 3) << 6);
        }
        if constexpr (type == GGML_TYPE_TURBO3) {
            // bit k of qh[j] is bit 2 of idx[j + 8k]: for k < 4 that is lo of lane j + 8k,
            // for k >= 4 hi of lane j + 8(k - 4); every lane shuffles, lanes 0..7 store
            uint8_t h = 0;
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                h |= (uint8_t) (((__shfl_sync(0xFFFFFFFF, lo, lane % 8 + 8*k, 32) >> 2) & 1) << k);
                h |= (uint8_t) (((__shfl_sync(0xFFFFFFFF, hi, lane % 8 + 8*k, 32) >> 2) & 1) << (k + 4));
            }
            if (lane < 8) {
                y->qh[lane] = h;
            }
        }
    }
}

// Quantizes x[0..63] into *y with the whole warp. Must be called by all 32 lanes.
template <ggml_type type>
static __device__ void tq_cuda_quantize_block(const float * __restrict__ x, typename tq_cuda_type<type>::block * __restrict__ y) {
    constexpr int npos = 1 << (tq_cuda_type<type>::bits - 1);
    constexpr int nmid = npos - 1; // N/2 centroids on each side of zero, N/2 - 1 midpoints between them
    const int lane = threadIdx.x % 32;

    float a = x[lane];
    float b = x[lane + 32];

    // step 1: any NaN or infinity -> quiet-NaN scale, all indices 0 (all bytes zero)
    if (__any_sync(0xFFFFFFFF, !isfinite(a) || !isfinite(b))) {
        if constexpr (type == GGML_TYPE_TURBO4) {
            y->qs[lane] = 0;
        } else {
            if (lane < 16) {
                y->qs[lane] = 0;
            }
            if constexpr (type == GGML_TYPE_TURBO3) {
                if (lane < 8) {
                    y->qh[lane] = 0;
                }
            }
        }
        if (lane == 0) {
            y->d = __ushort_as_half((unsigned short) TQ_SCALE_NONFINITE);
        }
        return;
    }

    // steps 2-3: range conditioning, then the sum of squares (each square rounded)
    a = tq_cuda_condition(a);
    b = tq_cuda_condition(b);
    const float ss = tq_cuda_tree_sum(__fmul_rn(a, a), __fmul_rn(b, b));

    // step 4: an all-zero block takes the index of u = 0 everywhere and scale 0
    if (ss == 0.0f) {
        const int k = npos - 1;
        tq_cuda_pack<type>(lane, k, k, y);
        if (lane == 0) {
            y->d = __ushort_as_half((unsigned short) 0);
        }
        return;
    }

    // step 5: one correctly rounded reciprocal, then one multiply per value
    const float norm = __fsqrt_rn(ss);
    const float inv  = __fdiv_rn(1.0f, norm);
    const float ua = __fmul_rn(a, inv);
    const float ub = __fmul_rn(b, inv);

    // step 6: the scale search. Lane l counts x[l] and x[l + 32] against each candidate's
    // thresholds; p and cs are tree sums, so every lane holds the same score and the
    // branch below is uniform across the warp. |x| and |C| are exact, and both products
    // are normal (the conditioning of step 2), so -ftz cannot touch them.
    const float * smid = tq_cuda_type<type>::search_midpoints();
    const float * cen  = tq_cuda_type<type>::centroids();
    const float xa = fabsf(a);
    const float xb = fabsf(b);

    float best = 0.0f;
    float cs   = 0.0f;
    int   na   = 0;
    int   nb   = 0;
#pragma unroll
    for (int t = 0; t < TQ_CUDA_SEARCH_STEPS; ++t) {
        const int   ta = tq_cuda_count<nmid>(fabsf(ua), smid + t*nmid);
        const int   tb = tq_cuda_count<nmid>(fabsf(ub), smid + t*nmid);
        const float ca = cen[npos + ta]; // |C[idx]|: the positive half of the codebook
        const float cb = cen[npos + tb];
        const float p  = tq_cuda_tree_sum(__fmul_rn(xa, ca), __fmul_rn(xb, cb));
        const float tc = tq_cuda_tree_sum(__fmul_rn(ca, ca), __fmul_rn(cb, cb));
        const float score = __fdiv_rn(p, __fsqrt_rn(tc));
        // the first of equal scores stays
        if (t == 0 || score > best) {
            best = score;
            cs   = tc;
            na   = ta;
            nb   = tb;
        }
    }
    const int ka = ua > 0.0f ? npos + na : npos - 1 - na; // +-0 takes npos - 1
    const int kb = ub > 0.0f ? npos + nb : npos - 1 - nb;

    // step 7: norm-preserving scale from the winner's centroids
    const float scale = __fdiv_rn(norm, __fsqrt_rn(cs));

    tq_cuda_pack<type>(lane, ka, kb, y);
    if (lane == 0) {
        y->d = tq_cuda_scale_to_fp16(scale);
    }
}

//
// dequantization
//

// Index i of a block (FORMAT.md section 4).
template <ggml_type type>
static __device__ __forceinline__ int tq_cuda_get_index(const typename tq_cuda_type<type>::block * x, const int i) {
    if constexpr (type == GGML_TYPE_TURBO2) {
        return (x->qs[i % 16] >> (2*(i / 16))) & 3;
    } else if constexpr (type == GGML_TYPE_TURBO3) {
        return ((x->qs[i % 16] >> (2*(i / 16))) & 3) | ((x->qh[i % 8] >> (i / 8)) & 1) << 2;
    } else {
        return (x->qs[i % 32] >> (4*(i / 32))) & 15;
    }
}

// ggml's dequantize_kernel_t with qk = 64, qr = 2: values iqs and iqs + 32 of block ib.
// y = f32(d) * C[idx], one multiply (FORMAT.md section 6), exact in float32.
template <ggml_type type>
static __device__ __forceinline__ void dequantize_turbo(const void * vx, const int64_t ib, const int iqs, float2 & v) {
    const typename tq_cuda_type<type>::block * x = (const typename tq_cuda_type<type>::block *) vx + ib;
    const float   d   = __half2float(x->d);
    const float * cen = tq_cuda_type<type>::centroids();
    v.x = __fmul_rn(d, cen[tq_cuda_get_index<type>(x, iqs)]);
    v.y = __fmul_rn(d, cen[tq_cuda_get_index<type>(x, iqs + 32)]);
}

// ne consecutive values i0 .. i0 + ne - 1 of a row (ne = 4 or 8, i0 a multiple of ne), as
// centroids c[] and the block scale. The layout puts their index bits in ne consecutive
// bytes of each plane at one shift, so each plane is a single ne-byte load.
template <ggml_type type, int ne>
static __device__ __forceinline__ float tq_cuda_load_centroids(const char * __restrict__ row, const int i0, float * c) {
    static_assert(ne == 4 || ne == 8, "bad ne");
    typedef typename tq_cuda_type<type>::block block;
    const block * x = (const block *) row + i0 / QK_TURBO;
    const int     i = i0 % QK_TURBO;
    const float * cen = tq_cuda_type<type>::centroids();

    // blocks are 18, 26 or 34 bytes: only 2-byte alignment is guaranteed
    uint8_t q[ne];
    if constexpr (type == GGML_TYPE_TURBO4) {
        ggml_cuda_memcpy_1<ne, 2>(q, x->qs + i % 32);
#pragma unroll
        for (int l = 0; l < ne; ++l) {
            c[l] = cen[(q[l] >> (4*(i / 32))) & 15];
        }
    } else {
        ggml_cuda_memcpy_1<ne, 2>(q, x->qs + i % 16);
        if constexpr (type == GGML_TYPE_TURBO3) {
            uint8_t h[ne];
            ggml_cuda_memcpy_1<ne, 2>(h, x->qh + i % 8);
#pragma unroll
            for (int l = 0; l < ne; ++l) {
                c[l] = cen[((q[l] >> (2*(i / 16))) & 3) | ((h[l] >> (i / 8)) & 1) << 2];
            }
        } else {
#pragma unroll
            for (int l = 0; l < ne; ++l) {
                c[l] = cen[(q[l] >> (2*(i / 16))) & 3];
            }
        }
    }
    return __half2float(x->d);
}

//
// the trellis-coded value types tcq2 and tcq3, and the entry points shared by every type
//

#include "tq-tcq.cuh"

// Any of tq-gguf's types: what set_rows, the copies and the V of flash attention take.
static constexpr __host__ __device__ bool tq_cuda_is_tq(const ggml_type type) {
    return tq_cuda_is_turbo(type) || tq_cuda_is_tcq(type);
}

// Quantizes x[0..63] into *y with the whole warp. Must be called by all 32 lanes.
template <ggml_type type>
static __device__ __forceinline__ void tq_cuda_quantize(const float * __restrict__ x, typename tq_cuda_type<type>::block * __restrict__ y) {
    if constexpr (tq_cuda_is_tcq(type)) {
        tq_cuda_tcq_quantize_block<type>(x, y);
    } else {
        tq_cuda_quantize_block<type>(x, y);
    }
}

// dequantize_kernel_t (qk = 64, qr = 2) of any tq-gguf type.
template <ggml_type type>
static __device__ __forceinline__ void dequantize_tq(const void * vx, const int64_t ib, const int iqs, float2 & v) {
    if constexpr (tq_cuda_is_tcq(type)) {
        dequantize_tcq<type>(vx, ib, iqs, v);
    } else {
        dequantize_turbo<type>(vx, ib, iqs, v);
    }
}
