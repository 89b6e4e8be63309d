// tq-gguf: Metal device code of the turbo KV-cache types and of the trellis-coded value types
// tcq2 and tcq3 (docs/FORMAT.md, sections 1-7 and 12).
//
// NOT COMPILED: Metal cannot be compiled on the machines this project is developed and tested
// on (no macOS, no Metal toolchain). The tcq code below was written to mirror the CUDA code in
// native/cuda/tq-tcq.cuh line by line and has never been compiled or run; expect compile
// errors on first use on a Mac.
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
// Blocks, tables and traits tq_metal_tcq<block_q> of the trellis-coded value types, generated.
#include "tq-metal-tcq.h"

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

//
// the trellis-coded value types tcq2 and tcq3 (FORMAT.md section 12), the counterpart of
// native/cuda/tq-tcq.cuh (NOT COMPILED, see the top of this file)
//

// rank of the nearest level of subset j: the midpoints strictly below v (on a midpoint, the lower)
template <typename block_q>
static inline short tq_metal_tcq_rank(short j, float v) {
    constexpr short nmid = tq_metal_tcq<block_q>::ranks - 1;
    constant float * mid = tq_metal_tcq<block_q>::midpoints() + j*nmid;
    short r = 0;
    for (short k = 0; k < nmid; ++k) {
        r += v > mid[k];
    }
    return r;
}

// the squared distance from v to the nearest level of subset j, rounded as the spec rounds it
template <typename block_q>
static inline float tq_metal_tcq_err(short j, float v) {
#pragma clang fp contract(off)
    const float d = v - tq_metal_tcq<block_q>::levels()[j + 4*tq_metal_tcq_rank<block_q>(j, v)];
    return d*d;
}

// The cost of a state no path reaches yet. The spec's +inf, as a finite stand-in because fast
// math may assume infinities away: every real cost is below 100 and e below 2, so BIG + e ==
// BIG and the comparisons come out as with +inf (BIG < BIG is false, cost < BIG true).
#define TQ_METAL_TCQ_UNREACHED 1e30f

// Quantizes x[0..63] into y with the whole simdgroup (FORMAT.md 12.5). Must be called by all
// 32 threads. Thread t*S + k runs the Viterbi of candidate t, state k (tcq2's 16 threads are
// computed twice); its decisions are the bits of lo (values 0..31) and hi (32..63).
template <typename block_q>
static void tq_metal_tcq_quantize_block(device const float * x, device block_q & y, ushort lane) {
#pragma clang fp contract(off)
    typedef tq_metal_tcq<block_q> tr;
    constexpr short S  = tr::states;
    constexpr short W  = tr::scales*S;
    constexpr short QS = tr::qs_bytes;

    float a = x[lane];
    float b = x[lane + 32];

    // step 1: any NaN or infinity -> d = 0x7E00, every other bit 0
    if (simd_any(!tq_metal_is_finite(a) || !tq_metal_is_finite(b))) {
        if (lane < QS) {
            y.qs[lane] = 0;
        }
        if (lane < 8) {
            y.qb[lane] = 0;
        }
        if (lane == 0) {
            y.d = as_type<half>((ushort) TQ_SCALE_NONFINITE);
        }
        return;
    }

    // steps 2-4: range conditioning, the sum of squares; an all-zero block is all 0
    a = tq_metal_condition(a);
    b = tq_metal_condition(b);
    const float ss = tq_metal_tree_sum(a*a, b*b);
    if (ss == 0.0f) {
        if (lane < QS) {
            y.qs[lane] = 0;
        }
        if (lane < 8) {
            y.qb[lane] = 0;
        }
        if (lane == 0) {
            y.d = as_type<half>((ushort) 0);
        }
        return;
    }

    // step 5
    const float norm = precise::sqrt(ss);
    const float inv  = precise::divide(1.0f, norm);

    // step 6: candidate t, state k on this thread; base: the first thread of its copy
    const ushort ln   = lane % W;
    const ushort base = lane - ln;
    const short  t    = ln / S;
    const short  k    = ln % S;
    const short  p0   = k >> 1;
    const short  p1   = p0 + S/2;
    const short  j0   = tr::subset()[2*p0 + (k & 1)];
    const short  j1   = tr::subset()[2*p1 + (k & 1)];
    const float  s_t  = inv*tr::inv_factors()[t];

    float cost = k == 0 ? 0.0f : TQ_METAL_TCQ_UNREACHED; // every block starts in state 0
    uint  dlo  = 0;                                      // bit i: state k after value i came from p1
    uint  dhi  = 0;                                      // bit i - 32
    for (short i = 0; i < QK_TCQ; ++i) {
        const float xi = simd_shuffle(i < 32 ? a : b, (ushort) (i % 32));
        const float v  = xi*s_t;
        const float e0 = tq_metal_tcq_err<block_q>(j0, v);
        const float e1 = tq_metal_tcq_err<block_q>(j1, v);
        const float c0 = simd_shuffle(cost, (ushort) (base + t*S + p0)) + e0;
        const float c1 = simd_shuffle(cost, (ushort) (base + t*S + p1)) + e1;
        const bool take1 = c1 < c0;                     // a tie keeps p0
        cost = take1 ? c1 : c0;
        if (i < 32) {
            dlo |= (uint) take1 << i;
        } else {
            dhi |= (uint) take1 << (i - 32);
        }
    }

    // step 7: metric[t] = cost[0] * F2[t] (on thread t*S); the first of equal metrics wins
    const float metric = cost*tr::factors_sq()[t];
    short win  = 0;
    float best = simd_shuffle(metric, (ushort) 0);
    for (short c = 1; c < tr::scales; ++c) {
        const float m = simd_shuffle(metric, (ushort) (c*S));
        if (m < best) {
            best = m;
            win  = c;
        }
    }

    // step 8: the winner's path from state 0, walked by every thread alike
    const float s_w = inv*tr::inv_factors()[win];
    short state = 0;
    uint  blo   = 0;
    uint  bhi   = 0;
    uint  qsb   = 0;
    float ca    = 0.0f;
    float cb    = 0.0f;
    for (short i = QK_TCQ - 1; i >= 0; --i) {
        const uint  d    = simd_shuffle(i < 32 ? dlo : dhi, (ushort) (win*S + state));
        const short prev = (state >> 1) | (short) ((d >> (i % 32)) & 1)*(S/2);
        const short u    = state & 1;
        const short j    = tr::subset()[2*prev + u];
        const float xi   = simd_shuffle(i < 32 ? a : b, (ushort) (i % 32));
        const short r    = tq_metal_tcq_rank<block_q>(j, xi*s_w);
        const float c    = tr::levels()[j + 4*r];
        if (i < 32) {
            blo |= (uint) u << i;
        } else {
            bhi |= (uint) u << (i - 32);
        }
        if (QS == 16) {
            qsb |= (i % 16 == lane) ? (uint) r << (2*(i / 16)) : 0u; // turbo2's arrangement
        } else {
            qsb |= (i / 8 == lane) ? (uint) r << (i % 8) : 0u;       // bit i of the plane
        }
        if (i == lane) {
            ca = c*c;
        }
        if (i == lane + 32) {
            cb = c*c;
        }
        state = prev;
    }

    // steps 9-10: the norm-preserving scale, fp16 saturating at 65504
    const float cc    = tq_metal_tree_sum(ca, cb);
    const float scale = precise::divide(norm, precise::sqrt(cc));

    if (lane < QS) {
        y.qs[lane] = (uint8_t) qsb;
    }
    if (lane < 8) {
        y.qb[lane] = (uint8_t) ((lane < 4 ? blo : bhi) >> (8*(lane % 4)));
    }
    if (lane == 0) {
        y.d = tq_metal_scale_to_fp16(scale);
    }
}

// The rank of value i (FORMAT.md 12.4).
static inline short tq_metal_tcq_rank_of(device const block_tcq2 * x, short i) {
    return (x->qs[i / 8] >> (i % 8)) & 1;
}

static inline short tq_metal_tcq_rank_of(device const block_tcq3 * x, short i) {
    return (x->qs[i % 16] >> (2*(i / 16))) & 3;
}

// The branch-bit plane as one 64-bit word (bit i: u[i]).
template <typename block_q>
static inline ulong tq_metal_tcq_branches(device const block_q * x) {
    ulong B = 0;
    for (short l = 0; l < 8; ++l) {
        B |= (ulong) x->qb[l] << (8*l);
    }
    return B;
}

// The level of value i (without the scale): FORMAT.md 12.6 through the window of branch bits
// u[i - memory] (bit 0) .. u[i] (bit memory), u[k < 0] = 0, as in CUDA's tq_cuda_tcq_level.
template <typename block_q>
static inline float tq_metal_tcq_level(device const block_q * x, ulong B, short i) {
    typedef tq_metal_tcq<block_q> tr;
    const short m = tr::memory;
    const uint  w = (uint) (i >= m ? B >> (i - m) : B << (m - i)) & ((1u << (m + 1)) - 1);
    return tr::window_levels()[w*tr::ranks + tq_metal_tcq_rank_of(x, i)];
}

// get_rows form: il = 0..3 selects values 16*il .. 16*il + 15; y = f32(d) * L[idx], one multiply.
template <typename block_q, typename type4x4>
void dequantize_tcq(device const block_q * xb, short il, thread type4x4 & reg) {
    const float d = xb->d;
    const ulong B = tq_metal_tcq_branches(xb);

    float4x4 reg_f;
    for (short i = 0; i < 16; ++i) {
        reg_f[i/4][i%4] = d*tq_metal_tcq_level(xb, B, 16*il + i);
    }

    reg = (type4x4) reg_f;
}

// flash-attention form: il = 0..15 selects values 4*il .. 4*il + 3.
template <typename block_q, typename type4>
void dequantize_tcq_t4(device const block_q * xb, short il, thread type4 & reg) {
    const float d = xb->d;
    const ulong B = tq_metal_tcq_branches(xb);

    float4 reg_f;
    for (short l = 0; l < 4; ++l) {
        reg_f[l] = d*tq_metal_tcq_level(xb, B, 4*il + l);
    }

    reg = (type4) reg_f;
}

template <typename type4x4> void dequantize_tcq2(device const block_tcq2 * xb, short il, thread type4x4 & reg) { dequantize_tcq(xb, il, reg); }
template <typename type4x4> void dequantize_tcq3(device const block_tcq3 * xb, short il, thread type4x4 & reg) { dequantize_tcq(xb, il, reg); }

template <typename type4> void dequantize_tcq2_t4(device const block_tcq2 * xb, short il, thread type4 & reg) { dequantize_tcq_t4(xb, il, reg); }
template <typename type4> void dequantize_tcq3_t4(device const block_tcq3 * xb, short il, thread type4 & reg) { dequantize_tcq_t4(xb, il, reg); }
