// Speed of a set-partition trellis (TCQ) encoder before it becomes a cache type.
//
// Not part of the library: the build neither hashes nor copies native/study/.
// tools/bench/sptcq_speed.py writes the tables (sptcq-tables.h: union codebook, candidate
// factors, the code's subset table, from tools/studies/sptcq_study.py), compiles this file and
// runs it.
//
// One block of 64 rotated floats becomes 64 union level indices and an fp16 amplitude:
//   1. ss = sum of squares in value order; norm = sqrt(ss); inv = 1/norm;
//   2. per candidate t: u = x * (inv * IF[t]); per value, the squared error of the
//      nearest level of each of the four subsets; a Viterbi over 2^M states from and to
//      state 0 (ties keep the first predecessor); its metric cost[0] * F2[t];
//      With SP_ENVELOPE the squared error (u - L)^2 is replaced by its part that depends on
//      the level, min over the subset's levels of fma(u, -2L, L^2): the same choice with
//      fused multiply-adds and minimums instead of compares and blends, u^2 (the same for
//      every branch of a value) added back for the metric as ss * s^2.
//   3. the candidate of least metric (ties: the first) is traced back;
//   4. amplitude: fp16(norm / sqrt(sum of its levels squared, in value order)).
// The scalar reference does exactly that. The AVX2 and AVX-512 versions run 8 and 16
// blocks in the lanes of a register, one block per lane, so every lane does the
// reference's float operations in the reference's order, and the output must be
// byte-equal; main() checks it before timing.
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sptcq-tables.h"   // SP_BITS, SP_M, SP_SCALES, SP_BOOK[], SP_FACTOR[], SP_SUBSET[][2]

#define QK 64
#define NSTATE (1 << SP_M)
#define NLEVEL (1 << (SP_BITS + 1))   // union codebook
#define NSUB (NLEVEL / 4)              // levels per subset
#ifndef SP_ENVELOPE
#define SP_ENVELOPE 0
#endif

_Static_assert(NSTATE <= 8, "the AVX-512 traceback looks the subset up in 16 entries");

static float sub_level[4][NSUB];      // subset j holds union levels j, j+4, j+8, ...
static float sub_mid[4][NSUB - 1];    // and the midpoints between them
static float sub_a[4][NSUB], sub_b[4][NSUB];   // -2L and L^2 of each level: the envelope's lines
static float inv_factor[SP_SCALES], factor2[SP_SCALES];

static void init_tables(void) {
    for (int j = 0; j < 4; j++) {
        for (int k = 0; k < NSUB; k++) sub_level[j][k] = SP_BOOK[j + 4 * k];
        for (int k = 0; k < NSUB - 1; k++) sub_mid[j][k] = 0.5f * (sub_level[j][k] + sub_level[j][k + 1]);
        for (int k = 0; k < NSUB; k++) { sub_a[j][k] = -2.0f * sub_level[j][k]; sub_b[j][k] = sub_level[j][k] * sub_level[j][k]; }
    }
    for (int t = 0; t < SP_SCALES; t++) {
        inv_factor[t] = 1.0f / SP_FACTOR[t];
        factor2[t] = SP_FACTOR[t] * SP_FACTOR[t];
    }
}

static inline int rank_in_subset(float u, int j) {
    int r = 0;
    for (int k = 0; k < NSUB - 1; k++) r += u > sub_mid[j][k];
    return r;
}

// ---- the reference: one block

static void encode_ref(const float * x, uint8_t * lev, uint16_t * d) {
    float ss = 0.0f;
    for (int i = 0; i < QK; i++) ss += x[i] * x[i];
    if (ss == 0.0f) { memset(lev, 0, QK); *d = 0; return; }
    const float norm = sqrtf(ss), inv = 1.0f / norm;
    uint32_t dec[SP_SCALES][QK];   // bit k: state k came from its second predecessor
    float best = INFINITY;
    int win = 0;
    for (int t = 0; t < SP_SCALES; t++) {
        const float s = inv * inv_factor[t];
        float cost[NSTATE];
        for (int k = 0; k < NSTATE; k++) cost[k] = k ? INFINITY : 0.0f;
        for (int i = 0; i < QK; i++) {
            const float u = x[i] * s;
            float e[4];
            for (int j = 0; j < 4; j++) {
#if SP_ENVELOPE
                float m = fmaf(u, sub_a[j][0], sub_b[j][0]);
                for (int k = 1; k < NSUB; k++) { const float v = fmaf(u, sub_a[j][k], sub_b[j][k]); m = v < m ? v : m; }
                e[j] = m;
#else
                const float df = u - sub_level[j][rank_in_subset(u, j)];
                e[j] = df * df;
#endif
            }
            float next[NSTATE];
            uint32_t bits = 0;
            for (int k = 0; k < NSTATE; k++) {
                const int p0 = k >> 1, p1 = p0 | (NSTATE / 2), b = k & 1;
                const float c0 = cost[p0] + e[SP_SUBSET[p0][b]];
                const float c1 = cost[p1] + e[SP_SUBSET[p1][b]];
                next[k] = c1 < c0 ? c1 : c0;
                bits |= (uint32_t)(c1 < c0) << k;
            }
            memcpy(cost, next, sizeof cost);
            dec[t][i] = bits;
        }
#if SP_ENVELOPE
        const float metric = (cost[0] + ss * (s * s)) * factor2[t];
#else
        const float metric = cost[0] * factor2[t];
#endif
        if (metric < best) { best = metric; win = t; }
    }
    const float s = inv * inv_factor[win];
    int state = 0;
    for (int i = QK - 1; i >= 0; i--) {
        const int prev = (state >> 1) | (int)((dec[win][i] >> state) & 1) * (NSTATE / 2);
        const int j = SP_SUBSET[prev][state & 1];
        lev[i] = (uint8_t)(j + 4 * rank_in_subset(x[i] * s, j));
        state = prev;
    }
    float cc = 0.0f;
    for (int i = 0; i < QK; i++) cc += SP_BOOK[lev[i]] * SP_BOOK[lev[i]];
    *d = _cvtss_sh(norm / sqrtf(cc), _MM_FROUND_TO_NEAREST_INT);
}

// ---- AVX-512: 16 blocks, one a lane

#if defined(__AVX512F__)
static void encode_avx512(const float * x, uint8_t * lev, uint16_t * d) {
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(QK));
    __m512 xt[QK];
    __m512 ss = _mm512_setzero_ps();
    for (int i = 0; i < QK; i++) {
        xt[i] = _mm512_i32gather_ps(rows, x + i, 4);
        ss = _mm512_add_ps(ss, _mm512_mul_ps(xt[i], xt[i]));
    }
    const __mmask16 live = _mm512_cmp_ps_mask(ss, _mm512_setzero_ps(), _CMP_NEQ_OQ);
    const __m512 norm = _mm512_sqrt_ps(ss);
    const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), norm);
    __m512i dec[SP_SCALES][QK];
    __m512 best = _mm512_set1_ps(INFINITY);
    __m512i win = _mm512_setzero_si512();
    for (int t = 0; t < SP_SCALES; t++) {
        const __m512 s = _mm512_mul_ps(inv, _mm512_set1_ps(inv_factor[t]));
        __m512 cost[NSTATE];
        for (int k = 0; k < NSTATE; k++) cost[k] = _mm512_set1_ps(k ? INFINITY : 0.0f);
        for (int i = 0; i < QK; i++) {
            const __m512 u = _mm512_mul_ps(xt[i], s);
            __m512 e[4];
            for (int j = 0; j < 4; j++) {
#if SP_ENVELOPE
                __m512 m = _mm512_fmadd_ps(u, _mm512_set1_ps(sub_a[j][0]), _mm512_set1_ps(sub_b[j][0]));
                for (int k = 1; k < NSUB; k++)   // min_ps(v, m): v < m ? v : m, as the reference
                    m = _mm512_min_ps(_mm512_fmadd_ps(u, _mm512_set1_ps(sub_a[j][k]), _mm512_set1_ps(sub_b[j][k])), m);
                e[j] = m;
#else
                __m512 c = _mm512_set1_ps(sub_level[j][0]);
                for (int k = 0; k < NSUB - 1; k++) {
                    const __mmask16 above = _mm512_cmp_ps_mask(u, _mm512_set1_ps(sub_mid[j][k]), _CMP_GT_OQ);
                    c = _mm512_mask_mov_ps(c, above, _mm512_set1_ps(sub_level[j][k + 1]));
                }
                const __m512 df = _mm512_sub_ps(u, c);
                e[j] = _mm512_mul_ps(df, df);
#endif
            }
            __m512 next[NSTATE];
            __m512i bits = _mm512_setzero_si512();
            for (int k = 0; k < NSTATE; k++) {
                const int p0 = k >> 1, p1 = p0 | (NSTATE / 2), b = k & 1;
                const __m512 c0 = _mm512_add_ps(cost[p0], e[SP_SUBSET[p0][b]]);
                const __m512 c1 = _mm512_add_ps(cost[p1], e[SP_SUBSET[p1][b]]);
                next[k] = _mm512_min_ps(c1, c0);   // c1 < c0 ? c1 : c0, as the reference
                bits = _mm512_mask_or_epi32(bits, _mm512_cmp_ps_mask(c1, c0, _CMP_LT_OQ), bits, _mm512_set1_epi32(1 << k));
            }
            for (int k = 0; k < NSTATE; k++) cost[k] = next[k];
            dec[t][i] = bits;
        }
#if SP_ENVELOPE
        const __m512 metric = _mm512_mul_ps(_mm512_add_ps(cost[0], _mm512_mul_ps(ss, _mm512_mul_ps(s, s))), _mm512_set1_ps(factor2[t]));
#else
        const __m512 metric = _mm512_mul_ps(cost[0], _mm512_set1_ps(factor2[t]));
#endif
        const __mmask16 better = _mm512_cmp_ps_mask(metric, best, _CMP_LT_OQ);
        best = _mm512_mask_mov_ps(best, better, metric);
        win = _mm512_mask_mov_epi32(win, better, _mm512_set1_epi32(t));
    }
    const __m512 s = _mm512_mul_ps(inv, _mm512_i32gather_ps(win, inv_factor, 4));
    int subset[16] = {0};
    for (int p = 0; p < NSTATE; p++) for (int b = 0; b < 2; b++) subset[2 * p + b] = SP_SUBSET[p][b];
    const __m512i vsubset = _mm512_loadu_si512(subset);
    const __m512i one = _mm512_set1_epi32(1);
    __m512i state = _mm512_setzero_si512();
    __m512i levs[QK];
    for (int i = QK - 1; i >= 0; i--) {
        __m512i D = dec[0][i];
        for (int t = 1; t < SP_SCALES; t++) D = _mm512_mask_mov_epi32(D, _mm512_cmpeq_epi32_mask(win, _mm512_set1_epi32(t)), dec[t][i]);
        const __m512i from1 = _mm512_and_si512(_mm512_srlv_epi32(D, state), one);
        const __m512i prev = _mm512_or_si512(_mm512_srli_epi32(state, 1), _mm512_mullo_epi32(from1, _mm512_set1_epi32(NSTATE / 2)));
        const __m512i j = _mm512_permutexvar_epi32(_mm512_or_si512(_mm512_slli_epi32(prev, 1), _mm512_and_si512(state, one)), vsubset);
        const __m512 u = _mm512_mul_ps(xt[i], s);
        __m512i l = j;
        for (int k = 0; k < NSUB - 1; k++) {
            const float m[4] = {sub_mid[0][k], sub_mid[1][k], sub_mid[2][k], sub_mid[3][k]};
            const __m512 mid = _mm512_permutexvar_ps(j, _mm512_castps128_ps512(_mm_loadu_ps(m)));
            l = _mm512_mask_add_epi32(l, _mm512_cmp_ps_mask(u, mid, _CMP_GT_OQ), l, _mm512_set1_epi32(4));
        }
        levs[i] = _mm512_maskz_mov_epi32(live, l);
        state = prev;
    }
    __m512 cc = _mm512_setzero_ps();
    for (int i = 0; i < QK; i++) {
        const __m512 c = _mm512_i32gather_ps(levs[i], SP_BOOK, 4);
        cc = _mm512_add_ps(cc, _mm512_mul_ps(c, c));
    }
    const __m256i h = _mm512_cvtps_ph(_mm512_div_ps(norm, _mm512_sqrt_ps(cc)), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_si256((__m256i *) d, _mm256_maskz_mov_epi16(live, h));
    for (int i = 0; i < QK; i++) {
        uint8_t lane[16];
        _mm_storeu_si128((__m128i *) lane, _mm512_cvtepi32_epi8(levs[i]));
        for (int b = 0; b < 16; b++) lev[b * QK + i] = lane[b];
    }
}
#endif

// ---- AVX2: 8 blocks, one a lane

#if defined(__AVX2__)
static void encode_avx2(const float * x, uint8_t * lev, uint16_t * d) {
    const __m256i rows = _mm256_setr_epi32(0, QK, 2 * QK, 3 * QK, 4 * QK, 5 * QK, 6 * QK, 7 * QK);
    __m256 xt[QK];
    __m256 ss = _mm256_setzero_ps();
    for (int i = 0; i < QK; i++) {
        xt[i] = _mm256_i32gather_ps(x + i, rows, 4);
        ss = _mm256_add_ps(ss, _mm256_mul_ps(xt[i], xt[i]));
    }
    const __m256 live = _mm256_cmp_ps(ss, _mm256_setzero_ps(), _CMP_NEQ_OQ);
    const __m256 norm = _mm256_sqrt_ps(ss);
    const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), norm);
    __m256i dec[SP_SCALES][QK];
    __m256 best = _mm256_set1_ps(INFINITY);
    __m256i win = _mm256_setzero_si256();
    for (int t = 0; t < SP_SCALES; t++) {
        const __m256 s = _mm256_mul_ps(inv, _mm256_set1_ps(inv_factor[t]));
        __m256 cost[NSTATE];
        for (int k = 0; k < NSTATE; k++) cost[k] = _mm256_set1_ps(k ? INFINITY : 0.0f);
        for (int i = 0; i < QK; i++) {
            const __m256 u = _mm256_mul_ps(xt[i], s);
            __m256 e[4];
            for (int j = 0; j < 4; j++) {
#if SP_ENVELOPE
                __m256 m = _mm256_fmadd_ps(u, _mm256_set1_ps(sub_a[j][0]), _mm256_set1_ps(sub_b[j][0]));
                for (int k = 1; k < NSUB; k++)
                    m = _mm256_min_ps(_mm256_fmadd_ps(u, _mm256_set1_ps(sub_a[j][k]), _mm256_set1_ps(sub_b[j][k])), m);
                e[j] = m;
#else
                __m256 c = _mm256_set1_ps(sub_level[j][0]);
                for (int k = 0; k < NSUB - 1; k++) {
                    const __m256 above = _mm256_cmp_ps(u, _mm256_set1_ps(sub_mid[j][k]), _CMP_GT_OQ);
                    c = _mm256_blendv_ps(c, _mm256_set1_ps(sub_level[j][k + 1]), above);
                }
                const __m256 df = _mm256_sub_ps(u, c);
                e[j] = _mm256_mul_ps(df, df);
#endif
            }
            __m256 next[NSTATE];
            __m256i bits = _mm256_setzero_si256();
            for (int k = 0; k < NSTATE; k++) {
                const int p0 = k >> 1, p1 = p0 | (NSTATE / 2), b = k & 1;
                const __m256 c0 = _mm256_add_ps(cost[p0], e[SP_SUBSET[p0][b]]);
                const __m256 c1 = _mm256_add_ps(cost[p1], e[SP_SUBSET[p1][b]]);
                next[k] = _mm256_min_ps(c1, c0);
                const __m256i took1 = _mm256_castps_si256(_mm256_cmp_ps(c1, c0, _CMP_LT_OQ));
                bits = _mm256_or_si256(bits, _mm256_and_si256(took1, _mm256_set1_epi32(1 << k)));
            }
            for (int k = 0; k < NSTATE; k++) cost[k] = next[k];
            dec[t][i] = bits;
        }
#if SP_ENVELOPE
        const __m256 metric = _mm256_mul_ps(_mm256_add_ps(cost[0], _mm256_mul_ps(ss, _mm256_mul_ps(s, s))), _mm256_set1_ps(factor2[t]));
#else
        const __m256 metric = _mm256_mul_ps(cost[0], _mm256_set1_ps(factor2[t]));
#endif
        const __m256 better = _mm256_cmp_ps(metric, best, _CMP_LT_OQ);
        best = _mm256_blendv_ps(best, metric, better);
        win = _mm256_blendv_epi8(win, _mm256_set1_epi32(t), _mm256_castps_si256(better));
    }
    const __m256 s = _mm256_mul_ps(inv, _mm256_i32gather_ps(inv_factor, win, 4));
    int subset[16] = {0};
    for (int p = 0; p < NSTATE; p++) for (int b = 0; b < 2; b++) subset[2 * p + b] = SP_SUBSET[p][b];
    const __m256i one = _mm256_set1_epi32(1), four = _mm256_set1_epi32(4);
    __m256i state = _mm256_setzero_si256();
    __m256i levs[QK];
    for (int i = QK - 1; i >= 0; i--) {
        __m256i D = dec[0][i];
        for (int t = 1; t < SP_SCALES; t++) D = _mm256_blendv_epi8(D, dec[t][i], _mm256_cmpeq_epi32(win, _mm256_set1_epi32(t)));
        const __m256i from1 = _mm256_and_si256(_mm256_srlv_epi32(D, state), one);
        const __m256i prev = _mm256_or_si256(_mm256_srli_epi32(state, 1), _mm256_mullo_epi32(from1, _mm256_set1_epi32(NSTATE / 2)));
        const __m256i j = _mm256_i32gather_epi32(subset, _mm256_or_si256(_mm256_slli_epi32(prev, 1), _mm256_and_si256(state, one)), 4);
        const __m256 u = _mm256_mul_ps(xt[i], s);
        __m256i l = j;
        for (int k = 0; k < NSUB - 1; k++) {
            const float m[8] = {sub_mid[0][k], sub_mid[1][k], sub_mid[2][k], sub_mid[3][k]};
            const __m256 mid = _mm256_permutevar8x32_ps(_mm256_loadu_ps(m), j);
            l = _mm256_add_epi32(l, _mm256_and_si256(four, _mm256_castps_si256(_mm256_cmp_ps(u, mid, _CMP_GT_OQ))));
        }
        levs[i] = _mm256_and_si256(l, _mm256_castps_si256(live));
        state = prev;
    }
    __m256 cc = _mm256_setzero_ps();
    for (int i = 0; i < QK; i++) {
        const __m256 c = _mm256_i32gather_ps(SP_BOOK, levs[i], 4);
        cc = _mm256_add_ps(cc, _mm256_mul_ps(c, c));
    }
    const __m256 amp = _mm256_and_ps(_mm256_div_ps(norm, _mm256_sqrt_ps(cc)), live);
    _mm_storeu_si128((__m128i *) d, _mm256_cvtps_ph(amp, _MM_FROUND_TO_NEAREST_INT));
    for (int i = 0; i < QK; i++) {
        int32_t lane[8];
        _mm256_storeu_si256((__m256i *) lane, levs[i]);
        for (int b = 0; b < 8; b++) lev[b * QK + i] = (uint8_t) lane[b];
    }
}
#endif

// ---- check and time

typedef void (*encode_fn)(const float *, uint8_t *, uint16_t *);

static double seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// One variant: byte-equal to the reference on every block, then GB/s of float32 in, best of `reps`.
static int run(const char * name, encode_fn fn, int lanes, const float * x, int nb, const uint8_t * lev0,
               const uint16_t * d0, int reps) {
    uint8_t * lev = calloc((size_t) nb, QK);
    uint16_t * d = calloc((size_t) nb, 2);
    for (int b = 0; b < nb; b += lanes) fn(x + (size_t) b * QK, lev + (size_t) b * QK, d + b);
    const int equal = !memcmp(lev, lev0, (size_t) nb * QK) && !memcmp(d, d0, (size_t) nb * 2);
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        const double t0 = seconds();
        for (int b = 0; b < nb; b += lanes) fn(x + (size_t) b * QK, lev + (size_t) b * QK, d + b);
        const double dt = seconds() - t0;
        if (dt < best) best = dt;
    }
    printf("%-7s %s  %.3f GB/s of float32  (%.0f ns a block)\n", name, equal ? "equal" : "DIFFERS",
           (double) nb * QK * 4 / best / 1e9, best / nb * 1e9);
    free(lev);
    free(d);
    return equal;
}

int main(int argc, char ** argv) {
    // argv[1]: a file of float32 rows (a multiple of 64 values, rotated), read whole;
    // argv[2]: where to write the reference's output, the levels (a byte each) then the amplitudes
    if (argc != 3) { fprintf(stderr, "usage: %s ROWS.f32 OUT\n", argv[0]); return 2; }
    FILE * f = fopen(argv[1], "rb");
    if (!f) { fprintf(stderr, "error: cannot open %s\n", argv[1]); return 2; }
    fseek(f, 0, SEEK_END);
    const long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    const int nb = (int) (bytes / (QK * 4)) / 16 * 16;
    if (nb == 0) { fprintf(stderr, "error: %s holds fewer than 16 blocks\n", argv[1]); return 2; }
    float * x = malloc((size_t) nb * QK * 4);
    if (fread(x, QK * 4, (size_t) nb, f) != (size_t) nb) { fprintf(stderr, "error: short read of %s\n", argv[1]); return 2; }
    fclose(f);
    init_tables();
    uint8_t * lev0 = malloc((size_t) nb * QK);
    uint16_t * d0 = malloc((size_t) nb * 2);
    for (int b = 0; b < nb; b++) encode_ref(x + (size_t) b * QK, lev0 + (size_t) b * QK, d0 + b);
    printf("%d blocks, %d bits, %d states, %d scales, %s\n", nb, SP_BITS, NSTATE, SP_SCALES,
           SP_ENVELOPE ? "distortions by fma envelope" : "distortions by compare ladder");
    int ok = run("scalar", encode_ref, 1, x, nb, lev0, d0, 2);
#if defined(__AVX2__)
    ok &= run("avx2", encode_avx2, 8, x, nb, lev0, d0, 7);
#endif
#if defined(__AVX512F__)
    ok &= run("avx512", encode_avx512, 16, x, nb, lev0, d0, 7);
#endif
    FILE * out = fopen(argv[2], "wb");
    if (!out || fwrite(lev0, 1, (size_t) nb * QK, out) != (size_t) nb * QK || fwrite(d0, 2, (size_t) nb, out) != (size_t) nb
        || fclose(out) != 0) {
        fprintf(stderr, "error: cannot write %s\n", argv[2]);
        return 2;
    }
    return ok ? 0 : 1;
}
