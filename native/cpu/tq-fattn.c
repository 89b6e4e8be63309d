// tq-gguf: single-token decode of FLASH_ATTN_EXT over a turbo KV cache, one pass
// over each K/V row for every query head of its GQA group.
//
// ggml's reference path (ops.cpp, ggml_compute_forward_flash_attn_ext_f16_one_chunk)
// takes one query head at a time, so each head of a group of G unpacks the same
// K and V rows again: G codebook lookups per value. Here a KV chunk (one per
// thread, as ggml's split-KV decode) is walked once per KV head:
//
//   for each tile of TQ_FA_TILE keys:
//     K row -> float once (centroid lookups: the SIMD dequantizer of the type),
//              then one dot product per query head of the group;
//     per head: mask, ALiBi slope, softcap, one online-softmax step for the tile
//              (vectorized exp: ggml_vec_soft_max_f32);
//     V row -> float once, then one multiply-add per query head.
//
// K types that are not turbo (q8_0, f16, ...) keep their own vec_dot against the
// query converted to the type's vec_dot_type (as the reference does); the V rows
// are still expanded once per group. The result goes to ggml's partials buffer
// ([M, S, VKQ[DV]] per query head and chunk), which ggml's reduction combines.
//
// The numerics differ from the reference only in float order (a float dot of the
// dequantized K row instead of the per-block halving tree, exp once per tile
// maximum); test-backend-ops holds the two paths to its flash-attention tolerance
// (tests/test_backend_ops.py, tests/test_fattn_decode.py).
#include "tq-cpu-quants.h"

#include "ggml-impl.h"
#include "ggml-cpu.h"
#include "vec.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TQ_FA_TILE     32   // keys per online-softmax step (a multiple of 16)
#define TQ_FA_GROUP    8    // query heads per pass over the rows (larger groups take several passes)
#define TQ_FA_MAX_D    1024 // largest K/V head size taken (stack scratch)
#define TQ_FA_MAX_QROW (TQ_FA_MAX_D*sizeof(float)) // a query row in any vec_dot_type
#define TQ_FA_MAX_DV_BLOCKED 256 // V head sizes whose tile of rows is held as float (below)

// The V accumulation of a tile is register-blocked: a slice of GGML_F32_EPR output values of
// every head stays in registers while the tile's rows are added, so each expanded V row is
// loaded once per slice for the whole group (as ggml's simd_gemm, for a group of query heads).
#if defined(GGML_SIMD) && !defined(__ARM_FEATURE_SVE) && !defined(__riscv_v_intrinsic)
#define TQ_FA_BLOCKED 1
#else
#define TQ_FA_BLOCKED 0
#endif

// GGML_TQ_FA_FAST=1 turns the grouped decode on (and lets GGML_TQ_FA_TILED=1 turn on the
// tiled prefill). Off by default: the grouped decode adds in another order than ggml's
// per-head one-query path, which batched prompts take, so a session restored from a saved
// state (which decodes its last prompt token alone) could answer differently from a fresh
// one. Until the two paths agree bit for bit, the exact path is the default.
static bool tq_fa_fast_enabled(void) {
    static int enabled = -1;
    if (enabled < 0) {
        const char * s = getenv("GGML_TQ_FA_FAST");
        enabled = (s != NULL && atoi(s) != 0) ? 1 : 0;
    }
    return enabled != 0;
}

// q.k of a float K row (n a multiple of 64: whole turbo blocks), inlined: it runs once per
// key and query head, where a call and its setup cost as much as the arithmetic
static inline float tq_fa_dot(const float * GGML_RESTRICT x, const float * GGML_RESTRICT y, int n) {
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i +  0), _mm512_loadu_ps(y + i +  0), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(y + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(y + i + 48), a3);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 a[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps() };
    for (int i = 0; i < n; i += 32) {
        for (int r = 0; r < 4; ++r) {
            a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8*r), _mm256_loadu_ps(y + i + 8*r), a[r]);
        }
    }
    const __m256 t = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
    __m128 u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    u = _mm_add_ps(u, _mm_movehl_ps(u, u));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_movehdup_ps(u)));
#else
    float s;
    ggml_vec_dot_f32(n, &s, 0, x, 0, y, 0, 1);
    return s;
#endif
}

// the largest of n scores (four chains: the comparisons do not wait on each other)
static inline float tq_fa_max(const float * x, int n) {
    float m[4] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY };
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        for (int r = 0; r < 4; ++r) {
            m[r] = MAX(m[r], x[j + r]);
        }
    }
    for (; j < n; ++j) {
        m[0] = MAX(m[0], x[j]);
    }
    return MAX(MAX(m[0], m[1]), MAX(m[2], m[3]));
}

#if TQ_FA_BLOCKED
// acc[h][0..DV) += sum over j < nt of w[h][j] * vt[j*DV ..], NH heads at a time in registers
static inline void tq_fa_accumulate_nh(const int NH, int nt, int64_t DV, float * const * acc,
                                       const float (*w)[TQ_FA_TILE], const float * vt) {
    for (int64_t d = 0; d < DV; d += GGML_F32_EPR) {
        GGML_F32_VEC a[TQ_FA_GROUP];
        for (int h = 0; h < NH; ++h) {
            a[h] = GGML_F32_VEC_LOAD(acc[h] + d);
        }
        for (int j = 0; j < nt; ++j) {
            const GGML_F32_VEC v = GGML_F32_VEC_LOAD(vt + j*DV + d);
            for (int h = 0; h < NH; ++h) {
                a[h] = GGML_F32_VEC_FMA(a[h], v, GGML_F32_VEC_SET1(w[h][j]));
            }
        }
        for (int h = 0; h < NH; ++h) {
            GGML_F32_VEC_STORE(acc[h] + d, a[h]);
        }
    }
}

// a constant head count per call, so the compiler keeps a[] in registers
static void tq_fa_accumulate(int g, int nt, int64_t DV, float * const * acc, const float (*w)[TQ_FA_TILE], const float * vt) {
    int h = 0;
    for (; h + 4 <= g; h += 4) {
        tq_fa_accumulate_nh(4, nt, DV, acc + h, w + h, vt);
    }
    switch (g - h) {
        case 3: tq_fa_accumulate_nh(3, nt, DV, acc + h, w + h, vt); break;
        case 2: tq_fa_accumulate_nh(2, nt, DV, acc + h, w + h, vt); break;
        case 1: tq_fa_accumulate_nh(1, nt, DV, acc + h, w + h, vt); break;
        default: break;
    }
}
#endif

#if defined(__AVX512F__)
// turbo K on AVX-512: per key and head only the 16-lane partial sums of q.k are formed;
// 16 keys' partial sums are then added across lanes together (a transpose-and-add
// network, 45 instructions for 16 scores instead of a horizontal sum per score)
#define TQ_FA_PARTIALS 1

static inline __m512 tq_fa_partial_avx512(const float * GGML_RESTRICT x, const float * GGML_RESTRICT y, int n) {
    __m512 a = _mm512_mul_ps(_mm512_loadu_ps(x), _mm512_loadu_ps(y));
    for (int i = 16; i < n; i += 16) {
        a = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), a);
    }
    return a;
}

// lane i of the result: the sum of the 16 lanes of v[i]
static inline __m512 tq_fa_hsum16_avx512(const __m512 * v) {
    __m512 a[8], b[4], c[2];
    for (int i = 0; i < 8; ++i) { // per 128-bit group: [v2i 0+2, v2i+1 0+2, v2i 1+3, v2i+1 1+3]
        a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2*i], v[2*i + 1]), _mm512_unpackhi_ps(v[2*i], v[2*i + 1]));
    }
    for (int i = 0; i < 4; ++i) { // per 128-bit group: element e = v[4i + e] summed over the group
        b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2*i], a[2*i + 1], 0x44), _mm512_shuffle_ps(a[2*i], a[2*i + 1], 0xEE));
    }
    for (int i = 0; i < 2; ++i) { // groups [b0 0+1, b0 2+3, b1 0+1, b1 2+3]
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2*i], b[2*i + 1], 0x88), _mm512_shuffle_f32x4(b[2*i], b[2*i + 1], 0xDD));
    }
    return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xDD));
}
#else
#define TQ_FA_PARTIALS 0
#endif

ggml_to_float_t ggml_tq_cpu_fa_to_float(enum ggml_type type) {
    if (ggml_tq_is_turbo(type)) {
        return ggml_tq_cpu_to_float(type);
    }
    if (type == GGML_TYPE_F32) {
        return NULL;
    }
    if (type == GGML_TYPE_F16) {
        return (ggml_to_float_t) ggml_cpu_fp16_to_fp32;
    }
    return ggml_get_type_traits(type)->to_float;
}

// The tiled prefill adds in another order than the one-query path (and for q8_0 K it keeps
// the query in float where that path rounds it to q8_0), so a prompt read in one batch and
// the same prompt read after a reused prefix would give different tokens. Until the two
// agree it is opt-in: GGML_TQ_FA_TILED=1.
static bool tq_fa_tiled_enabled(void) {
    static int enabled = -1;
    if (enabled < 0) {
        const char * s = getenv("GGML_TQ_FA_TILED");
        enabled = (s != NULL && atoi(s) != 0) ? 1 : 0;
    }
    return enabled != 0;
}

bool ggml_tq_cpu_fa_tiled_supported(const struct ggml_tensor * dst) {
    const struct ggml_tensor * k = dst->src[1];
    const struct ggml_tensor * v = dst->src[2];
    if (!tq_fa_fast_enabled() || !tq_fa_tiled_enabled() || (!ggml_tq_is_turbo(k->type) && !ggml_tq_is_turbo(v->type))) {
        return false;
    }
    if (k->type != GGML_TYPE_F32 && ggml_tq_cpu_fa_to_float(k->type) == NULL) {
        return false;
    }
    if (v->type != GGML_TYPE_F32 && ggml_tq_cpu_fa_to_float(v->type) == NULL) {
        return false;
    }
    // a K row is expanded through the tile's V buffer (GGML_FA_TILE_KV >= 16 rows of DV)
    return k->ne[0] <= 16*v->ne[0];
}

bool ggml_tq_cpu_fa_decode_supported(const struct ggml_tensor * dst) {
    const struct ggml_tensor * q = dst->src[0];
    const struct ggml_tensor * k = dst->src[1];
    const struct ggml_tensor * v = dst->src[2];
    const struct ggml_tensor * mask  = dst->src[3];
    const struct ggml_tensor * sinks = dst->src[4];

    if (!tq_fa_fast_enabled()) {
        return false;
    }
    if (!ggml_tq_is_turbo(k->type) && !ggml_tq_is_turbo(v->type)) {
        return false;
    }
    if (q->type != GGML_TYPE_F32 || q->ne[1] != 1 || q->ne[3] != 1 || q->nb[0] != sizeof(float)) {
        return false;
    }
    if (k->ne[0] > TQ_FA_MAX_D || v->ne[0] > TQ_FA_MAX_D) {
        return false;
    }
    // heads are grouped by KV head: K and V must share the grouping
    if (q->ne[2] % k->ne[2] != 0 || q->ne[2] % v->ne[2] != 0 || q->ne[2]/k->ne[2] != q->ne[2]/v->ne[2]) {
        return false;
    }
    if (k->ne[3] != 1 || v->ne[3] != 1) {
        return false;
    }
    if (mask && mask->type != GGML_TYPE_F16) {
        return false;
    }
    if (sinks && sinks->type != GGML_TYPE_F32) {
        return false;
    }
    if (!ggml_tq_is_turbo(k->type)) {
        const struct ggml_type_traits_cpu * kt = ggml_get_type_traits_cpu(k->type);
        const enum ggml_type vdt = kt->vec_dot_type;
        if (!kt->vec_dot || !ggml_get_type_traits_cpu(vdt)->from_float ||
            ggml_row_size(vdt, k->ne[0]) > TQ_FA_MAX_QROW) {
            return false;
        }
    }
    if (v->type != GGML_TYPE_F32 && ggml_tq_cpu_fa_to_float(v->type) == NULL) {
        return false;
    }
    return true;
}

void ggml_tq_cpu_fa_decode(const struct ggml_tensor * dst, int64_t ic0, int64_t ic1,
                           float * partials, int64_t partial_stride) {
    const struct ggml_tensor * q     = dst->src[0];
    const struct ggml_tensor * k     = dst->src[1];
    const struct ggml_tensor * v     = dst->src[2];
    const struct ggml_tensor * mask  = dst->src[3];
    const struct ggml_tensor * sinks = dst->src[4];

    const int64_t DK    = k->ne[0];
    const int64_t DV    = v->ne[0];
    const int64_t n_q   = q->ne[2]; // query heads
    const int64_t n_kv  = k->ne[2]; // KV heads
    const int64_t G     = n_q/n_kv; // query heads per KV head

    float scale         = 1.0f;
    float max_bias      = 0.0f;
    float logit_softcap = 0.0f;
    memcpy(&scale,         (const float *) dst->op_params + 0, sizeof(float));
    memcpy(&max_bias,      (const float *) dst->op_params + 1, sizeof(float));
    memcpy(&logit_softcap, (const float *) dst->op_params + 2, sizeof(float));
    if (logit_softcap != 0.0f) {
        scale /= logit_softcap;
    }

    const uint32_t n_head_log2 = 1u << (uint32_t) floor(log2((double) n_q));
    const float m0 = powf(2.0f, -(max_bias       ) / n_head_log2);
    const float m1 = powf(2.0f, -(max_bias / 2.0f) / n_head_log2);

    const bool k_turbo = ggml_tq_is_turbo(k->type);
    const ggml_to_float_t k_to_float = k_turbo ? ggml_tq_cpu_to_float(k->type) : NULL;
    const ggml_to_float_t v_to_float = ggml_tq_cpu_fa_to_float(v->type);

    const struct ggml_type_traits_cpu * kt = ggml_get_type_traits_cpu(k->type);
    const ggml_vec_dot_t    kq_vec_dot   = kt->vec_dot;
    const ggml_from_float_t q_to_vec_dot = k_turbo ? NULL : ggml_get_type_traits_cpu(kt->vec_dot_type)->from_float;

    float   k32[TQ_FA_MAX_D];                    // one K row as float (turbo K)
    float   v32[TQ_FA_MAX_D];                    // one V row as float
    uint8_t qbuf[TQ_FA_GROUP][TQ_FA_MAX_QROW];   // queries in K's vec_dot_type (non-turbo K)
    float   sc[TQ_FA_GROUP][TQ_FA_TILE];         // scores of a tile
    float   pw[TQ_FA_GROUP][TQ_FA_TILE];         // softmax weights of a tile
#if TQ_FA_PARTIALS
    __m512  part[TQ_FA_GROUP][TQ_FA_TILE];       // 16-lane partial sums of q.k (turbo K)
#endif
#if TQ_FA_BLOCKED
    float   pu[TQ_FA_GROUP][TQ_FA_TILE];         // weights of the rows in vt
    float   vt[TQ_FA_TILE*TQ_FA_MAX_DV_BLOCKED]; // the tile's used V rows as float
    const bool blocked = DV <= TQ_FA_MAX_DV_BLOCKED && DV % GGML_F32_EPR == 0;
#endif

    const void  * qp   [TQ_FA_GROUP];
    const ggml_fp16_t * mp[TQ_FA_GROUP];
    float       * acc  [TQ_FA_GROUP];
    float         slope[TQ_FA_GROUP];
    float         M    [TQ_FA_GROUP];
    float         S    [TQ_FA_GROUP];

    for (int64_t ik2 = 0; ik2 < n_kv; ++ik2) {
        for (int64_t h0 = 0; h0 < G; h0 += TQ_FA_GROUP) {
            const int g = (int) MIN(TQ_FA_GROUP, G - h0);

            for (int h = 0; h < g; ++h) {
                const int64_t iq2 = ik2*G + h0 + h;
                slope[h] = max_bias > 0.0f ? (iq2 < n_head_log2 ? powf(m0, iq2 + 1) : powf(m1, 2*(iq2 - n_head_log2) + 1)) : 1.0f;
                mp[h]    = mask ? (const ggml_fp16_t *) ((const char *) mask->data + (iq2 % mask->ne[2])*mask->nb[2]) : NULL;
                acc[h]   = partials + iq2*partial_stride + 2;
                M[h]     = -INFINITY;
                S[h]     = 0.0f;
                memset(acc[h], 0, DV*sizeof(float));
                const float * pq = (const float *) ((const char *) q->data + iq2*q->nb[2]);
                if (k_turbo) {
                    qp[h] = pq;
                } else {
                    q_to_vec_dot(pq, qbuf[h], DK);
                    qp[h] = qbuf[h];
                }
            }

            const char * k_head = (const char *) k->data + ik2*k->nb[2];
            const char * v_head = (const char *) v->data + ik2*v->nb[2];

            for (int64_t it = ic0; it < ic1; it += TQ_FA_TILE) {
                const int nt = (int) MIN(TQ_FA_TILE, ic1 - it);

                // scores: one K row, every head of the group
#if TQ_FA_PARTIALS
                if (k_turbo) {
                    for (int j = 0; j < nt; ++j) {
                        const int64_t ic = it + j;
                        bool any = false;
                        for (int h = 0; h < g; ++h) {
                            const float mv = mp[h] ? slope[h]*GGML_CPU_FP16_TO_FP32(mp[h][ic]) : 0.0f;
                            sc[h][j] = mv; // the mask term, for now
                            any |= mv != -INFINITY;
                            part[h][j] = _mm512_setzero_ps();
                        }
                        if (!any) {
                            continue;
                        }
                        k_to_float(k_head + ic*k->nb[1], k32, DK);
                        for (int h = 0; h < g; ++h) {
                            if (sc[h][j] != -INFINITY) {
                                part[h][j] = tq_fa_partial_avx512(k32, (const float *) qp[h], (int) DK);
                            }
                        }
                    }
                    for (int h = 0; h < g; ++h) {
                        for (int j = nt; j < GGML_PAD(nt, 16); ++j) {
                            part[h][j] = _mm512_setzero_ps();
                        }
                        for (int j0 = 0; j0 < nt; j0 += 16) {
                            float raw[16];
                            _mm512_storeu_ps(raw, tq_fa_hsum16_avx512(part[h] + j0));
                            for (int j = j0; j < MIN(j0 + 16, nt); ++j) {
                                if (sc[h][j] == -INFINITY) {
                                    continue;
                                }
                                float s = raw[j - j0]*scale;
                                if (logit_softcap != 0.0f) {
                                    s = logit_softcap*tanhf(s);
                                }
                                sc[h][j] += s;
                            }
                        }
                    }
                } else
#endif
                for (int j = 0; j < nt; ++j) {
                    const int64_t ic = it + j;
                    bool any = false;
                    for (int h = 0; h < g; ++h) {
                        const float mv = mp[h] ? slope[h]*GGML_CPU_FP16_TO_FP32(mp[h][ic]) : 0.0f;
                        sc[h][j] = mv; // the mask term, for now
                        any |= mv != -INFINITY;
                    }
                    if (!any) {
                        continue;
                    }
                    const char * k_data = k_head + ic*k->nb[1];
                    if (k_turbo) {
                        k_to_float(k_data, k32, DK);
                    }
                    for (int h = 0; h < g; ++h) {
                        if (sc[h][j] == -INFINITY) {
                            continue;
                        }
                        float s;
                        if (k_turbo) {
                            s = tq_fa_dot(k32, (const float *) qp[h], (int) DK);
                        } else {
                            kq_vec_dot((int) DK, &s, 0, k_data, 0, qp[h], 0, 1);
                        }
                        s = s*scale;
                        if (logit_softcap != 0.0f) {
                            s = logit_softcap*tanhf(s);
                        }
                        sc[h][j] += s;
                    }
                }

                // online softmax, one step per tile and head
                bool any = false;
                for (int h = 0; h < g; ++h) {
                    const float mt = tq_fa_max(sc[h], nt);
                    if (mt == -INFINITY) { // every key of the tile masked for this head
                        memset(pw[h], 0, nt*sizeof(float));
                        continue;
                    }
                    any = true;
                    if (mt > M[h]) {
                        const float ms = expf(M[h] - mt); // 0 for the first finite score
                        if (M[h] != -INFINITY) {
                            ggml_vec_scale_f32((int) DV, acc[h], ms);
                        }
                        S[h] *= ms;
                        M[h]  = mt;
                    }
                    S[h] += (float) ggml_vec_soft_max_f32(nt, pw[h], sc[h], M[h]);
                }
                if (!any) {
                    continue;
                }

                // values: one V row, every head of the group
#if TQ_FA_BLOCKED
                if (blocked) {
                    int nu = 0;
                    for (int j = 0; j < nt; ++j) {
                        bool used = false;
                        for (int h = 0; h < g; ++h) {
                            used |= pw[h][j] != 0.0f;
                        }
                        if (!used) {
                            continue;
                        }
                        const char * v_data = v_head + (it + j)*v->nb[1];
                        if (v_to_float) {
                            v_to_float(v_data, vt + nu*DV, DV);
                        } else {
                            memcpy(vt + nu*DV, v_data, DV*sizeof(float));
                        }
                        for (int h = 0; h < g; ++h) {
                            pu[h][nu] = pw[h][j];
                        }
                        nu++;
                    }
                    tq_fa_accumulate(g, nu, DV, acc, (const float (*)[TQ_FA_TILE]) pu, vt);
                    continue;
                }
#endif
                for (int j = 0; j < nt; ++j) {
                    bool used = false;
                    for (int h = 0; h < g; ++h) {
                        used |= pw[h][j] != 0.0f;
                    }
                    if (!used) {
                        continue;
                    }
                    const char * v_data = v_head + (it + j)*v->nb[1];
                    const float * vf = (const float *) v_data;
                    if (v_to_float) {
                        v_to_float(v_data, v32, DV);
                        vf = v32;
                    }
                    for (int h = 0; h < g; ++h) {
                        if (pw[h][j] != 0.0f) {
                            ggml_vec_mad_f32((int) DV, acc[h], vf, pw[h][j]);
                        }
                    }
                }
            }

            // sinks: once, with the first chunk (as the reference)
            if (sinks && ic0 == 0) {
                for (int h = 0; h < g; ++h) {
                    const int64_t iq2 = ik2*G + h0 + h;
                    const float s = ((const float *) sinks->data)[iq2];
                    float ms = 1.0f;
                    float vs = 1.0f;
                    if (s > M[h]) {
                        ms = expf(M[h] - s);
                        M[h] = s;
                        ggml_vec_scale_f32((int) DV, acc[h], ms);
                    } else {
                        vs = expf(s - M[h]);
                    }
                    S[h] = S[h]*ms + vs;
                }
            }

            for (int h = 0; h < g; ++h) {
                acc[h][-2] = M[h];
                acc[h][-1] = S[h];
            }
        }
    }
}
