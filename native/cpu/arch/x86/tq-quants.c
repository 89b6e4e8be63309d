// tq-gguf: AVX2 and AVX-512 kernels of the turbo types.
//
// Every kernel reproduces the generic one exactly: the same comparisons against
// the same float32 midpoints, the same halving-tree sums (vector halves added
// in the spec's order), one multiply per dequantized value. With GCC and Clang
// both variants are compiled (function target attributes) so the tests can hold
// each against the generic kernels on any machine that runs it; the unsuffixed
// kernels pick the widest variant the build targets.
#include "tq/cpu/tq-cpu-quants.h"

#include "ggml-impl.h"

#include <assert.h>
#include <immintrin.h>
#include <math.h>
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
#define TQ_BUILD_AVX2   1
#define TQ_BUILD_AVX512 1
#else
#define TQ_AVX2
#define TQ_AVX512
#define TQ_BUILD_AVX2   TQ_USE_AVX2
#define TQ_BUILD_AVX512 TQ_USE_AVX512
#endif

//
// packing 64 one-byte indices (SSE2, the x86-64 baseline; both variants use it)
//

static inline void tq_pack_block(enum ggml_type type, const uint8_t * idx, void * block) {
    const __m128i q0 = _mm_loadu_si128((const __m128i *) (idx +  0));
    const __m128i q1 = _mm_loadu_si128((const __m128i *) (idx + 16));
    const __m128i q2 = _mm_loadu_si128((const __m128i *) (idx + 32));
    const __m128i q3 = _mm_loadu_si128((const __m128i *) (idx + 48));
    switch (type) {
        case GGML_TYPE_TURBO4: {
            // byte j: index j in the low nibble, index j + 32 in the high one
            block_turbo4 * y = (block_turbo4 *) block;
            _mm_storeu_si128((__m128i *) (y->qs +  0), _mm_or_si128(q0, _mm_slli_epi16(q2, 4)));
            _mm_storeu_si128((__m128i *) (y->qs + 16), _mm_or_si128(q1, _mm_slli_epi16(q3, 4)));
        } break;
        case GGML_TYPE_TURBO2:
        case GGML_TYPE_TURBO3: {
            // byte j: indices j, j + 16, j + 32, j + 48 in bit pairs 0-1, 2-3, 4-5, 6-7
            const __m128i m3 = _mm_set1_epi8(3);
            __m128i qs = _mm_and_si128(q0, m3);
            qs = _mm_or_si128(qs, _mm_slli_epi16(_mm_and_si128(q1, m3), 2));
            qs = _mm_or_si128(qs, _mm_slli_epi16(_mm_and_si128(q2, m3), 4));
            qs = _mm_or_si128(qs, _mm_slli_epi16(_mm_and_si128(q3, m3), 6));
            if (type == GGML_TYPE_TURBO2) {
                _mm_storeu_si128((__m128i *) ((block_turbo2 *) block)->qs, qs);
                break;
            }
            block_turbo3 * y = (block_turbo3 *) block;
            _mm_storeu_si128((__m128i *) y->qs, qs);
            // high bits, 8 at a time as bytes of a 64-bit word: qh[j] bit r = bit 2 of index j + 8r
            uint64_t qh = 0;
            for (int r = 0; r < 8; ++r) {
                uint64_t g;
                memcpy(&g, idx + 8*r, 8);
                qh |= ((g >> 2) & UINT64_C(0x0101010101010101)) << r;
            }
            memcpy(y->qh, &qh, 8);
        } break;
        default:
            GGML_ABORT("not a turbo type");
    }
}

static inline int tq_bits(enum ggml_type type) {
    return 2 + (int) (type - GGML_TYPE_TURBO2);
}

static inline size_t tq_block_size(enum ggml_type type) {
    return type == GGML_TYPE_TURBO2 ? sizeof(block_turbo2) : type == GGML_TYPE_TURBO3 ? sizeof(block_turbo3) : sizeof(block_turbo4);
}

static inline ggml_half tq_block_d(const void * block) {
    ggml_half d;
    memcpy(&d, block, sizeof(d)); // d is the first member of every turbo block
    return d;
}

static inline void tq_set_block_d(void * block, ggml_half d) {
    memcpy(block, &d, sizeof(d));
}

#if TQ_BUILD_AVX2
// Step 6's choice for all candidates at once: score = p / sqrt(cs) with one vector sqrt and
// one vector division (IEEE, so equal to the scalar ones), then the first highest score.
// Branch-free, so that the candidates' work overlaps instead of waiting on a division.
static_assert(TQ_SEARCH_STEPS == 8, "the choice below holds one score per lane of a __m256");
TQ_AVX2 static inline int tq_search_pick(const float p[TQ_SEARCH_STEPS], const float cs[TQ_SEARCH_STEPS]) {
    const __m256 score = _mm256_div_ps(_mm256_loadu_ps(p), _mm256_sqrt_ps(_mm256_loadu_ps(cs)));
    __m256 m = _mm256_max_ps(score, _mm256_permute2f128_ps(score, score, 1));
    m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
    const int top = _mm256_movemask_ps(_mm256_cmp_ps(score, m, _CMP_EQ_OQ));
    int t = 0;
    while (!((top >> t) & 1)) {
        ++t;
    }
    return t;
}

#endif

//
// AVX-512: a block is 4 vectors of 16
//

#if TQ_BUILD_AVX512

TQ_AVX512 static inline float tq_tree8_avx(__m256 a) {
    const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1)); // i + 4
    const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));                                  // i + 2
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));                         // i + 1
}

// halving tree over v0..v3 = elements 0-15, 16-31, 32-47, 48-63
TQ_AVX512 static inline float tq_tree64_avx512(__m512 v0, __m512 v1, __m512 v2, __m512 v3) {
    const __m512 t = _mm512_add_ps(_mm512_add_ps(v0, v2), _mm512_add_ps(v1, v3)); // i + 32, then i + 16
    const __m256 lo = _mm512_castps512_ps256(t);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1));
    return tq_tree8_avx(_mm256_add_ps(lo, hi));                                    // i + 8, ...
}

// the 16 index vectors of a packed block, lanes = elements 16g .. 16g + 15
TQ_AVX512 static inline void tq_unpack_avx512(enum ggml_type type, const void * block, __m512i k[4]) {
    switch (type) {
        case GGML_TYPE_TURBO4: {
            const block_turbo4 * x = (const block_turbo4 *) block;
            const __m512i lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) (x->qs +  0)));
            const __m512i hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) (x->qs + 16)));
            const __m512i m15 = _mm512_set1_epi32(15);
            k[0] = _mm512_and_si512(lo, m15);
            k[1] = _mm512_and_si512(hi, m15);
            k[2] = _mm512_srli_epi32(lo, 4);
            k[3] = _mm512_srli_epi32(hi, 4);
        } break;
        case GGML_TYPE_TURBO2:
        case GGML_TYPE_TURBO3: {
            const uint8_t * qs = type == GGML_TYPE_TURBO2 ? ((const block_turbo2 *) block)->qs : ((const block_turbo3 *) block)->qs;
            const __m512i v  = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) qs));
            const __m512i m3 = _mm512_set1_epi32(3);
            for (int g = 0; g < 4; ++g) {
                k[g] = _mm512_and_si512(_mm512_srli_epi32(v, 2*g), m3);
            }
            if (type == GGML_TYPE_TURBO3) {
                // element i = 16g + l takes bit i / 8 = 2g + (l >= 8) of qh[l % 8]
                uint64_t qh;
                memcpy(&qh, ((const block_turbo3 *) block)->qh, 8);
                const __m512i h   = _mm512_cvtepu8_epi32(_mm_set1_epi64x((long long) qh));
                const __m512i one = _mm512_set1_epi32(1);
                for (int g = 0; g < 4; ++g) {
                    const __m512i sh = _mm512_set_epi32(2*g + 1, 2*g + 1, 2*g + 1, 2*g + 1, 2*g + 1, 2*g + 1, 2*g + 1, 2*g + 1,
                                                        2*g, 2*g, 2*g, 2*g, 2*g, 2*g, 2*g, 2*g);
                    const __m512i bit = _mm512_and_si512(_mm512_srlv_epi32(h, sh), one);
                    k[g] = _mm512_or_si512(k[g], _mm512_slli_epi32(bit, 2));
                }
            }
        } break;
        default:
            GGML_ABORT("not a turbo type");
    }
}

TQ_AVX512 static void tq_quantize_row_avx512(enum ggml_type type, const float * GGML_RESTRICT x, void * GGML_RESTRICT vy, int64_t k) {
    const struct tq_codebook * cb = tq_codebook_for(type);
    const int half = 1 << (tq_bits(type) - 1);
    // the positive half of the codebook: |C[idx]| for a count of positive midpoints passed
    const __m512 cpos = _mm512_maskz_loadu_ps((__mmask16) ((1u << half) - 1), cb->centroids + half);
    __m512 thr[TQ_SEARCH_STEPS]; // each candidate's half - 1 positive midpoints, ascending
    for (int t = 0; t < TQ_SEARCH_STEPS; ++t) {
        thr[t] = _mm512_maskz_loadu_ps((__mmask16) ((1u << (half - 1)) - 1), cb->search_midpoints + t*(half - 1));
    }
    const size_t bsize = tq_block_size(type);
    char * y = (char *) vy;
    uint8_t idx[QK_TURBO];

    for (int64_t b = 0; b < k/QK_TURBO; ++b, x += QK_TURBO, y += bsize) {
        __m512 v[4];
        __mmask16 bad = 0;
        for (int g = 0; g < 4; ++g) {
            v[g] = _mm512_loadu_ps(x + 16*g);
            bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(v[g], v[g]), _mm512_setzero_ps(), _CMP_NEQ_UQ); // NaN, +-Inf
            // range conditioning (min/max see no NaN: those blocks are handled below)
            v[g] = _mm512_min_ps(_mm512_max_ps(v[g], _mm512_set1_ps(-TQ_CLAMP)), _mm512_set1_ps(TQ_CLAMP));
            const __mmask16 tiny = _mm512_cmp_ps_mask(_mm512_abs_ps(v[g]), _mm512_set1_ps(TQ_FLUSH), _CMP_LT_OQ);
            v[g] = _mm512_mask_mov_ps(v[g], tiny, _mm512_setzero_ps());
        }
        if (bad) {
            // rare: the reference defines these bytes, so let it write them
            tq_set_block_d(y, tq_quantize_block_ref(x, idx, cb));
            tq_pack_block(type, idx, y);
            continue;
        }
        const float sumsq = tq_tree64_avx512(_mm512_mul_ps(v[0], v[0]), _mm512_mul_ps(v[1], v[1]),
                                             _mm512_mul_ps(v[2], v[2]), _mm512_mul_ps(v[3], v[3]));
        if (sumsq == 0.0f) {
            tq_set_block_d(y, tq_quantize_block_ref(x, idx, cb));
            tq_pack_block(type, idx, y);
            continue;
        }
        const float norm = sqrtf(sumsq);
        const __m512 inv = _mm512_set1_ps(1.0f/norm);
        __m512 a[4], ax[4];
        __mmask16 pos[4];
        for (int g = 0; g < 4; ++g) {
            const __m512 u = _mm512_mul_ps(v[g], inv);
            pos[g] = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_GT_OQ);
            a[g]   = _mm512_abs_ps(u);
            ax[g]  = _mm512_abs_ps(v[g]);
        }
        // step 6: every candidate scale, then the first best (see tq_search_ref)
        __m512i cnts[TQ_SEARCH_STEPS][4];
        float ps[TQ_SEARCH_STEPS], css[TQ_SEARCH_STEPS];
        for (int t = 0; t < TQ_SEARCH_STEPS; ++t) {
            __m512i * cnt = cnts[t];
            __m512 p[4], c2[4];
            for (int g = 0; g < 4; ++g) {
                // cnt of step 6 by binary search (the rows ascend strictly, so it equals the count)
                cnt[g] = _mm512_setzero_si512();
                for (int step = half/2; step >= 1; step /= 2) {
                    const __m512 m = _mm512_permutexvar_ps(_mm512_add_epi32(cnt[g], _mm512_set1_epi32(step - 1)), thr[t]);
                    const __mmask16 gt = _mm512_cmp_ps_mask(a[g], m, _CMP_GT_OQ);
                    cnt[g] = _mm512_mask_add_epi32(cnt[g], gt, cnt[g], _mm512_set1_epi32(step));
                }
                const __m512 c = _mm512_permutexvar_ps(cnt[g], cpos);
                p[g]  = _mm512_mul_ps(ax[g], c);
                c2[g] = _mm512_mul_ps(c, c);
            }
            css[t] = tq_tree64_avx512(c2[0], c2[1], c2[2], c2[3]);
            ps[t]  = tq_tree64_avx512(p[0], p[1], p[2], p[3]);
        }
        const int t_best = tq_search_pick(ps, css);
        const __m512i * best = cnts[t_best];
        for (int g = 0; g < 4; ++g) {
            // index from the count and the sign: half + cnt above zero, half - 1 - cnt otherwise
            const __m512i up   = _mm512_add_epi32(_mm512_set1_epi32(half), best[g]);
            const __m512i down = _mm512_sub_epi32(_mm512_set1_epi32(half - 1), best[g]);
            _mm_storeu_si128((__m128i *) (idx + 16*g), _mm512_cvtepi32_epi8(_mm512_mask_mov_epi32(down, pos[g], up)));
        }
        tq_set_block_d(y, tq_scale_to_fp16(norm/sqrtf(css[t_best])));
        tq_pack_block(type, idx, y);
    }
}

TQ_AVX512 static void tq_dequantize_row_avx512(enum ggml_type type, const void * GGML_RESTRICT vx, float * GGML_RESTRICT y, int64_t k) {
    const struct tq_codebook * cb = tq_codebook_for(type);
    const __m512 cbv = _mm512_maskz_loadu_ps((__mmask16) ((1u << (1 << tq_bits(type))) - 1), cb->centroids);
    const size_t bsize = tq_block_size(type);
    const char * x = (const char *) vx;
    for (int64_t b = 0; b < k/QK_TURBO; ++b, x += bsize, y += QK_TURBO) {
        const __m512 d = _mm512_set1_ps(GGML_FP16_TO_FP32(tq_block_d(x)));
        __m512i kk[4];
        tq_unpack_avx512(type, x, kk);
        for (int g = 0; g < 4; ++g) {
            _mm512_storeu_ps(y + 16*g, _mm512_mul_ps(d, _mm512_permutexvar_ps(kk[g], cbv)));
        }
    }
}

TQ_AVX512 static float tq_vec_dot_avx512(enum ggml_type type, int n, const void * GGML_RESTRICT vx, const float * GGML_RESTRICT q) {
    const struct tq_codebook * cb = tq_codebook_for(type);
    const __m512 cbv = _mm512_maskz_loadu_ps((__mmask16) ((1u << (1 << tq_bits(type))) - 1), cb->centroids);
    const size_t bsize = tq_block_size(type);
    const char * x = (const char *) vx;
    float sum = 0.0f;
    for (int b = 0; b < n/QK_TURBO; ++b, x += bsize, q += QK_TURBO) {
        __m512i kk[4];
        tq_unpack_avx512(type, x, kk);
        __m512 p[4];
        for (int g = 0; g < 4; ++g) {
            p[g] = _mm512_mul_ps(_mm512_permutexvar_ps(kk[g], cbv), _mm512_loadu_ps(q + 16*g));
        }
        sum += GGML_FP16_TO_FP32(tq_block_d(x))*tq_tree64_avx512(p[0], p[1], p[2], p[3]);
    }
    return sum;
}

#endif // TQ_BUILD_AVX512

//
// AVX2: a block is 8 vectors of 8
//

#if TQ_BUILD_AVX2

TQ_AVX2 static inline float tq_tree8_avx2(__m256 a) {
    const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

// halving tree over w[r] = elements 8r .. 8r + 7
TQ_AVX2 static inline float tq_tree64_avx2(const __m256 w[8]) {
    __m256 a[4];
    for (int r = 0; r < 4; ++r) {
        a[r] = _mm256_add_ps(w[r], w[r + 4]);                                   // i + 32
    }
    const __m256 b0 = _mm256_add_ps(a[0], a[2]);                               // i + 16
    const __m256 b1 = _mm256_add_ps(a[1], a[3]);
    return tq_tree8_avx2(_mm256_add_ps(b0, b1));                                // i + 8, ...
}

// centroid lookup for indices 0..15: two 8-entry permutes and a blend
TQ_AVX2 static inline __m256 tq_lookup_avx2(__m256i k, __m256 lo, __m256 hi) {
    const __m256 a = _mm256_permutevar8x32_ps(lo, k);
    const __m256 b = _mm256_permutevar8x32_ps(hi, k);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_cmpgt_epi32(k, _mm256_set1_epi32(7))));
}

// the same for a codebook of at most 8 centroids (turbo2, turbo3): one permute
TQ_AVX2 static inline __m256 tq_lookup8_avx2(enum ggml_type type, __m256i k, __m256 lo, __m256 hi) {
    return type == GGML_TYPE_TURBO4 ? tq_lookup_avx2(k, lo, hi) : _mm256_permutevar8x32_ps(lo, k);
}

// indices of elements 8r .. 8r + 7
TQ_AVX2 static inline __m256i tq_unpack8_avx2(enum ggml_type type, const void * block, int r) {
    switch (type) {
        case GGML_TYPE_TURBO4: {
            const block_turbo4 * x = (const block_turbo4 *) block;
            const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) (x->qs + 8*(r % 4))));
            return _mm256_and_si256(_mm256_srli_epi32(v, 4*(r / 4)), _mm256_set1_epi32(15));
        }
        case GGML_TYPE_TURBO2:
        case GGML_TYPE_TURBO3: {
            const uint8_t * qs = type == GGML_TYPE_TURBO2 ? ((const block_turbo2 *) block)->qs : ((const block_turbo3 *) block)->qs;
            const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) (qs + 8*(r % 2))));
            __m256i kk = _mm256_and_si256(_mm256_srli_epi32(v, 2*(r / 2)), _mm256_set1_epi32(3));
            if (type == GGML_TYPE_TURBO3) {
                const __m256i h = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) ((const block_turbo3 *) block)->qh));
                const __m256i bit = _mm256_and_si256(_mm256_srli_epi32(h, r), _mm256_set1_epi32(1));
                kk = _mm256_or_si256(kk, _mm256_slli_epi32(bit, 2));
            }
            return kk;
        }
        default:
            GGML_ABORT("not a turbo type");
    }
}

// 8 int32 lanes (each < 256) -> 8 bytes
TQ_AVX2 static inline void tq_store8_epi8(uint8_t * dst, __m256i k) {
    const __m256i shuf = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(k, shuf), _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    _mm_storel_epi64((__m128i *) dst, _mm256_castsi256_si128(b));
}

TQ_AVX2 static void tq_quantize_row_avx2(enum ggml_type type, const float * GGML_RESTRICT x, void * GGML_RESTRICT vy, int64_t k) {
    const struct tq_codebook * cb = tq_codebook_for(type);
    const int half = 1 << (tq_bits(type) - 1);
    // the positive half of the codebook (at most 8 centroids: one permute): |C[idx]| for a count
    float cpad[8] = {0};
    memcpy(cpad, cb->centroids + half, sizeof(float)*half);
    const __m256 cpos = _mm256_loadu_ps(cpad);
    __m256 thr[TQ_SEARCH_STEPS]; // each candidate's half - 1 positive midpoints, ascending
    for (int t = 0; t < TQ_SEARCH_STEPS; ++t) {
        float tpad[8] = {0};
        memcpy(tpad, cb->search_midpoints + t*(half - 1), sizeof(float)*(half - 1));
        thr[t] = _mm256_loadu_ps(tpad);
    }
    const size_t bsize = tq_block_size(type);
    char * y = (char *) vy;
    uint8_t idx[QK_TURBO];

    for (int64_t b = 0; b < k/QK_TURBO; ++b, x += QK_TURBO, y += bsize) {
        __m256 v[8], sq[8];
        int bad = 0;
        const __m256 sign = _mm256_set1_ps(-0.0f);
        for (int r = 0; r < 8; ++r) {
            v[r] = _mm256_loadu_ps(x + 8*r);
            const __m256 z = _mm256_sub_ps(v[r], v[r]);
            bad |= _mm256_movemask_ps(_mm256_cmp_ps(z, z, _CMP_UNORD_Q));
            v[r] = _mm256_min_ps(_mm256_max_ps(v[r], _mm256_set1_ps(-TQ_CLAMP)), _mm256_set1_ps(TQ_CLAMP));
            const __m256 tiny = _mm256_cmp_ps(_mm256_andnot_ps(sign, v[r]), _mm256_set1_ps(TQ_FLUSH), _CMP_LT_OQ);
            v[r] = _mm256_andnot_ps(tiny, v[r]);
            sq[r] = _mm256_mul_ps(v[r], v[r]);
        }
        const float sumsq = bad ? 0.0f : tq_tree64_avx2(sq);
        if (bad || sumsq == 0.0f) {
            tq_set_block_d(y, tq_quantize_block_ref(x, idx, cb));
            tq_pack_block(type, idx, y);
            continue;
        }
        const float norm = sqrtf(sumsq);
        const __m256 inv = _mm256_set1_ps(1.0f/norm);
        __m256 a[8], ax[8], pos[8];
        for (int r = 0; r < 8; ++r) {
            const __m256 u = _mm256_mul_ps(v[r], inv);
            pos[r] = _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_GT_OQ);
            a[r]   = _mm256_andnot_ps(sign, u);
            ax[r]  = _mm256_andnot_ps(sign, v[r]);
        }
        // step 6: every candidate scale, then the first best (see tq_search_ref)
        __m256i cnts[TQ_SEARCH_STEPS][8];
        float ps[TQ_SEARCH_STEPS], css[TQ_SEARCH_STEPS];
        for (int t = 0; t < TQ_SEARCH_STEPS; ++t) {
            __m256i * cnt = cnts[t];
            __m256 p[8], c2[8];
            for (int r = 0; r < 8; ++r) {
                // cnt of step 6 by binary search (the rows ascend strictly, so it equals the count):
                // 3 compares for turbo4's 7 thresholds instead of 7
                cnt[r] = _mm256_setzero_si256();
                for (int step = half/2; step >= 1; step /= 2) {
                    const __m256 m  = _mm256_permutevar8x32_ps(thr[t], _mm256_add_epi32(cnt[r], _mm256_set1_epi32(step - 1)));
                    const __m256 gt = _mm256_cmp_ps(a[r], m, _CMP_GT_OQ);
                    cnt[r] = _mm256_add_epi32(cnt[r], _mm256_and_si256(_mm256_castps_si256(gt), _mm256_set1_epi32(step)));
                }
                const __m256 c = _mm256_permutevar8x32_ps(cpos, cnt[r]);
                p[r]  = _mm256_mul_ps(ax[r], c);
                c2[r] = _mm256_mul_ps(c, c);
            }
            css[t] = tq_tree64_avx2(c2);
            ps[t]  = tq_tree64_avx2(p);
        }
        const int t_best = tq_search_pick(ps, css);
        const __m256i * best = cnts[t_best];
        for (int r = 0; r < 8; ++r) {
            // index from the count and the sign: half + cnt above zero, half - 1 - cnt otherwise
            const __m256i up   = _mm256_add_epi32(_mm256_set1_epi32(half), best[r]);
            const __m256i down = _mm256_sub_epi32(_mm256_set1_epi32(half - 1), best[r]);
            tq_store8_epi8(idx + 8*r, _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(down), _mm256_castsi256_ps(up), pos[r])));
        }
        tq_set_block_d(y, tq_scale_to_fp16(norm/sqrtf(css[t_best])));
        tq_pack_block(type, idx, y);
    }
}

TQ_AVX2 static void tq_dequantize_row_avx2(enum ggml_type type, const void * GGML_RESTRICT vx, float * GGML_RESTRICT y, int64_t k) {
    const struct tq_codebook * cb = tq_codebook_for(type);
    float cpad[16] = {0};
    memcpy(cpad, cb->centroids, sizeof(float) << tq_bits(type));
    const __m256 cb_lo = _mm256_loadu_ps(cpad), cb_hi = _mm256_loadu_ps(cpad + 8);
    const size_t bsize = tq_block_size(type);
    const char * x = (const char *) vx;
    for (int64_t b = 0; b < k/QK_TURBO; ++b, x += bsize, y += QK_TURBO) {
        const __m256 d = _mm256_set1_ps(GGML_FP16_TO_FP32(tq_block_d(x)));
        for (int r = 0; r < 8; ++r) {
            _mm256_storeu_ps(y + 8*r, _mm256_mul_ps(d, tq_lookup8_avx2(type, tq_unpack8_avx2(type, x, r), cb_lo, cb_hi)));
        }
    }
}

TQ_AVX2 static float tq_vec_dot_avx2(enum ggml_type type, int n, const void * GGML_RESTRICT vx, const float * GGML_RESTRICT q) {
    const struct tq_codebook * cb = tq_codebook_for(type);
    float cpad[16] = {0};
    memcpy(cpad, cb->centroids, sizeof(float) << tq_bits(type));
    const __m256 cb_lo = _mm256_loadu_ps(cpad), cb_hi = _mm256_loadu_ps(cpad + 8);
    const size_t bsize = tq_block_size(type);
    const char * x = (const char *) vx;
    float sum = 0.0f;
    for (int b = 0; b < n/QK_TURBO; ++b, x += bsize, q += QK_TURBO) {
        __m256 p[8];
        for (int r = 0; r < 8; ++r) {
            p[r] = _mm256_mul_ps(tq_lookup8_avx2(type, tq_unpack8_avx2(type, x, r), cb_lo, cb_hi), _mm256_loadu_ps(q + 8*r));
        }
        sum += GGML_FP16_TO_FP32(tq_block_d(x))*tq_tree64_avx2(p);
    }
    return sum;
}

#endif // TQ_BUILD_AVX2

//
// ggml entry points: the widest variant the build targets
//

#define TQ_ENTRY_POINTS(N)                                                                                  \
void quantize_row_turbo##N(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {              \
    TQ_DISPATCH(tq_quantize_row_avx512(GGML_TYPE_TURBO##N, x, y, k),                                        \
                tq_quantize_row_avx2(GGML_TYPE_TURBO##N, x, y, k),                                          \
                quantize_row_turbo##N##_generic(x, y, k));                                                  \
}                                                                                                           \
void dequantize_row_turbo##N##_cpu(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) {     \
    TQ_DISPATCH(tq_dequantize_row_avx512(GGML_TYPE_TURBO##N, x, y, k),                                      \
                tq_dequantize_row_avx2(GGML_TYPE_TURBO##N, x, y, k),                                        \
                dequantize_row_turbo##N##_cpu_generic(x, y, k));                                            \
}                                                                                                           \
void ggml_vec_dot_turbo##N##_f32(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx,  \
                                  size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) {          \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                                    \
    TQ_DISPATCH(*s = tq_vec_dot_avx512(GGML_TYPE_TURBO##N, n, vx, (const float *) vy),                      \
                *s = tq_vec_dot_avx2(GGML_TYPE_TURBO##N, n, vx, (const float *) vy),                        \
                ggml_vec_dot_turbo##N##_f32_generic(n, s, bs, vx, bx, vy, by, nrc));                        \
}

#if TQ_USE_AVX512
#define TQ_DISPATCH(avx512, avx2, generic) avx512
#elif TQ_USE_AVX2
#define TQ_DISPATCH(avx512, avx2, generic) avx2
#else
#define TQ_DISPATCH(avx512, avx2, generic) generic
#endif

TQ_ENTRY_POINTS(2)
TQ_ENTRY_POINTS(3)
TQ_ENTRY_POINTS(4)

//
// variants for the tests
//

#define TQ_VARIANT_KERNELS(V, N)                                                                            \
static void tq_q##N##_##V(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) { tq_quantize_row_##V(GGML_TYPE_TURBO##N, x, y, k); } \
static void tq_d##N##_##V(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) { tq_dequantize_row_##V(GGML_TYPE_TURBO##N, x, y, k); } \
static void tq_v##N##_##V(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) { \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                                    \
    *s = tq_vec_dot_##V(GGML_TYPE_TURBO##N, n, vx, (const float *) vy);                                     \
}

#if TQ_BUILD_AVX512
TQ_VARIANT_KERNELS(avx512, 2)
TQ_VARIANT_KERNELS(avx512, 3)
TQ_VARIANT_KERNELS(avx512, 4)
static const struct ggml_tq_cpu_kernels tq_avx512_kernels[3] = {
    { tq_q2_avx512, tq_d2_avx512, tq_v2_avx512 },
    { tq_q3_avx512, tq_d3_avx512, tq_v3_avx512 },
    { tq_q4_avx512, tq_d4_avx512, tq_v4_avx512 },
};
#endif

#if TQ_BUILD_AVX2
TQ_VARIANT_KERNELS(avx2, 2)
TQ_VARIANT_KERNELS(avx2, 3)
TQ_VARIANT_KERNELS(avx2, 4)
static const struct ggml_tq_cpu_kernels tq_avx2_kernels[3] = {
    { tq_q2_avx2, tq_d2_avx2, tq_v2_avx2 },
    { tq_q3_avx2, tq_d3_avx2, tq_v3_avx2 },
    { tq_q4_avx2, tq_d4_avx2, tq_v4_avx2 },
};
#endif

static bool tq_cpu_runs(int variant) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_cpu_init();
    switch (variant) {
        case GGML_TQ_CPU_AVX2:   return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
        case GGML_TQ_CPU_AVX512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                        __builtin_cpu_supports("avx512vl");
        default:                 return false;
    }
#else
    return (variant == GGML_TQ_CPU_AVX2 && TQ_USE_AVX2) || (variant == GGML_TQ_CPU_AVX512 && TQ_USE_AVX512);
#endif
}

const struct ggml_tq_cpu_kernels * ggml_tq_cpu_arch_kernels(enum ggml_type type, int variant) {
    if (!ggml_tq_is_turbo(type) || !tq_cpu_runs(variant)) {
        return NULL;
    }
    const int t = type - GGML_TYPE_TURBO2;
#if TQ_BUILD_AVX512
    if (variant == GGML_TQ_CPU_AVX512) {
        return &tq_avx512_kernels[t];
    }
#endif
#if TQ_BUILD_AVX2
    if (variant == GGML_TQ_CPU_AVX2) {
        return &tq_avx2_kernels[t];
    }
#endif
    (void) t;
    return NULL;
}

#endif // !GGML_CPU_GENERIC
