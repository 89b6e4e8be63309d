// tq-gguf: AVX2 and AVX-512 encoders of the trellis-coded value types (docs/FORMAT.md, section 12).
//
// A register holds one block in each lane, 8 (AVX2) or 16 (AVX-512) blocks at a time, so every
// lane does the float operations of the reference (tq-tcq.c) in the reference's order: the
// conditioning, the halving trees of the sums of squares (trees of lane-wise adds), one
// Viterbi per candidate scale with its adds, compares and selects, the traceback and the
// scale. The bytes are the reference's. The few blocks whose bytes the spec's first steps
// fix (a NaN or an infinity, or only zeros) are written by the reference itself; lanes past
// the end of a row read zeros and are not written. As in tq-quants.c, both variants are
// compiled with function target attributes (GCC, Clang) so the tests can hold each to the
// reference on any machine that runs it; the unsuffixed encoders pick the widest variant
// the build targets. Compile with -ffp-contract=off: a fused multiply-add changes the bytes.
#include "../../tq-cpu-tcq.h"

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#if !defined(GGML_CPU_GENERIC)

// TQ_USE_*: what the build targets (the entry points use it); TQ_BUILD_*: what is compiled
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define TQ_USE_AVX512 1
#else
#define TQ_USE_AVX512 0
#endif
#if defined(__AVX2__)
#define TQ_USE_AVX2 1
#else
#define TQ_USE_AVX2 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TQ_AVX2   __attribute__((target("avx2,f16c")))
#define TQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c")))
// the encoders are written once over a type's constants (states, ranks, scales) and inlined
// into one function per type, so that those loops unroll and the costs stay in registers
#define TQ_INLINE inline __attribute__((always_inline))
#define TQ_BUILD_AVX2   1
#define TQ_BUILD_AVX512 1
#else
#define TQ_AVX2
#define TQ_AVX512
#define TQ_INLINE inline
#define TQ_BUILD_AVX2   TQ_USE_AVX2
#define TQ_BUILD_AVX512 TQ_USE_AVX512
#endif

#define TQ_FP16_MAX 65504.0f // a larger scale rounds to 65504 or past it: saturate before converting

// The lanes' results, one byte per value, written into their blocks; the special blocks by the
// reference. rank and branch are [value][lane].
static void tcq_store_lanes(const struct tq_tcq_type * tp, const float * GGML_RESTRICT x, uint8_t * GGML_RESTRICT y,
                            int nb, int lanes, unsigned special, const uint16_t * d,
                            const uint8_t * rank, const uint8_t * branch) {
    for (int b = 0; b < nb; ++b) {
        uint8_t * block = y + (size_t) b*tp->block_size;
        if ((special >> b) & 1) {
            tq_tcq_quantize_block_ref(tp, x + (size_t) b*QK_TCQ, block);
            continue;
        }
        struct tq_tcq_values v;
        v.d = d[b];
        for (int i = 0; i < QK_TCQ; ++i) {
            v.rank[i]   = rank[i*lanes + b];
            v.branch[i] = branch[i*lanes + b];
        }
        tq_tcq_pack(tp, &v, block);
    }
}

//
// AVX-512: 16 blocks, one a lane
//

#if TQ_BUILD_AVX512

// The halving tree over 64 registers of lane-wise values (the array is overwritten).
TQ_AVX512 static TQ_INLINE __m512 tcq_tree_avx512(__m512 * v) {
    for (int i = 0; i < 32; ++i) {
        v[i] = _mm512_add_ps(v[i], v[i + 32]);
    }
    for (int h = 16; h >= 1; h /= 2) {
        for (int i = 0; i < h; ++i) {
            v[i] = _mm512_add_ps(v[i], v[i + h]);
        }
    }
    return v[0];
}

// Up to 16 blocks of x into y. The type's constants and tables come as arguments beside tp so
// that, inlined into each type's row function, they are constants.
TQ_AVX512 static TQ_INLINE void tcq_encode_avx512(const struct tq_tcq_type * tp, const int bits, const int memory,
                                                  const int scales, const float * levels, const float * midpoints,
                                                  const float * inv_factors, const float * factors_sq,
                                                  const uint8_t * subset, const float * GGML_RESTRICT x, int nb,
                                                  uint8_t * GGML_RESTRICT y) {
    enum { LANES = 16 };
    const int S = 1 << memory, nmid = (1 << (bits - 1)) - 1;
    const __mmask16 live = (__mmask16) ((1u << nb) - 1);
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(QK_TCQ));
    const __m512 zero = _mm512_setzero_ps();

    // steps 1-3 of each lane's block: finite?, conditioning, the sum of squares
    __m512 xt[QK_TCQ], sq[QK_TCQ];
    __mmask16 bad = 0;
    for (int i = 0; i < QK_TCQ; ++i) {
        __m512 v = _mm512_mask_i32gather_ps(zero, live, rows, x + i, 4);
        bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), zero, _CMP_NEQ_UQ); // NaN, +-Inf
        v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-TQ_TCQ_CLAMP)), _mm512_set1_ps(TQ_TCQ_CLAMP));
        v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(TQ_TCQ_FLUSH), _CMP_LT_OQ), zero);
        xt[i] = v;
        sq[i] = _mm512_mul_ps(v, v);
    }
    const __m512 ss = tcq_tree_avx512(sq);
    const __mmask16 special = bad | _mm512_cmp_ps_mask(ss, zero, _CMP_EQ_OQ);
    const __m512 norm = _mm512_sqrt_ps(ss);
    const __m512 inv  = _mm512_div_ps(_mm512_set1_ps(1.0f), norm);

    // one Viterbi per candidate; bit k of a lane of dec[t][i]: state k came from its second predecessor
    __m512i dec[TQ_TCQ_MAX_SCALES][QK_TCQ];
    __m512  best = _mm512_set1_ps(INFINITY);
    __m512i win  = _mm512_setzero_si512();
    for (int t = 0; t < scales; ++t) {
        const __m512 s = _mm512_mul_ps(inv, _mm512_set1_ps(inv_factors[t]));
        __m512 cost[TQ_TCQ_MAX_STATES];
        for (int k = 0; k < S; ++k) {
            cost[k] = _mm512_set1_ps(k == 0 ? 0.0f : INFINITY);
        }
        for (int i = 0; i < QK_TCQ; ++i) {
            const __m512 v = _mm512_mul_ps(xt[i], s);
            __m512 err[TQ_TCQ_SUBSETS];
            for (int j = 0; j < TQ_TCQ_SUBSETS; ++j) {
                // the level of the rank the midpoints give (they ascend, so the last one passed decides)
                __m512 c = _mm512_set1_ps(levels[j]);
                for (int k = 0; k < nmid; ++k) {
                    const __mmask16 above = _mm512_cmp_ps_mask(v, _mm512_set1_ps(midpoints[j*nmid + k]), _CMP_GT_OQ);
                    c = _mm512_mask_mov_ps(c, above, _mm512_set1_ps(levels[j + TQ_TCQ_SUBSETS*(k + 1)]));
                }
                const __m512 d = _mm512_sub_ps(v, c);
                err[j] = _mm512_mul_ps(d, d);
            }
            __m512  next[TQ_TCQ_MAX_STATES];
            __m512i took = _mm512_setzero_si512();
            for (int k = 0; k < S; ++k) {
                const int p0 = k >> 1, p1 = p0 | (S >> 1), b = k & 1;
                const __m512 c0 = _mm512_add_ps(cost[p0], err[subset[2*p0 + b]]);
                const __m512 c1 = _mm512_add_ps(cost[p1], err[subset[2*p1 + b]]);
                next[k] = _mm512_min_ps(c1, c0); // c1 < c0 ? c1 : c0: a tie keeps p0
                took = _mm512_mask_or_epi32(took, _mm512_cmp_ps_mask(c1, c0, _CMP_LT_OQ), took, _mm512_set1_epi32(1 << k));
            }
            for (int k = 0; k < S; ++k) {
                cost[k] = next[k];
            }
            dec[t][i] = took;
        }
        const __m512 metric = _mm512_mul_ps(cost[0], _mm512_set1_ps(factors_sq[t]));
        const __mmask16 better = _mm512_cmp_ps_mask(metric, best, _CMP_LT_OQ); // a tie keeps the earlier
        best = _mm512_mask_mov_ps(best, better, metric);
        win  = _mm512_mask_mov_epi32(win, better, _mm512_set1_epi32(t));
    }

    // each lane's winning path, traced back from state 0
    const __m512 s = _mm512_mul_ps(inv, _mm512_permutexvar_ps(win, _mm512_maskz_loadu_ps((__mmask16) ((1u << scales) - 1), inv_factors)));
    int32_t sub16[2*TQ_TCQ_MAX_STATES] = {0};
    for (int e = 0; e < 2*S; ++e) {
        sub16[e] = subset[e];
    }
    const __m512i vsubset = _mm512_loadu_si512(sub16);
    const __m512  vlevels = _mm512_maskz_loadu_ps((__mmask16) ((1u << (4*(nmid + 1))) - 1), levels);
    __m512 vmid[TQ_TCQ_MAX_RANKS - 1];
    for (int k = 0; k < nmid; ++k) {
        const float m[TQ_TCQ_SUBSETS] = { midpoints[k], midpoints[nmid + k], midpoints[2*nmid + k], midpoints[3*nmid + k] };
        vmid[k] = _mm512_castps128_ps512(_mm_loadu_ps(m)); // midpoint k of each subset, looked up by subset
    }
    const __m512i one = _mm512_set1_epi32(1);
    __m512i state = _mm512_setzero_si512();
    uint8_t rank[QK_TCQ*LANES], branch[QK_TCQ*LANES];
    __m512 c2[QK_TCQ];
    for (int i = QK_TCQ - 1; i >= 0; --i) {
        __m512i D = dec[0][i];
        for (int t = 1; t < scales; ++t) {
            D = _mm512_mask_mov_epi32(D, _mm512_cmpeq_epi32_mask(win, _mm512_set1_epi32(t)), dec[t][i]);
        }
        const __m512i from1 = _mm512_and_si512(_mm512_srlv_epi32(D, state), one);
        const __m512i prev  = _mm512_or_si512(_mm512_srli_epi32(state, 1), _mm512_slli_epi32(from1, memory - 1));
        const __m512i u = _mm512_and_si512(state, one);
        const __m512i j     = _mm512_permutexvar_epi32(_mm512_or_si512(_mm512_slli_epi32(prev, 1), u), vsubset);
        const __m512  v     = _mm512_mul_ps(xt[i], s);
        __m512i r = _mm512_setzero_si512();
        for (int k = 0; k < nmid; ++k) {
            r = _mm512_mask_add_epi32(r, _mm512_cmp_ps_mask(v, _mm512_permutexvar_ps(j, vmid[k]), _CMP_GT_OQ), r, one);
        }
        const __m512 c = _mm512_permutexvar_ps(_mm512_add_epi32(j, _mm512_slli_epi32(r, 2)), vlevels);
        c2[i] = _mm512_mul_ps(c, c);
        _mm_storeu_si128((__m128i *) (rank + i*LANES), _mm512_cvtepi32_epi8(r));
        _mm_storeu_si128((__m128i *) (branch + i*LANES), _mm512_cvtepi32_epi8(u));
        state = prev;
    }
    // the norm-preserving scale, rounded to fp16 (saturating)
    const __m512 scale = _mm512_min_ps(_mm512_div_ps(norm, _mm512_sqrt_ps(tcq_tree_avx512(c2))), _mm512_set1_ps(TQ_FP16_MAX));
    uint16_t d[LANES];
    _mm256_storeu_si256((__m256i *) d, _mm512_cvtps_ph(scale, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    tcq_store_lanes(tp, x, y, nb, LANES, special, d, rank, branch);
}

#define TQ_TCQ_AVX512_ROW(N)                                                                                 \
TQ_AVX512 static void tcq_quantize_row_tcq##N##_avx512(const float * GGML_RESTRICT x, void * GGML_RESTRICT vy, int64_t k) { \
    uint8_t * y = (uint8_t *) vy;                                                                            \
    for (int64_t b = 0; b < k/QK_TCQ; b += 16) {                                                             \
        const int nb = (int) (k/QK_TCQ - b < 16 ? k/QK_TCQ - b : 16);                                        \
        tcq_encode_avx512(&tq_tcq##N##_type, TQ_TCQ##N##_BITS, TQ_TCQ##N##_MEMORY, TQ_TCQ##N##_SCALES,       \
                          tq_tcq##N##_levels, &tq_tcq##N##_subset_midpoints[0][0], tq_tcq##N##_inv_factors,  \
                          tq_tcq##N##_factors_sq, &tq_tcq##N##_subset[0][0], x + b*QK_TCQ, nb,               \
                          y + b*(int64_t) sizeof(block_tcq##N));                                             \
    }                                                                                                        \
}

TQ_TCQ_AVX512_ROW(2)
TQ_TCQ_AVX512_ROW(3)

#endif // TQ_BUILD_AVX512

//
// AVX2: 8 blocks, one a lane
//

#if TQ_BUILD_AVX2

TQ_AVX2 static TQ_INLINE __m256 tcq_tree_avx2(__m256 * v) {
    for (int i = 0; i < 32; ++i) {
        v[i] = _mm256_add_ps(v[i], v[i + 32]);
    }
    for (int h = 16; h >= 1; h /= 2) {
        for (int i = 0; i < h; ++i) {
            v[i] = _mm256_add_ps(v[i], v[i + h]);
        }
    }
    return v[0];
}

// Up to 8 blocks of x into y, as tcq_encode_avx512.
TQ_AVX2 static TQ_INLINE void tcq_encode_avx2(const struct tq_tcq_type * tp, const int bits, const int memory,
                                              const int scales, const float * levels, const float * midpoints,
                                              const float * inv_factors, const float * factors_sq,
                                              const uint8_t * subset, const float * GGML_RESTRICT x, int nb,
                                              uint8_t * GGML_RESTRICT y) {
    enum { LANES = 8 };
    const int S = 1 << memory, nmid = (1 << (bits - 1)) - 1;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256  live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(nb), lane));
    const __m256i rows = _mm256_mullo_epi32(lane, _mm256_set1_epi32(QK_TCQ));
    const __m256  zero = _mm256_setzero_ps();
    const __m256  sign = _mm256_set1_ps(-0.0f);

    __m256 xt[QK_TCQ], sq[QK_TCQ];
    __m256 bad = zero;
    for (int i = 0; i < QK_TCQ; ++i) {
        __m256 v = _mm256_mask_i32gather_ps(zero, x + i, rows, live, 4);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(v, v), zero, _CMP_NEQ_UQ)); // NaN, +-Inf
        v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-TQ_TCQ_CLAMP)), _mm256_set1_ps(TQ_TCQ_CLAMP));
        v = _mm256_andnot_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, v), _mm256_set1_ps(TQ_TCQ_FLUSH), _CMP_LT_OQ), v);
        xt[i] = v;
        sq[i] = _mm256_mul_ps(v, v);
    }
    const __m256 ss = tcq_tree_avx2(sq);
    const unsigned special = (unsigned) _mm256_movemask_ps(_mm256_or_ps(bad, _mm256_cmp_ps(ss, zero, _CMP_EQ_OQ)));
    const __m256 norm = _mm256_sqrt_ps(ss);
    const __m256 inv  = _mm256_div_ps(_mm256_set1_ps(1.0f), norm);

    __m256i dec[TQ_TCQ_MAX_SCALES][QK_TCQ];
    __m256  best = _mm256_set1_ps(INFINITY);
    __m256i win  = _mm256_setzero_si256();
    for (int t = 0; t < scales; ++t) {
        const __m256 s = _mm256_mul_ps(inv, _mm256_set1_ps(inv_factors[t]));
        __m256 cost[TQ_TCQ_MAX_STATES];
        for (int k = 0; k < S; ++k) {
            cost[k] = _mm256_set1_ps(k == 0 ? 0.0f : INFINITY);
        }
        for (int i = 0; i < QK_TCQ; ++i) {
            const __m256 v = _mm256_mul_ps(xt[i], s);
            __m256 err[TQ_TCQ_SUBSETS];
            for (int j = 0; j < TQ_TCQ_SUBSETS; ++j) {
                __m256 c = _mm256_set1_ps(levels[j]);
                for (int k = 0; k < nmid; ++k) {
                    const __m256 above = _mm256_cmp_ps(v, _mm256_set1_ps(midpoints[j*nmid + k]), _CMP_GT_OQ);
                    c = _mm256_blendv_ps(c, _mm256_set1_ps(levels[j + TQ_TCQ_SUBSETS*(k + 1)]), above);
                }
                const __m256 d = _mm256_sub_ps(v, c);
                err[j] = _mm256_mul_ps(d, d);
            }
            __m256  next[TQ_TCQ_MAX_STATES];
            __m256i took = _mm256_setzero_si256();
            for (int k = 0; k < S; ++k) {
                const int p0 = k >> 1, p1 = p0 | (S >> 1), b = k & 1;
                const __m256 c0 = _mm256_add_ps(cost[p0], err[subset[2*p0 + b]]);
                const __m256 c1 = _mm256_add_ps(cost[p1], err[subset[2*p1 + b]]);
                next[k] = _mm256_min_ps(c1, c0); // c1 < c0 ? c1 : c0: a tie keeps p0
                const __m256i lt = _mm256_castps_si256(_mm256_cmp_ps(c1, c0, _CMP_LT_OQ));
                took = _mm256_or_si256(took, _mm256_and_si256(lt, _mm256_set1_epi32(1 << k)));
            }
            for (int k = 0; k < S; ++k) {
                cost[k] = next[k];
            }
            dec[t][i] = took;
        }
        const __m256 metric = _mm256_mul_ps(cost[0], _mm256_set1_ps(factors_sq[t]));
        const __m256 better = _mm256_cmp_ps(metric, best, _CMP_LT_OQ); // a tie keeps the earlier
        best = _mm256_blendv_ps(best, metric, better);
        win  = _mm256_blendv_epi8(win, _mm256_set1_epi32(t), _mm256_castps_si256(better));
    }

    float inv8[LANES] = {0};
    memcpy(inv8, inv_factors, sizeof(float)*scales);
    const __m256 s = _mm256_mul_ps(inv, _mm256_permutevar8x32_ps(_mm256_loadu_ps(inv8), win));
    int32_t sub16[2*TQ_TCQ_MAX_STATES] = {0};
    for (int e = 0; e < 2*S; ++e) {
        sub16[e] = subset[e];
    }
    __m256 vmid[TQ_TCQ_MAX_RANKS - 1];
    for (int k = 0; k < nmid; ++k) {
        const float m[8] = { midpoints[k], midpoints[nmid + k], midpoints[2*nmid + k], midpoints[3*nmid + k] };
        vmid[k] = _mm256_loadu_ps(m);
    }
    const __m256i one = _mm256_set1_epi32(1);
    __m256i state = _mm256_setzero_si256();
    uint8_t rank[QK_TCQ*LANES], branch[QK_TCQ*LANES];
    __m256 c2[QK_TCQ];
    for (int i = QK_TCQ - 1; i >= 0; --i) {
        __m256i D = dec[0][i];
        for (int t = 1; t < scales; ++t) {
            D = _mm256_blendv_epi8(D, dec[t][i], _mm256_cmpeq_epi32(win, _mm256_set1_epi32(t)));
        }
        const __m256i from1 = _mm256_and_si256(_mm256_srlv_epi32(D, state), one);
        const __m256i prev  = _mm256_or_si256(_mm256_srli_epi32(state, 1), _mm256_slli_epi32(from1, memory - 1));
        const __m256i u = _mm256_and_si256(state, one);
        const __m256i j     = _mm256_i32gather_epi32(sub16, _mm256_or_si256(_mm256_slli_epi32(prev, 1), u), 4);
        const __m256  v     = _mm256_mul_ps(xt[i], s);
        __m256i r = _mm256_setzero_si256();
        for (int k = 0; k < nmid; ++k) {
            const __m256 above = _mm256_cmp_ps(v, _mm256_permutevar8x32_ps(vmid[k], j), _CMP_GT_OQ);
            r = _mm256_sub_epi32(r, _mm256_castps_si256(above)); // a true compare is -1
        }
        const __m256 c = _mm256_i32gather_ps(levels, _mm256_add_epi32(j, _mm256_slli_epi32(r, 2)), 4);
        c2[i] = _mm256_mul_ps(c, c);
        int32_t rl[LANES], bl[LANES];
        _mm256_storeu_si256((__m256i *) rl, r);
        _mm256_storeu_si256((__m256i *) bl, u);
        for (int b = 0; b < LANES; ++b) {
            rank[i*LANES + b]   = (uint8_t) rl[b];
            branch[i*LANES + b] = (uint8_t) bl[b];
        }
        state = prev;
    }
    const __m256 scale = _mm256_min_ps(_mm256_div_ps(norm, _mm256_sqrt_ps(tcq_tree_avx2(c2))), _mm256_set1_ps(TQ_FP16_MAX));
    uint16_t d[LANES];
    _mm_storeu_si128((__m128i *) d, _mm256_cvtps_ph(scale, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    tcq_store_lanes(tp, x, y, nb, LANES, special, d, rank, branch);
}

#define TQ_TCQ_AVX2_ROW(N)                                                                                   \
TQ_AVX2 static void tcq_quantize_row_tcq##N##_avx2(const float * GGML_RESTRICT x, void * GGML_RESTRICT vy, int64_t k) { \
    uint8_t * y = (uint8_t *) vy;                                                                            \
    for (int64_t b = 0; b < k/QK_TCQ; b += 8) {                                                              \
        const int nb = (int) (k/QK_TCQ - b < 8 ? k/QK_TCQ - b : 8);                                          \
        tcq_encode_avx2(&tq_tcq##N##_type, TQ_TCQ##N##_BITS, TQ_TCQ##N##_MEMORY, TQ_TCQ##N##_SCALES,         \
                        tq_tcq##N##_levels, &tq_tcq##N##_subset_midpoints[0][0], tq_tcq##N##_inv_factors,    \
                        tq_tcq##N##_factors_sq, &tq_tcq##N##_subset[0][0], x + b*QK_TCQ, nb,                 \
                        y + b*(int64_t) sizeof(block_tcq##N));                                               \
    }                                                                                                        \
}

TQ_TCQ_AVX2_ROW(2)
TQ_TCQ_AVX2_ROW(3)

#endif // TQ_BUILD_AVX2


//
// Decoders. Value i's level is L[SUB[s_i][u_i] + 4 r_i], and its state s_i is the branch bits
// of values i-1 .. i-memory: all of them in the block's qb plane. So the index into the
// table SUB (flattened: 2 s + u, 16 bytes at most) has bit j equal to the branch bit of value
// i - j, one shifted copy of the plane per bit, and a byte shuffle looks every value's subset
// up at once. Each float is the reference's single product d * L[code].
//

static inline uint64_t tcq_load64(const uint8_t * p) {
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

#if TQ_BUILD_AVX512

// One block's 64 codes (subset + 4 rank), a byte each.
TQ_AVX512 static TQ_INLINE __m512i tcq_codes_avx512(const uint8_t * block, int bits, int memory, __m512i table) {
    const uint8_t * qs = block + 2;
    const uint64_t  u  = tcq_load64(qs + (bits == 3 ? 16 : 8));
    __m512i sel = _mm512_setzero_si512();
    for (int j = 0; j <= memory; ++j) {
        sel = _mm512_or_si512(sel, _mm512_maskz_set1_epi8((__mmask64) (u << j), (char) (1 << j)));
    }
    __m512i rank;
    if (bits == 3) {
        // value i's rank is bits 2*(i/16).. of qs[i % 16]: the 16 bytes in every 128-bit lane, lane l shifted by 2 l
        const __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *) qs));
        const __m512i n = _mm512_set_epi64(0x0006000600060006, 0x0006000600060006, 0x0004000400040004, 0x0004000400040004,
                                           0x0002000200020002, 0x0002000200020002, 0, 0);
        rank = _mm512_and_si512(_mm512_srlv_epi16(q, n), _mm512_set1_epi8(3));
    } else {
        rank = _mm512_maskz_set1_epi8((__mmask64) tcq_load64(qs), 1);
    }
    return _mm512_or_si512(_mm512_shuffle_epi8(table, sel), _mm512_slli_epi16(rank, 2));
}

TQ_AVX512 static TQ_INLINE void tcq_decode_avx512(const uint8_t * x, float * GGML_RESTRICT y, int64_t k, size_t block_size,
                                                  int bits, int memory, const uint8_t * subset, const float * levels) {
    // the tables straight from their arrays, masked to their sizes (zero past them): a decode step
    // calls this once per V row of one or two blocks, where copying them first cost as much as a block
    const __m512i table = _mm512_broadcast_i32x4(_mm_maskz_loadu_epi8((__mmask16) ((1u << (2 << memory)) - 1), subset));
    const __m512  L     = _mm512_maskz_loadu_ps((__mmask16) ((1u << (2 << bits)) - 1), levels);
    for (int64_t b = 0; b < k/QK_TCQ; ++b, x += block_size, y += QK_TCQ) {
        uint16_t h;
        memcpy(&h, x, sizeof(h));
        const __m512  d     = _mm512_set1_ps(_cvtsh_ss(h));
        const __m512i codes = tcq_codes_avx512(x, bits, memory, table);
        _mm512_storeu_ps(y +  0, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(codes, 0)), L), d));
        _mm512_storeu_ps(y + 16, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(codes, 1)), L), d));
        _mm512_storeu_ps(y + 32, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(codes, 2)), L), d));
        _mm512_storeu_ps(y + 48, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(codes, 3)), L), d));
    }
}

#define TQ_TCQ_AVX512_DECODE(N)                                                                              \
TQ_AVX512 static void tcq_dequantize_row_tcq##N##_avx512(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) { \
    tcq_decode_avx512((const uint8_t *) x, y, k, sizeof(block_tcq##N), TQ_TCQ##N##_BITS, TQ_TCQ##N##_MEMORY,  \
                      &tq_tcq##N##_subset[0][0], tq_tcq##N##_levels);                                        \
}

TQ_TCQ_AVX512_DECODE(2)
TQ_TCQ_AVX512_DECODE(3)

#endif // TQ_BUILD_AVX512

#if TQ_BUILD_AVX2

// byte i of the result: 0xFF where bit i of m is set
TQ_AVX2 static TQ_INLINE __m256i tcq_bit_bytes_avx2(uint32_t m) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit    = _mm256_set1_epi64x((long long) 0x8040201008040201ull);
    const __m256i v      = _mm256_shuffle_epi8(_mm256_set1_epi32((int) m), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

// The codes of values 32 h .. 32 h + 31 of a block, a byte each.
TQ_AVX2 static TQ_INLINE __m256i tcq_codes_avx2(const uint8_t * block, int h, int bits, int memory, __m256i table) {
    const uint8_t * qs = block + 2;
    const uint64_t  u  = tcq_load64(qs + (bits == 3 ? 16 : 8));
    __m256i sel = _mm256_setzero_si256();
    for (int j = 0; j <= memory; ++j) {
        sel = _mm256_or_si256(sel, _mm256_and_si256(tcq_bit_bytes_avx2((uint32_t) ((u << j) >> 32*h)), _mm256_set1_epi8((char) (1 << j))));
    }
    __m256i rank;
    if (bits == 3) {
        const __m128i q = _mm_loadu_si128((const __m128i *) qs);
        rank = _mm256_set_m128i(_mm_srl_epi16(q, _mm_cvtsi32_si128(4*h + 2)), _mm_srl_epi16(q, _mm_cvtsi32_si128(4*h)));
        rank = _mm256_and_si256(rank, _mm256_set1_epi8(3));
    } else {
        rank = _mm256_and_si256(tcq_bit_bytes_avx2((uint32_t) (tcq_load64(qs) >> 32*h)), _mm256_set1_epi8(1));
    }
    return _mm256_or_si256(_mm256_shuffle_epi8(table, sel), _mm256_slli_epi16(rank, 2));
}

// 8 codes (the low 8 bytes of c) to d * L[code]; L split in levels 0..7 and 8..15
TQ_AVX2 static TQ_INLINE __m256 tcq_levels_avx2(__m128i c, __m256 lo, __m256 hi, bool wide, __m256 d) {
    const __m256i i = _mm256_cvtepu8_epi32(c);
    __m256 v = _mm256_permutevar8x32_ps(lo, i);
    if (wide) {
        v = _mm256_blendv_ps(v, _mm256_permutevar8x32_ps(hi, i), _mm256_castsi256_ps(_mm256_slli_epi32(i, 28)));
    }
    return _mm256_mul_ps(v, d);
}

TQ_AVX2 static TQ_INLINE void tcq_decode_avx2(const uint8_t * x, float * GGML_RESTRICT y, int64_t k, size_t block_size,
                                              int bits, int memory, const uint8_t * subset, const float * levels) {
    // the tables straight from their arrays (zero past them), as in the AVX-512 decoder
    const bool    wide  = (2 << bits) > 8;
    const __m128i sub   = (2 << memory) > 8 ? _mm_loadu_si128((const __m128i *) subset)
                                            : _mm_loadl_epi64((const __m128i *) subset);
    const __m256i table = _mm256_broadcastsi128_si256(sub);
    const __m256  lo    = _mm256_loadu_ps(levels);
    const __m256  hi    = wide ? _mm256_loadu_ps(levels + 8) : _mm256_setzero_ps();
    for (int64_t b = 0; b < k/QK_TCQ; ++b, x += block_size, y += QK_TCQ) {
        uint16_t h16;
        memcpy(&h16, x, sizeof(h16));
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(h16));
        for (int h = 0; h < 2; ++h) {
            const __m256i codes = tcq_codes_avx2(x, h, bits, memory, table);
            const __m128i c0 = _mm256_castsi256_si128(codes);
            const __m128i c1 = _mm256_extracti128_si256(codes, 1);
            float * yh = y + 32*h;
            _mm256_storeu_ps(yh +  0, tcq_levels_avx2(c0, lo, hi, wide, d));
            _mm256_storeu_ps(yh +  8, tcq_levels_avx2(_mm_srli_si128(c0, 8), lo, hi, wide, d));
            _mm256_storeu_ps(yh + 16, tcq_levels_avx2(c1, lo, hi, wide, d));
            _mm256_storeu_ps(yh + 24, tcq_levels_avx2(_mm_srli_si128(c1, 8), lo, hi, wide, d));
        }
    }
}

#define TQ_TCQ_AVX2_DECODE(N)                                                                                \
TQ_AVX2 static void tcq_dequantize_row_tcq##N##_avx2(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) { \
    tcq_decode_avx2((const uint8_t *) x, y, k, sizeof(block_tcq##N), TQ_TCQ##N##_BITS, TQ_TCQ##N##_MEMORY,    \
                    &tq_tcq##N##_subset[0][0], tq_tcq##N##_levels);                                          \
}

TQ_TCQ_AVX2_DECODE(2)
TQ_TCQ_AVX2_DECODE(3)

#endif // TQ_BUILD_AVX2

//
// ggml entry points: the widest variant the build targets
//

#if TQ_USE_AVX512
// A row of at most 8 blocks (a decode step's V row: a few KV heads of one token) fills the lanes
// of an AVX2 register better than an AVX-512 one's. The bytes are the same; a 3-block row takes
// about a quarter less time (3.6 against 4.8 us for tcq3 on the development VM).
#define TQ_TCQ_AVX2_MAX_BLOCKS 8
#define TQ_TCQ_DISPATCH(N) (k/QK_TCQ <= TQ_TCQ_AVX2_MAX_BLOCKS ? tcq_quantize_row_tcq##N##_avx2(x, y, k) \
                                                            : tcq_quantize_row_tcq##N##_avx512(x, y, k))
#elif TQ_USE_AVX2
#define TQ_TCQ_DISPATCH(N) tcq_quantize_row_tcq##N##_avx2(x, y, k)
#else
#define TQ_TCQ_DISPATCH(N) quantize_row_tcq##N##_generic(x, y, k)
#endif

void quantize_row_tcq2(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) { TQ_TCQ_DISPATCH(2); }
void quantize_row_tcq3(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) { TQ_TCQ_DISPATCH(3); }

#if TQ_USE_AVX512
#define TQ_TCQ_DECODE_DISPATCH(N) tcq_dequantize_row_tcq##N##_avx512(x, y, k)
#elif TQ_USE_AVX2
#define TQ_TCQ_DECODE_DISPATCH(N) tcq_dequantize_row_tcq##N##_avx2(x, y, k)
#else
#define TQ_TCQ_DECODE_DISPATCH(N) dequantize_row_tcq##N##_cpu_generic(x, y, k)
#endif

void dequantize_row_tcq2_cpu(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) { TQ_TCQ_DECODE_DISPATCH(2); }
void dequantize_row_tcq3_cpu(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) { TQ_TCQ_DECODE_DISPATCH(3); }

//
// variants for the tests
//

static bool tcq_cpu_runs(int variant) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_cpu_init();
    switch (variant) {
        case 1:  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
        case 2:  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl");
        default: return false;
    }
#else
    return (variant == 1 && TQ_USE_AVX2) || (variant == 2 && TQ_USE_AVX512);
#endif
}

tq_tcq_quantize_row_t tq_tcq_cpu_arch_quantize_row(int bits, int variant) {
    if (!tcq_cpu_runs(variant)) {
        return NULL;
    }
#if TQ_BUILD_AVX512
    if (variant == 2) {
        return bits == 2 ? tcq_quantize_row_tcq2_avx512 : tcq_quantize_row_tcq3_avx512;
    }
#endif
#if TQ_BUILD_AVX2
    if (variant == 1) {
        return bits == 2 ? tcq_quantize_row_tcq2_avx2 : tcq_quantize_row_tcq3_avx2;
    }
#endif
    (void) bits;
    return NULL;
}

tq_tcq_dequantize_row_t tq_tcq_cpu_arch_dequantize_row(int bits, int variant) {
    if (!tcq_cpu_runs(variant)) {
        return NULL;
    }
#if TQ_BUILD_AVX512
    if (variant == 2) {
        return bits == 2 ? tcq_dequantize_row_tcq2_avx512 : tcq_dequantize_row_tcq3_avx512;
    }
#endif
#if TQ_BUILD_AVX2
    if (variant == 1) {
        return bits == 2 ? tcq_dequantize_row_tcq2_avx2 : tcq_dequantize_row_tcq3_avx2;
    }
#endif
    (void) bits;
    return NULL;
}

#endif // !GGML_CPU_GENERIC
