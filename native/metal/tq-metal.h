// tq-gguf: Metal device code of the turbo KV-cache types (docs/FORMAT.md).
//
// The counterpart of native/cuda/tq-cuda.cuh, kept in the same order and with the same
// names (tq_cuda_* -> tq_metal_*) so the two can be reviewed side by side. ggml-metal's
// CMake (patch 0007) inlines this header, after tq-metal-types.h, into turbo.metal and
// fa_vec_turbo.metal the way it inlines dequantize.h. One simdgroup (32 threads) quantizes one block of 64
// values, thread i holding x[i] and x[i + 32], so FORMAT.md's halving tree is exactly
// the simd_shuffle_xor butterfly 16, 8, 4, 2, 1.
//
// Metal compiles with fast math: sqrt and division are approximate, multiplies may be
// contracted into FMAs and NaN/Inf may be assumed away. Hence precise::sqrt and
// precise::divide, contraction switched off in the quantizer, and non-finite values
// detected from their exponent bits rather than with isfinite().
#pragma once

// Blocks, QK_TURBO, codebooks and the per-type traits tq_metal_type<block_q>, generated
// from the type table.
#include "tq-metal-types.h"

#define TQ_CLAMP           1152921504606846976.0f  // 2^60
#define TQ_FLUSH           1.08420217248550443e-19f // 2^-63
#define TQ_SCALE_NONFINITE 0x7E00

//
// quantization: one simdgroup per block of 64 values
//

// FORMAT.md section 5, step 1, from the bits: fast math may fold isfinite() to true
static inline bool tq_metal_is_finite(float v) {
    return (as_type<uint>(v) & 0x7F800000u) != 0x7F800000u;
}

// step 2: min/max are exact; the flush keeps every later intermediate normal
static inline float tq_metal_condition(float v) {
    v = min(max(v, -TQ_CLAMP), TQ_CLAMP);
    return fabs(v) < TQ_FLUSH ? 0.0f : v;
}

// The halving tree over 64 values held two per thread: s = a + b is step "i + 32",
// then thread i adds thread i ^ h for h = 16 .. 1, which for i < h is thread i + h.
// Addition is commutative, so every thread ends with thread 0's sum.
static inline float tq_metal_tree_sum(float a, float b) {
    float s = a + b;
    for (ushort h = 16; h >= 1; h >>= 1) {
        s = s + simd_shuffle_xor(s, h);
    }
    return s;
}

// step 6: the number of positive midpoints of a candidate strictly below |u| (a tie goes
// to the index nearer zero)
template <short nmid>
static inline short tq_metal_count(float a, constant float * mid) {
    short k = 0;
    for (short j = 0; j < nmid; ++j) {
        k += a > mid[j];
    }
    return k;
}

// step 8: round to nearest even keeping fp16 subnormals (Metal's float -> half
// conversion does both), saturating instead of overflowing to infinity
static inline half tq_metal_scale_to_fp16(float scale) {
    if (scale > 65504.0f) {
        return as_type<half>((ushort) 0x7BFF);
    }
    return (half) scale;
}

// Packs the indices of a block; thread l holds lo = idx[l] and hi = idx[l + 32].
template <typename block_q>
static inline void tq_metal_pack(ushort lane, short lo, short hi, device block_q & y);

template <>
inline void tq_metal_pack<block_turbo4>(ushort lane, short lo, short hi, device block_turbo4 & y) {
    // qs[j] = idx[j] | idx[j + 32] << 4: thread j already holds both nibbles
    y.qs[lane] = (uint8_t) (lo | hi << 4);
}

// qs[j] = idx[j] | idx[j + 16] << 2 | idx[j + 32] << 4 | idx[j + 48] << 6 (low two bits of
// each index); idx[j + 16] and idx[j + 48] are on thread j + 16
template <typename block_q>
static inline void tq_metal_pack_qs2(ushort lane, short lo, short hi, device block_q & y) {
    const short lo16 = simd_shuffle_down(lo, 16);
    const short hi16 = simd_shuffle_down(hi, 16);
    if (lane < 16) {
        y.qs[lane] = (uint8_t) ((lo & 3) | (lo16 & 3) << 2 | (hi & 3) << 4 | (hi16 & 3) << 6);
    }
}

template <>
inline void tq_metal_pack<block_turbo2>(ushort lane, short lo, short hi, device block_turbo2 & y) {
    tq_metal_pack_qs2(lane, lo, hi, y);
}

template <>
inline void tq_metal_pack<block_turbo3>(ushort lane, short lo, short hi, device block_turbo3 & y) {
    tq_metal_pack_qs2(lane, lo, hi, y);
    // bit k of qh[j] is bit 2 of idx[j + 8k]: for k < 4 that is lo of thread j + 8k,
    // for k >= 4 hi of thread j + 8(k - 4); every thread shuffles, threads 0..7 store
    uint8_t h = 0;
    for (ushort k = 0; k < 4; ++k) {
        h |= (uint8_t) (((simd_shuffle(lo, lane % 8 + 8*k) >> 2) & 1) << k);
        h |= (uint8_t) (((simd_shuffle(hi, lane % 8 + 8*k) >> 2) & 1) << (k + 4));
    }
    if (lane < 8) {
        y.qh[lane] = h;
    }
}

// Quantizes x[0..63] into y with the whole simdgroup. Must be called by all 32 threads.
template <typename block_q>
static void tq_metal_quantize_block(device const float * x, device block_q & y, ushort lane) {
#pragma clang fp contract(off)
    constexpr short npos = 1 << (tq_metal_type<block_q>::bits - 1);
    constexpr short nmid = npos - 1; // N/2 centroids on each side of zero, N/2 - 1 midpoints between them

    float a = x[lane];
    float b = x[lane + 32];

    // step 1: any NaN or infinity -> quiet-NaN scale, all indices 0 (all bytes zero)
    if (simd_any(!tq_metal_is_finite(a) || !tq_metal_is_finite(b))) {
        tq_metal_pack<block_q>(lane, 0, 0, y);
        if (lane == 0) {
            y.d = as_type<half>((ushort) TQ_SCALE_NONFINITE);
        }
        return;
    }

    // steps 2-3: range conditioning, then the sum of squares (each square rounded)
    a = tq_metal_condition(a);
    b = tq_metal_condition(b);
    const float ss = tq_metal_tree_sum(a*a, b*b);

    // step 4: an all-zero block takes the index of u = 0 everywhere and scale 0
    if (ss == 0.0f) {
        const short k = npos - 1;
        tq_metal_pack<block_q>(lane, k, k, y);
        if (lane == 0) {
            y.d = (half) 0.0f;
        }
        return;
    }

    // step 5: one correctly rounded reciprocal, then one multiply per value
    const float norm = precise::sqrt(ss);
    const float inv  = precise::divide(1.0f, norm);
    const float ua = a*inv;
    const float ub = b*inv;

    // step 6: the scale search. Thread l counts x[l] and x[l + 32] against each candidate's
    // thresholds; p and cs are tree sums, so every thread holds the same score and the
    // branch below is uniform across the simdgroup.
    constant float * smid = tq_metal_type<block_q>::search_midpoints();
    constant float * cen  = tq_metal_type<block_q>::centroids();
    const float xa = fabs(a);
    const float xb = fabs(b);

    float best = 0.0f;
    float cs   = 0.0f;
    short na   = 0;
    short nb   = 0;
    for (short t = 0; t < TQ_METAL_SEARCH_STEPS; ++t) {
        const short ta = tq_metal_count<nmid>(fabs(ua), smid + t*nmid);
        const short tb = tq_metal_count<nmid>(fabs(ub), smid + t*nmid);
        const float ca = cen[npos + ta]; // |C[idx]|: the positive half of the codebook
        const float cb = cen[npos + tb];
        const float p  = tq_metal_tree_sum(xa*ca, xb*cb);
        const float tc = tq_metal_tree_sum(ca*ca, cb*cb);
        const float score = precise::divide(p, precise::sqrt(tc));
        // the first of equal scores stays
        if (t == 0 || score > best) {
            best = score;
            cs   = tc;
            na   = ta;
            nb   = tb;
        }
    }
    const short ka = ua > 0.0f ? npos + na : npos - 1 - na; // +-0 takes npos - 1
    const short kb = ub > 0.0f ? npos + nb : npos - 1 - nb;

    // step 7: norm-preserving scale from the winner's centroids
    const float scale = precise::divide(norm, precise::sqrt(cs));

    tq_metal_pack<block_q>(lane, ka, kb, y);
    if (lane == 0) {
        y.d = tq_metal_scale_to_fp16(scale);
    }
}

//
// dequantization
//

// Index i of a block (FORMAT.md section 4).
static inline short tq_metal_get_index(device const block_turbo2 * x, short i) {
    return (x->qs[i % 16] >> (2*(i / 16))) & 3;
}

static inline short tq_metal_get_index(device const block_turbo3 * x, short i) {
    return ((x->qs[i % 16] >> (2*(i / 16))) & 3) | ((x->qh[i % 8] >> (i / 8)) & 1) << 2;
}

static inline short tq_metal_get_index(device const block_turbo4 * x, short i) {
    return (x->qs[i % 32] >> (4*(i / 32))) & 15;
}

// ggml-metal's dequantize form: il = 0..3 selects values 16*il .. 16*il + 15 (get_rows,
// nl = 4). y = f32(d) * C[idx], one multiply (FORMAT.md section 6), exact in float32.
template <typename block_q, typename type4x4>
void dequantize_turbo(device const block_q * xb, short il, thread type4x4 & reg) {
    const float d = xb->d;
    constant float * cen = tq_metal_type<block_q>::centroids();

    float4x4 reg_f;
    for (short i = 0; i < 16; ++i) {
        reg_f[i/4][i%4] = d*cen[tq_metal_get_index(xb, 16*il + i)];
    }

    reg = (type4x4) reg_f;
}

// The flash-attention form: il = 0..15 selects values 4*il .. 4*il + 3 (nl = 16). As in
// the CUDA kernels the four indices sit in four consecutive bytes of each plane.
template <typename block_q, typename type4>
void dequantize_turbo_t4(device const block_q * xb, short il, thread type4 & reg) {
    const float d = xb->d;
    constant float * cen = tq_metal_type<block_q>::centroids();

    float4 reg_f;
    for (short l = 0; l < 4; ++l) {
        reg_f[l] = d*cen[tq_metal_get_index(xb, 4*il + l)];
    }

    reg = (type4) reg_f;
}

// Named per type, as the kernels' template parameters want them.
template <typename type4x4> void dequantize_turbo2(device const block_turbo2 * xb, short il, thread type4x4 & reg) { dequantize_turbo(xb, il, reg); }
template <typename type4x4> void dequantize_turbo3(device const block_turbo3 * xb, short il, thread type4x4 & reg) { dequantize_turbo(xb, il, reg); }
template <typename type4x4> void dequantize_turbo4(device const block_turbo4 * xb, short il, thread type4x4 & reg) { dequantize_turbo(xb, il, reg); }

template <typename type4> void dequantize_turbo2_t4(device const block_turbo2 * xb, short il, thread type4 & reg) { dequantize_turbo_t4(xb, il, reg); }
template <typename type4> void dequantize_turbo3_t4(device const block_turbo3 * xb, short il, thread type4 & reg) { dequantize_turbo_t4(xb, il, reg); }
template <typename type4> void dequantize_turbo4_t4(device const block_turbo4 * xb, short il, thread type4 & reg) { dequantize_turbo_t4(xb, il, reg); }
