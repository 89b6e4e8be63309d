// tq-gguf: FLASH_ATTN_EXT on the CPU when K, V or both are turbo, or V is tcq (the partner may be any
// type with a to_float: q8_0, f16, f32, ...).
//
// Why a kernel of our own. ggml's reference path (ops.cpp,
// ggml_compute_forward_flash_attn_ext_f16_one_chunk) takes one query row at a time, so
// every head of a GQA group of G unpacks the same K and V rows again, and a prompt of N
// tokens unpacks them N*G times. Here a pass takes up to TQ_FA_ROWS query rows that share
// one KV head (the heads of a group, and in a batch several positions) and walks their KV
// range once:
//
//   for each tile of TQ_FA_TILE keys:
//     K row -> float once (turbo: the SIMD dequantizer of the type), one dot per query row;
//     per row: mask, ALiBi slope, softcap, one online-softmax step for the tile;
//     V row -> float once, one multiply-add per query row (register-blocked).
//
// A prompt takes many passes over each KV head (one per TQ_FA_ROWS rows), so a batch first
// expands the K and V rows to float once, all threads sharing the work, and its passes read
// those floats: O(n_kv*d) expansion for the op instead of O(n_q*n_kv*d/TQ_FA_ROWS). It does so
// one window of cells at a time (TQ_FA_EXPAND_BUDGET bytes of floats at most), so the scratch
// does not grow with the context.
//
// Masked keys never touch a row: a row adds a V row only with a nonzero weight, so an inf or
// NaN in the V row of a key a query masks (an overflowed f16 or q8_0 partner, a cell of
// another sequence) does not reach it, as in ggml's own path.
//
// Scratch comes from the work buffer ggml_graph_plan sizes (ggml_tq_cpu_fa_work_size), none
// from the stack: a thread needs some 140 KiB at head size 1024, more than some C libraries
// give a thread.
//
// Batch invariance. A query row's result depends only on that row, the K/V rows and its
// mask row: never on how many queries share the op, on which rows share a pass, or on the
// thread count. So a prompt read in one batch and the same prompt continued from a saved
// state (its last token decoded alone) give the same floats. Three rules make it so:
//   - the KV range is cut into chunks of TQ_FA_CHUNK cells counted from cell 0;
//   - within a chunk, each tile of TQ_FA_TILE keys (from the chunk's start) takes one
//     online-softmax step, and every per-row operation is the same function whoever
//     shares the pass (a row whose weight for a key is 0 adds exactly 0);
//   - chunk results are merged in ascending order by one function, tq_fa_merge.
// Single-token decode spreads (KV head, chunk) items over the threads and merges after a
// barrier; a batch gives each thread whole passes and merges as it goes.
//
// The numerics differ from the reference only in float order (a float dot of the expanded
// K row, with the query kept in float where the reference rounds it to K's vec_dot type;
// exp once per tile maximum); test-backend-ops holds the two paths to its flash-attention
// tolerance (tests/native/test_backend_ops.py, tests/native/test_fattn_decode.py).
#include "tq-cpu-quants.h"

#include "ggml-impl.h"
#include "ggml-cpu.h"
#include "ggml-cpu-impl.h"
#include "vec.h"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TQ_FA_TILE     32   // keys per online-softmax step (a multiple of 16)
#define TQ_FA_CHUNK    256  // cells per chunk (a multiple of TQ_FA_TILE): the unit of merging
#define TQ_FA_ROWS     16   // query rows per pass over the K/V rows
#define TQ_FA_MAX_D    1024 // largest K/V head size taken
#define TQ_FA_MAX_DV_BLOCKED 256 // V head sizes whose tile of rows is held as float (below)
#define TQ_FA_EXPAND_BUDGET ((size_t) 8 << 20) // bytes of K and V rows a batch holds as float at once
#define TQ_FA_ALIGN    64   // bytes: every scratch array starts on a cache line (and an __m512)

// The V accumulation of a tile is register-blocked: a slice of GGML_F32_EPR output values of
// up to four rows stays in registers while the tile's rows are added, so each expanded V row is
// loaded once per slice for four query rows (as ggml's simd_gemm, for a group of query rows).
#if defined(GGML_SIMD) && !defined(__ARM_FEATURE_SVE) && !defined(__riscv_v_intrinsic)
#define TQ_FA_BLOCKED 1
#else
#define TQ_FA_BLOCKED 0
#endif

// GGML_TQ_FA=0 in the environment sends turbo caches back to ggml's per-row path: only for
// timing the two against each other (GGML_TQ_FA=0 tq-gguf bench ...).
static bool tq_fa_enabled(void) {
    static int enabled = -1;
    if (enabled < 0) {
        const char * s = getenv("GGML_TQ_FA");
        enabled = (s == NULL || atoi(s) != 0) ? 1 : 0;
    }
    return enabled != 0;
}

// Why the kernel leaves an op with a turbo K or V to ggml's per-row path (much slower at depth).
// Each reason is logged once per process, the first time it happens.
enum tq_fa_decline {
    TQ_FA_DECLINE_OFF,
    TQ_FA_DECLINE_Q,
    TQ_FA_DECLINE_HEAD_SIZE,
    TQ_FA_DECLINE_GROUPING,
    TQ_FA_DECLINE_MASK,
    TQ_FA_DECLINE_SINKS,
    TQ_FA_DECLINE_K_TYPE,
    TQ_FA_DECLINE_V_TYPE,
    TQ_FA_N_DECLINES,
};

static const char * const tq_fa_decline_text[TQ_FA_N_DECLINES] = {
    [TQ_FA_DECLINE_OFF]       = "GGML_TQ_FA=0 is set in the environment",
    [TQ_FA_DECLINE_Q]         = "the queries are not contiguous f32 rows",
    [TQ_FA_DECLINE_HEAD_SIZE] = "a K or V head size is not a multiple of 64 up to 1024",
    [TQ_FA_DECLINE_GROUPING]  = "K and V do not group the query heads alike",
    [TQ_FA_DECLINE_MASK]      = "the mask is not f16",
    [TQ_FA_DECLINE_SINKS]     = "the attention sinks are not f32",
    [TQ_FA_DECLINE_K_TYPE]    = "the K type has no row expander on this CPU",
    [TQ_FA_DECLINE_V_TYPE]    = "the V type has no row expander on this CPU",
};

static atomic_int tq_fa_declined[TQ_FA_N_DECLINES];

static bool tq_fa_decline(enum tq_fa_decline why) {
    if (atomic_fetch_add(&tq_fa_declined[why], 1) == 0) {
        GGML_LOG_WARN("tq-gguf: flash attention over a turbo cache takes ggml's slower per-row path: %s\n",
                      tq_fa_decline_text[why]);
    }
    return false;
}

const char * ggml_tq_cpu_fa_decline_reason(int i) {
    return i >= 0 && i < TQ_FA_N_DECLINES ? tq_fa_decline_text[i] : NULL;
}

bool ggml_tq_cpu_fa_declined(int i) {
    return i >= 0 && i < TQ_FA_N_DECLINES && atomic_load(&tq_fa_declined[i]) > 0;
}

// q.k of a float K row (n a multiple of 64), inlined: it runs once per key and query row,
// where a call and its setup cost as much as the arithmetic
static inline float tq_fa_dot(const float * GGML_RESTRICT x, const float * GGML_RESTRICT y, int n) {
#if defined(__AVX2__) && defined(__FMA__)
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
// acc[h][0..DV) += sum over j < nt of w[h][j] * vt[j*DV ..], NH rows at a time in registers.
// Each output value is a chain of FMAs over j in order, whatever NH is. careful: a zero weight
// adds nothing (not 0*v, NaN for an inf in V); the same floats otherwise, since an accumulator
// that starts at +0 never becomes -0, so adding 0*v to it changes no bit.
static inline void tq_fa_accumulate_nh(const int NH, const bool careful, int nt, int64_t DV, float * const * acc,
                                       const float (*w)[TQ_FA_TILE], const float * vt) {
    for (int64_t d = 0; d < DV; d += GGML_F32_EPR) {
        GGML_F32_VEC a[4];
        for (int h = 0; h < NH; ++h) {
            a[h] = GGML_F32_VEC_LOAD(acc[h] + d);
        }
        for (int j = 0; j < nt; ++j) {
            const GGML_F32_VEC v = GGML_F32_VEC_LOAD(vt + j*DV + d);
            for (int h = 0; h < NH; ++h) {
                if (!careful || w[h][j] != 0.0f) {
                    a[h] = GGML_F32_VEC_FMA(a[h], v, GGML_F32_VEC_SET1(w[h][j]));
                }
            }
        }
        for (int h = 0; h < NH; ++h) {
            GGML_F32_VEC_STORE(acc[h] + d, a[h]);
        }
    }
}

// a constant row count per call, so the compiler keeps a[] in registers
static inline void tq_fa_accumulate_rows(const bool careful, int g, int nt, int64_t DV, float * const * acc,
                                         const float (*w)[TQ_FA_TILE], const float * vt) {
    int h = 0;
    for (; h + 4 <= g; h += 4) {
        tq_fa_accumulate_nh(4, careful, nt, DV, acc + h, w + h, vt);
    }
    switch (g - h) {
        case 3: tq_fa_accumulate_nh(3, careful, nt, DV, acc + h, w + h, vt); break;
        case 2: tq_fa_accumulate_nh(2, careful, nt, DV, acc + h, w + h, vt); break;
        case 1: tq_fa_accumulate_nh(1, careful, nt, DV, acc + h, w + h, vt); break;
        default: break;
    }
}

// careful where some row of the tile gives a key that another row uses the weight 0 (a key
// masked for it): only there can a V row the row does not see be non-finite
static void tq_fa_accumulate(bool careful, int g, int nt, int64_t DV, float * const * acc,
                             const float (*w)[TQ_FA_TILE], const float * vt) {
    if (careful) {
        tq_fa_accumulate_rows(true, g, nt, DV, acc, w, vt);
    } else {
        tq_fa_accumulate_rows(false, g, nt, DV, acc, w, vt);
    }
}
#endif

#if defined(__AVX512F__)
// On AVX-512 per key and row only the 16-lane partial sums of q.k are formed; 16 keys'
// partial sums are then added across lanes together (a transpose-and-add network, 45
// instructions for 16 scores instead of a horizontal sum per score)
#define TQ_FA_PARTIALS 1

// out[r*TQ_FA_TILE] = the 16-lane partial sums of k.q[r] for NR rows: per row a multiply, then
// one FMA chain over the row in order, so a row's sums do not depend on NR. NR chains side by
// side keep the FMA units busy where one chain would wait on each FMA's latency.
static inline void tq_fa_partials_nr(const int NR, const float * GGML_RESTRICT k, const float * const * q,
                                     int n, __m512 * out) {
    __m512 a[8];
    const __m512 k0 = _mm512_loadu_ps(k);
    for (int r = 0; r < NR; ++r) {
        a[r] = _mm512_mul_ps(k0, _mm512_loadu_ps(q[r]));
    }
    for (int i = 16; i < n; i += 16) {
        const __m512 ki = _mm512_loadu_ps(k + i);
        for (int r = 0; r < NR; ++r) {
            a[r] = _mm512_fmadd_ps(ki, _mm512_loadu_ps(q[r] + i), a[r]);
        }
    }
    for (int r = 0; r < NR; ++r) {
        out[r*TQ_FA_TILE] = a[r];
    }
}

// the partial sums of k.q[r] for n_rows rows, eight at a time (a constant count per call),
// row r's at out[r*TQ_FA_TILE]
static void tq_fa_partials(const float * k, const float * const * q, int n_rows, int n, __m512 * out) {
    int r = 0;
    for (; r + 8 <= n_rows; r += 8) {
        tq_fa_partials_nr(8, k, q + r, n, out + r*TQ_FA_TILE);
    }
    switch (n_rows - r) {
        case 7: tq_fa_partials_nr(7, k, q + r, n, out + r*TQ_FA_TILE); break;
        case 6: tq_fa_partials_nr(6, k, q + r, n, out + r*TQ_FA_TILE); break;
        case 5: tq_fa_partials_nr(5, k, q + r, n, out + r*TQ_FA_TILE); break;
        case 4: tq_fa_partials_nr(4, k, q + r, n, out + r*TQ_FA_TILE); break;
        case 3: tq_fa_partials_nr(3, k, q + r, n, out + r*TQ_FA_TILE); break;
        case 2: tq_fa_partials_nr(2, k, q + r, n, out + r*TQ_FA_TILE); break;
        case 1: tq_fa_partials_nr(1, k, q + r, n, out + r*TQ_FA_TILE); break;
        default: break;
    }
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

#if defined(__AVX512F__) || defined(__AVX2__)
// q8_0 rows as float with SIMD (ggml-base's dequantizer is built without the CPU backend's
// -march flags): each value is float(q)*d, the product ggml-base's rounds, so the same floats.
#define TQ_FA_Q8_0_BLOCK 34 // fp16 d, then 32 int8 values
static void tq_fa_q8_0_to_float(const void * GGML_RESTRICT vx, float * GGML_RESTRICT y, int64_t k) {
    const uint8_t * x = (const uint8_t *) vx;
    for (int64_t i = 0; i < k/32; ++i, x += TQ_FA_Q8_0_BLOCK, y += 32) {
        ggml_fp16_t h;
        memcpy(&h, x, sizeof(h));
        const float d = GGML_CPU_FP16_TO_FP32(h);
#if defined(__AVX512F__)
        const __m512 vd = _mm512_set1_ps(d);
        for (int h16 = 0; h16 < 2; ++h16) {
            const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *) (x + 2 + 16*h16)));
            _mm512_storeu_ps(y + 16*h16, _mm512_mul_ps(_mm512_cvtepi32_ps(q), vd));
        }
#else
        const __m256 vd = _mm256_set1_ps(d);
        for (int h8 = 0; h8 < 4; ++h8) {
            const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *) (x + 2 + 8*h8)));
            _mm256_storeu_ps(y + 8*h8, _mm256_mul_ps(_mm256_cvtepi32_ps(q), vd));
        }
#endif
    }
}
#endif

ggml_to_float_t ggml_tq_cpu_fa_to_float(enum ggml_type type) {
    if (ggml_tq_is_tq(type)) {
        return ggml_tq_cpu_to_float(type);
    }
#if defined(__AVX512F__) || defined(__AVX2__)
    if (type == GGML_TYPE_Q8_0) {
        return tq_fa_q8_0_to_float;
    }
#endif
    if (type == GGML_TYPE_F32) {
        return NULL;
    }
    if (type == GGML_TYPE_F16) {
        return (ggml_to_float_t) ggml_cpu_fp16_to_fp32;
    }
    return ggml_get_type_traits(type)->to_float;
}

bool ggml_tq_cpu_fa_supported(const struct ggml_tensor * dst) {
    const struct ggml_tensor * q     = dst->src[0];
    const struct ggml_tensor * k     = dst->src[1];
    const struct ggml_tensor * v     = dst->src[2];
    const struct ggml_tensor * mask  = dst->src[3];
    const struct ggml_tensor * sinks = dst->src[4];

    if (!ggml_tq_is_tq(k->type) && !ggml_tq_is_tq(v->type)) {
        return false; // not ours to take
    }
    if (!tq_fa_enabled()) {
        return tq_fa_decline(TQ_FA_DECLINE_OFF);
    }
    if (q->type != GGML_TYPE_F32 || q->nb[0] != sizeof(float)) {
        return tq_fa_decline(TQ_FA_DECLINE_Q);
    }
    // whole 64-value blocks (every turbo row is; the dot's SIMD steps rely on it)
    if (k->ne[0] % 64 != 0 || v->ne[0] % 64 != 0 || k->ne[0] > TQ_FA_MAX_D || v->ne[0] > TQ_FA_MAX_D) {
        return tq_fa_decline(TQ_FA_DECLINE_HEAD_SIZE);
    }
    // a pass shares one KV head: K and V must group the query heads alike
    if (q->ne[2] % k->ne[2] != 0 || k->ne[2] != v->ne[2] || q->ne[3] % k->ne[3] != 0 || k->ne[3] != v->ne[3]) {
        return tq_fa_decline(TQ_FA_DECLINE_GROUPING);
    }
    if (mask && mask->type != GGML_TYPE_F16) {
        return tq_fa_decline(TQ_FA_DECLINE_MASK);
    }
    if (sinks && sinks->type != GGML_TYPE_F32) {
        return tq_fa_decline(TQ_FA_DECLINE_SINKS);
    }
    if (k->type != GGML_TYPE_F32 && ggml_tq_cpu_fa_to_float(k->type) == NULL) {
        return tq_fa_decline(TQ_FA_DECLINE_K_TYPE);
    }
    if (v->type != GGML_TYPE_F32 && ggml_tq_cpu_fa_to_float(v->type) == NULL) {
        return tq_fa_decline(TQ_FA_DECLINE_V_TYPE);
    }
    return true;
}

static int64_t tq_fa_n_chunks(const struct ggml_tensor * dst) {
    return (dst->src[1]->ne[1] + TQ_FA_CHUNK - 1)/TQ_FA_CHUNK;
}

static bool tq_fa_is_decode(const struct ggml_tensor * dst) {
    return dst->src[0]->ne[1] == 1 && dst->src[0]->ne[3] == 1;
}

// How a batch of query rows is cut into passes: g heads of one KV head's group times P
// positions, at most TQ_FA_ROWS rows each.
struct tq_fa_passes {
    int64_t G;     // query heads per KV head
    int64_t g;     // heads per pass
    int64_t n_grp; // row groups per KV head
    int64_t P;     // positions per pass
    int64_t n_blk; // blocks of positions
};

static struct tq_fa_passes tq_fa_passes_of(const struct ggml_tensor * dst) {
    const struct ggml_tensor * q = dst->src[0];
    struct tq_fa_passes ps;
    ps.G     = q->ne[2]/dst->src[1]->ne[2];
    ps.g     = MIN(ps.G, TQ_FA_ROWS);
    ps.n_grp = (ps.G + ps.g - 1)/ps.g;
    ps.P     = MAX(1, TQ_FA_ROWS/ps.g);
    ps.n_blk = (q->ne[1] + ps.P - 1)/ps.P;
    return ps;
}

// Floats per cell of a tensor's rows expanded for a batch, over its heads and sequences (0:
// f32 rows, read as they are).
static int64_t tq_fa_floats_per_cell(const struct ggml_tensor * t) {
    return ggml_tq_cpu_fa_to_float(t->type) == NULL ? 0 : t->ne[0]*t->ne[2]*t->ne[3];
}

// Cells per window in which a batch expands its K and V rows to float, whole chunks, as many
// as TQ_FA_EXPAND_BUDGET holds (one chunk at least); 0 where it reads the rows as they are.
// Every pass over a KV head would otherwise expand the same rows again: a prompt of N
// positions in a group of G heads takes about N*G/TQ_FA_ROWS passes per KV head, and each
// expansion costs about as much as the dots it feeds. Expanded once per window it is
// O(n_kv*d) for the whole op, split across the threads.
static int64_t tq_fa_window(const struct ggml_tensor * dst) {
    const struct ggml_tensor * q = dst->src[0];
    const struct ggml_tensor * k = dst->src[1];
    const struct tq_fa_passes ps = tq_fa_passes_of(dst);
    const int64_t passes_per_head = ps.n_grp*ps.n_blk*(q->ne[3]/k->ne[3]);
    const int64_t per_cell = tq_fa_floats_per_cell(k) + tq_fa_floats_per_cell(dst->src[2]);
    if (tq_fa_is_decode(dst) || passes_per_head <= 1 || per_cell == 0) {
        return 0;
    }
    const int64_t fit = (int64_t) (TQ_FA_EXPAND_BUDGET/sizeof(float))/per_cell/TQ_FA_CHUNK*TQ_FA_CHUNK;
    return MIN(MAX(fit, TQ_FA_CHUNK), tq_fa_n_chunks(dst)*TQ_FA_CHUNK);
}

static size_t tq_fa_aligned(size_t bytes) {
    return GGML_PAD(bytes, TQ_FA_ALIGN);
}

// A thread's scratch, carved from the work buffer.
struct tq_fa_scratch {
    float * k32;                // DK: one K row as float
    float * v32;                // DV: one V row as float
    float (*sc)[TQ_FA_TILE];    // TQ_FA_ROWS: scores of a tile
    float (*pw)[TQ_FA_TILE];    // TQ_FA_ROWS: softmax weights of a tile
    float (*pu)[TQ_FA_TILE];    // TQ_FA_ROWS: weights of the rows in vt
    float * vt;                 // TQ_FA_TILE*DV: the tile's used V rows as float
    float * acc;                // TQ_FA_ROWS*DV: a batch pass's chunk accumulators
#if TQ_FA_PARTIALS
    __m512 * part;              // TQ_FA_ROWS*TQ_FA_TILE: 16-lane partial sums of q.k, by row and key
#endif
};

// Lays the scratch out from base (NULL: only sizes it); returns its bytes, a multiple of TQ_FA_ALIGN.
static size_t tq_fa_scratch_at(char * base, int64_t DK, int64_t DV, struct tq_fa_scratch * s) {
    size_t off = 0;
#define TQ_FA_CARVE(field, bytes) do { if (base) { s->field = (void *) (base + off); } off += tq_fa_aligned(bytes); } while (0)
    TQ_FA_CARVE(k32, DK*sizeof(float));
    TQ_FA_CARVE(v32, DV*sizeof(float));
    TQ_FA_CARVE(sc,  TQ_FA_ROWS*TQ_FA_TILE*sizeof(float));
    TQ_FA_CARVE(pw,  TQ_FA_ROWS*TQ_FA_TILE*sizeof(float));
    TQ_FA_CARVE(pu,  TQ_FA_ROWS*TQ_FA_TILE*sizeof(float));
    TQ_FA_CARVE(vt,  TQ_FA_TILE*DV*sizeof(float));
    TQ_FA_CARVE(acc, TQ_FA_ROWS*DV*sizeof(float));
#if TQ_FA_PARTIALS
    TQ_FA_CARVE(part, TQ_FA_ROWS*TQ_FA_TILE*sizeof(__m512));
#endif
#undef TQ_FA_CARVE
    return off;
}

// What the op's threads share at the start of the work buffer (bytes, aligned):
// decode: [M, S, VKQ[DV]] per query head and chunk;
// batch: the window's K and V rows as float, then [M, S] per query row between windows.
static size_t tq_fa_shared_bytes(const struct ggml_tensor * dst) {
    const struct ggml_tensor * q = dst->src[0];
    if (tq_fa_is_decode(dst)) {
        return tq_fa_aligned(sizeof(float)*q->ne[2]*tq_fa_n_chunks(dst)*(2 + dst->src[2]->ne[0]));
    }
    const int64_t window = tq_fa_window(dst);
    const int64_t expanded = window*(tq_fa_floats_per_cell(dst->src[1]) + tq_fa_floats_per_cell(dst->src[2]));
    const int64_t n_rows = q->ne[1]*q->ne[2]*q->ne[3];
    return tq_fa_aligned(sizeof(float)*expanded) + tq_fa_aligned(sizeof(float)*2*n_rows);
}

size_t ggml_tq_cpu_fa_work_size(const struct ggml_tensor * dst, int n_threads) {
    if (!ggml_tq_cpu_fa_supported(dst)) {
        return 0;
    }
    const size_t per_thread = tq_fa_scratch_at(NULL, dst->src[1]->ne[0], dst->src[2]->ne[0], NULL);
    return TQ_FA_ALIGN + tq_fa_shared_bytes(dst) + (size_t) n_threads*per_thread;
}

// The work buffer from its first aligned byte.
static char * tq_fa_work(const struct ggml_compute_params * params) {
    return (char *) GGML_PAD((uintptr_t) params->wdata, TQ_FA_ALIGN);
}

// This thread's scratch, after the shared part of the work buffer.
static struct tq_fa_scratch tq_fa_scratch_of(const struct ggml_compute_params * params, const struct ggml_tensor * dst) {
    struct tq_fa_scratch s;
    const int64_t DK = dst->src[1]->ne[0];
    const int64_t DV = dst->src[2]->ne[0];
    const size_t per_thread = tq_fa_scratch_at(NULL, DK, DV, NULL);
    tq_fa_scratch_at(tq_fa_work(params) + tq_fa_shared_bytes(dst) + (size_t) params->ith*per_thread, DK, DV, &s);
    return s;
}

// What every query row of the op shares.
struct tq_fa_op {
    int64_t DK, DV;
    float   scale, softcap, max_bias, m0, m1;
    uint32_t n_head_log2;
    ggml_to_float_t k_to_float, v_to_float; // NULL: f32 rows, used as they are
    size_t  nbk1, nbv1;
};

// Up to TQ_FA_ROWS query rows over one KV head, with their chunk state.
struct tq_fa_pass {
    int n;
    const float       * q   [TQ_FA_ROWS];
    const ggml_fp16_t * mask[TQ_FA_ROWS]; // NULL: no mask
    float               slope[TQ_FA_ROWS];
    float             * acc [TQ_FA_ROWS]; // DV values: the chunk's accumulator
    float               M   [TQ_FA_ROWS];
    float               S   [TQ_FA_ROWS];
};

static struct tq_fa_op tq_fa_op_of(const struct ggml_tensor * dst) {
    const struct ggml_tensor * q = dst->src[0];
    const struct ggml_tensor * k = dst->src[1];
    const struct ggml_tensor * v = dst->src[2];
    struct tq_fa_op op;
    op.DK = k->ne[0];
    op.DV = v->ne[0];
    memcpy(&op.scale,    (const float *) dst->op_params + 0, sizeof(float));
    memcpy(&op.max_bias, (const float *) dst->op_params + 1, sizeof(float));
    memcpy(&op.softcap,  (const float *) dst->op_params + 2, sizeof(float));
    if (op.softcap != 0.0f) {
        op.scale /= op.softcap;
    }
    op.n_head_log2 = 1u << (uint32_t) floor(log2((double) q->ne[2]));
    op.m0 = powf(2.0f, -(op.max_bias       ) / op.n_head_log2);
    op.m1 = powf(2.0f, -(op.max_bias / 2.0f) / op.n_head_log2);
    op.k_to_float = ggml_tq_cpu_fa_to_float(k->type);
    op.v_to_float = ggml_tq_cpu_fa_to_float(v->type);
    op.nbk1 = k->nb[1];
    op.nbv1 = v->nb[1];
    return op;
}

// row r of a pass: query (iq1, iq2, iq3), its mask row and ALiBi slope
static void tq_fa_add_row(struct tq_fa_pass * p, const struct tq_fa_op * op, const struct ggml_tensor * dst,
                          int64_t iq1, int64_t iq2, int64_t iq3, float * acc) {
    const struct ggml_tensor * q    = dst->src[0];
    const struct ggml_tensor * mask = dst->src[3];
    const int r = p->n++;
    p->q[r]     = (const float *) ((const char *) q->data + iq1*q->nb[1] + iq2*q->nb[2] + iq3*q->nb[3]);
    p->mask[r]  = mask ? (const ggml_fp16_t *) ((const char *) mask->data + iq1*mask->nb[1] +
                                                (iq2 % mask->ne[2])*mask->nb[2] + (iq3 % mask->ne[3])*mask->nb[3]) : NULL;
    p->slope[r] = op->max_bias > 0.0f ? (iq2 < op->n_head_log2 ? powf(op->m0, iq2 + 1)
                                                               : powf(op->m1, 2*(iq2 - op->n_head_log2) + 1)) : 1.0f;
    p->acc[r]   = acc;
}

// The bookkeeping of a tile, per row and key, done 16 keys at a time on AVX-512. Each function
// computes the same floats as its plain loop (one multiply or add per value), only side by side.

// Bit j: key j of the tile has a finite mask term for some row of the pass (its K row is
// needed). Sets sc[r][j] to the mask term, slope*mask (0 without a mask).
static inline uint32_t tq_fa_mask_tile(const struct tq_fa_pass * p, int64_t it, int nt, float (*sc)[TQ_FA_TILE]) {
    uint32_t seen = 0;
#if defined(__AVX512F__)
    for (int r = 0; r < p->n; ++r) {
        for (int j0 = 0; j0 < nt; j0 += 16) {
            const int m = MIN(16, nt - j0);
            __m512 mv = _mm512_setzero_ps();
            if (p->mask[r]) {
                ggml_fp16_t h[16] = { 0 }; // a short last tile must not read past the mask row
                const ggml_fp16_t * src = p->mask[r] + it + j0;
                if (m < 16) {
                    memcpy(h, src, m*sizeof(ggml_fp16_t));
                    src = h;
                }
                mv = _mm512_mul_ps(_mm512_set1_ps(p->slope[r]), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) src)));
            }
            _mm512_storeu_ps(sc[r] + j0, mv);
            const __mmask16 live = (__mmask16) ((1u << m) - 1);
            seen |= (uint32_t) _mm512_mask_cmp_ps_mask(live, mv, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ) << j0;
        }
    }
#else
    for (int j = 0; j < nt; ++j) {
        for (int r = 0; r < p->n; ++r) {
            const float mv = p->mask[r] ? p->slope[r]*GGML_CPU_FP16_TO_FP32(p->mask[r][it + j]) : 0.0f;
            sc[r][j] = mv;
            seen |= (uint32_t) (mv != -INFINITY) << j;
        }
    }
#endif
    return seen;
}

// Bit j: some row of the pass gives key j of the tile a nonzero weight (its V row is needed).
// *mixed: some row gives one of those keys the weight 0 (masked for it, or an underflow).
static inline uint32_t tq_fa_used_keys(float (*pw)[TQ_FA_TILE], int n, int nt, bool * mixed) {
    uint32_t used = 0;
    uint32_t all  = 0; // bit j: every row gives key j a nonzero weight
#if defined(__AVX512F__)
    for (int j0 = 0; j0 < nt; j0 += 16) {
        const __mmask16 live = (__mmask16) ((1u << MIN(16, nt - j0)) - 1);
        __mmask16 u = 0;
        __mmask16 e = live;
        for (int r = 0; r < n; ++r) {
            const __mmask16 nz = _mm512_mask_cmp_ps_mask(live, _mm512_loadu_ps(pw[r] + j0), _mm512_setzero_ps(), _CMP_NEQ_UQ);
            u |= nz;
            e &= nz;
        }
        used |= (uint32_t) u << j0;
        all  |= (uint32_t) e << j0;
    }
#else
    all = (uint32_t) ((1ull << nt) - 1);
    for (int r = 0; r < n; ++r) {
        uint32_t nz = 0;
        for (int j = 0; j < nt; ++j) {
            nz |= (uint32_t) (pw[r][j] != 0.0f) << j;
        }
        used |= nz;
        all  &= nz;
    }
#endif
    *mixed = (used & ~all) != 0;
    return used;
}

// The pass's rows over KV cells [ic0, ic1) of one KV head: per row the chunk's maximum M,
// sum S and accumulator (M = -inf, S = 0, acc = 0 when every cell is masked for the row).
// k_rows and v_rows hold the head's rows from cell row0 on.
static void tq_fa_chunk(const struct tq_fa_op * op, struct tq_fa_pass * p, const struct tq_fa_scratch * s,
                        const char * k_rows, const char * v_rows, int64_t row0, int64_t ic0, int64_t ic1) {
    const int64_t DK = op->DK;
    const int64_t DV = op->DV;
    const int n = p->n;

    float * k32 = s->k32;
    float * v32 = s->v32;
    float (*sc)[TQ_FA_TILE] = s->sc;
    float (*pw)[TQ_FA_TILE] = s->pw;
#if TQ_FA_PARTIALS
    __m512 (*part)[TQ_FA_TILE] = (__m512 (*)[TQ_FA_TILE]) s->part;
#endif
#if TQ_FA_BLOCKED
    float (*pu)[TQ_FA_TILE] = s->pu;
    float * vt = s->vt;
    const bool blocked = DV <= TQ_FA_MAX_DV_BLOCKED && DV % GGML_F32_EPR == 0;
#endif

    for (int r = 0; r < n; ++r) {
        p->M[r] = -INFINITY;
        p->S[r] = 0.0f;
        memset(p->acc[r], 0, DV*sizeof(float));
    }

    for (int64_t it = ic0; it < ic1; it += TQ_FA_TILE) {
        const int nt = (int) MIN(TQ_FA_TILE, ic1 - it);

        // scores: one K row as float, a dot per query row that sees it
        const uint32_t seen = tq_fa_mask_tile(p, it, nt, sc);
        for (int j = 0; j < nt; ++j) {
            if (!(seen >> j & 1)) {
#if TQ_FA_PARTIALS
                for (int r = 0; r < n; ++r) {
                    part[r][j] = _mm512_setzero_ps();
                }
#endif
                continue;
            }
            const char * k_data = k_rows + (it + j - row0)*op->nbk1;
            const float * kf = (const float *) k_data;
            if (op->k_to_float) {
                op->k_to_float(k_data, k32, DK);
                kf = k32;
            }
#if TQ_FA_PARTIALS
            // every row of the pass, masked ones too (their sums are not used): no branches
            tq_fa_partials(kf, p->q, n, (int) DK, &part[0][j]);
#else
            for (int r = 0; r < n; ++r) {
                if (sc[r][j] == -INFINITY) {
                    continue;
                }
                float s = tq_fa_dot(kf, p->q[r], (int) DK)*op->scale;
                if (op->softcap != 0.0f) {
                    s = op->softcap*tanhf(s);
                }
                sc[r][j] += s;
            }
#endif
        }
#if TQ_FA_PARTIALS
        for (int r = 0; r < n; ++r) {
            for (int j = nt; j < GGML_PAD(nt, 16); ++j) {
                part[r][j] = _mm512_setzero_ps();
            }
            for (int j0 = 0; j0 < nt; j0 += 16) {
                const __m512 raw = tq_fa_hsum16_avx512(part[r] + j0);
                if (op->softcap == 0.0f) {
                    // sc += raw*scale where the mask term is finite, as the loop below does
                    const __m512 mv = _mm512_loadu_ps(sc[r] + j0);
                    const __mmask16 live = _mm512_cmp_ps_mask(mv, _mm512_set1_ps(-INFINITY), _CMP_NEQ_UQ);
                    _mm512_storeu_ps(sc[r] + j0, _mm512_mask_add_ps(mv, live, mv, _mm512_mul_ps(raw, _mm512_set1_ps(op->scale))));
                    continue;
                }
                float rawf[16];
                _mm512_storeu_ps(rawf, raw);
                for (int j = j0; j < MIN(j0 + 16, nt); ++j) {
                    if (sc[r][j] == -INFINITY) {
                        continue;
                    }
                    sc[r][j] += op->softcap*tanhf(rawf[j - j0]*op->scale);
                }
            }
        }
#endif

        // online softmax, one step per tile and row
        bool any = false;
        for (int r = 0; r < n; ++r) {
            const float mt = tq_fa_max(sc[r], nt);
            if (mt == -INFINITY) { // every key of the tile masked for this row
                memset(pw[r], 0, nt*sizeof(float));
                continue;
            }
            any = true;
            if (mt > p->M[r]) {
                const float ms = expf(p->M[r] - mt); // 0 for the first finite score
                if (p->M[r] != -INFINITY) {
                    ggml_vec_scale_f32((int) DV, p->acc[r], ms);
                }
                p->S[r] *= ms;
                p->M[r]  = mt;
            }
            p->S[r] += (float) ggml_vec_soft_max_f32(nt, pw[r], sc[r], p->M[r]);
        }
        if (!any) {
            continue;
        }

        // values: one V row as float, a multiply-add per query row
        bool mixed;
        const uint32_t used = tq_fa_used_keys(pw, n, nt, &mixed);
#if TQ_FA_BLOCKED
        if (blocked) {
            if (!mixed && op->v_to_float == NULL && used == (uint32_t) ((1ull << nt) - 1) && op->nbv1 == DV*sizeof(float)) {
                // every key used by every row, the rows float and adjacent (f32 V, or expanded for a batch)
                tq_fa_accumulate(false, n, nt, DV, p->acc, (const float (*)[TQ_FA_TILE]) pw,
                                 (const float *) (v_rows + (it - row0)*op->nbv1));
                continue;
            }
            int nu = 0;
            for (int j = 0; j < nt; ++j) {
                if (!(used >> j & 1)) {
                    continue;
                }
                const char * v_data = v_rows + (it + j - row0)*op->nbv1;
                if (op->v_to_float) {
                    op->v_to_float(v_data, vt + nu*DV, DV);
                } else {
                    memcpy(vt + nu*DV, v_data, DV*sizeof(float));
                }
                for (int r = 0; r < n; ++r) {
                    pu[r][nu] = pw[r][j];
                }
                nu++;
            }
            tq_fa_accumulate(mixed, n, nu, DV, p->acc, (const float (*)[TQ_FA_TILE]) pu, vt);
            continue;
        }
#endif
        for (int j = 0; j < nt; ++j) {
            if (!(used >> j & 1)) {
                continue;
            }
            const char * v_data = v_rows + (it + j - row0)*op->nbv1;
            const float * vf = (const float *) v_data;
            if (op->v_to_float) {
                op->v_to_float(v_data, v32, DV);
                vf = v32;
            }
            for (int r = 0; r < n; ++r) {
                if (pw[r][j] != 0.0f) { // a key masked for the row adds nothing, whatever its V row holds
                    ggml_vec_mad_f32((int) DV, p->acc[r], vf, pw[r][j]);
                }
            }
        }
    }
}

// (M, S, acc) of the chunks so far, then chunk (m, s, a): the one merge both paths use.
// An empty chunk (m = -inf) changes nothing; the first non-empty one is taken as it is.
static void tq_fa_merge(int64_t DV, float * M, float * S, float * acc, float m, float s, const float * a) {
    if (m == -INFINITY) {
        return;
    }
    if (*M == -INFINITY) {
        *M = m;
        *S = s;
        memcpy(acc, a, DV*sizeof(float));
        return;
    }
    if (m > *M) {
        const float ms = expf(*M - m);
        ggml_vec_scale_f32((int) DV, acc, ms);
        ggml_vec_mad_f32((int) DV, acc, a, 1.0f);
        *S = *S*ms + s;
        *M = m;
    } else {
        const float vs = expf(m - *M);
        ggml_vec_mad_f32((int) DV, acc, a, vs);
        *S = *S + s*vs;
    }
}

// the attention sink of head iq2 (if any), then acc /= S: acc is the output row
static void tq_fa_finish(const struct ggml_tensor * dst, int64_t iq2, int64_t DV, float M, float S, float * acc) {
    const struct ggml_tensor * sinks = dst->src[4];
    if (sinks) {
        const float s = ((const float *) sinks->data)[iq2];
        float ms = 1.0f;
        float vs = 1.0f;
        if (s > M) {
            ms = expf(M - s);
            ggml_vec_scale_f32((int) DV, acc, ms);
        } else {
            vs = expf(s - M);
        }
        S = S*ms + vs;
    }
    ggml_vec_scale_f32((int) DV, acc, S == 0.0f ? 0.0f : 1.0f/S);
}

static float * tq_fa_out_row(const struct ggml_tensor * dst, int64_t iq1, int64_t iq2, int64_t iq3) {
    // permute(0, 2, 1, 3), as ggml's path writes it
    return (float *) ((char *) dst->data + (iq3*dst->ne[2]*dst->ne[1] + iq2 + iq1*dst->ne[1])*dst->nb[1]);
}

// One query token: items (KV head, row group, chunk) are dealt to the threads, each writing
// [M, S, acc] per query head and chunk to the work buffer; after a barrier each thread merges
// the chunks of some heads in ascending order.
static void tq_fa_decode(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    const struct ggml_tensor * q = dst->src[0];
    const struct ggml_tensor * k = dst->src[1];
    const struct ggml_tensor * v = dst->src[2];
    const struct tq_fa_op op = tq_fa_op_of(dst);

    const int64_t n_head = q->ne[2];
    const int64_t G      = n_head/k->ne[2];
    const int64_t n_grp  = (G + TQ_FA_ROWS - 1)/TQ_FA_ROWS; // row groups per KV head
    const int64_t nc     = tq_fa_n_chunks(dst);
    const int64_t stride = 2 + op.DV;                       // one [M, S, acc]
    float * partials = (float *) tq_fa_work(params);        // [head][chunk][M, S, acc]
    const struct tq_fa_scratch s = tq_fa_scratch_of(params, dst);

    // Items run KV heads fastest and each thread takes a contiguous run of them, so a thread
    // reads a chunk's cells for every head in turn: a cell's rows of all heads share cache
    // lines, which the first head brings in and the others find in cache.
    const int64_t n_kv_head = k->ne[2];
    const int64_t n_items = n_kv_head*n_grp*nc;
    const int64_t item0 = n_items*params->ith/params->nth;
    const int64_t item1 = n_items*(params->ith + 1)/params->nth;
    for (int64_t item = item0; item < item1; ++item) {
        const int64_t ik2 = item % n_kv_head;
        const int64_t grp = (item / n_kv_head) % n_grp;
        const int64_t c   = item / (n_kv_head*n_grp);
        const int64_t h0  = ik2*G + grp*TQ_FA_ROWS;
        const int64_t h1  = MIN(h0 + TQ_FA_ROWS, (ik2 + 1)*G);

        struct tq_fa_pass p = { 0 };
        for (int64_t iq2 = h0; iq2 < h1; ++iq2) {
            tq_fa_add_row(&p, &op, dst, 0, iq2, 0, partials + (iq2*nc + c)*stride + 2);
        }
        tq_fa_chunk(&op, &p, &s, (const char *) k->data + ik2*k->nb[2], (const char *) v->data + ik2*v->nb[2],
                    0, c*TQ_FA_CHUNK, MIN((c + 1)*TQ_FA_CHUNK, k->ne[1]));
        for (int r = 0; r < p.n; ++r) {
            p.acc[r][-2] = p.M[r];
            p.acc[r][-1] = p.S[r];
        }
    }

    ggml_barrier(params->threadpool);

    for (int64_t iq2 = params->ith; iq2 < n_head; iq2 += params->nth) {
        float * out = tq_fa_out_row(dst, 0, iq2, 0);
        float M = -INFINITY;
        float S = 0.0f;
        memset(out, 0, op.DV*sizeof(float));
        for (int64_t c = 0; c < nc; ++c) {
            const float * part = partials + (iq2*nc + c)*stride;
            tq_fa_merge(op.DV, &M, &S, out, part[0], part[1], part + 2);
        }
        tq_fa_finish(dst, iq2, op.DV, M, S, out);
    }
}

// This thread's share of t's rows of cells [c0, c1) as float (nothing for f32 rows), row
// (i3, i2, i1) at ((i3*ne2 + i2)*(c1 - c0) + i1 - c0)*ne0: the floats each pass would get from
// expanding the row itself.
static void tq_fa_expand(const struct ggml_tensor * t, ggml_to_float_t to_float, float * out,
                         int64_t c0, int64_t c1, int ith, int nth) {
    if (to_float == NULL) {
        return;
    }
    const int64_t nw = c1 - c0;
    const int64_t n_rows = nw*t->ne[2]*t->ne[3];
    const int64_t r0 = n_rows*ith/nth;
    const int64_t r1 = n_rows*(ith + 1)/nth;
    for (int64_t r = r0; r < r1; ++r) {
        const int64_t i1 = c0 + r % nw;
        const int64_t i2 = (r / nw) % t->ne[2];
        const int64_t i3 = r / (nw*t->ne[2]);
        to_float((const char *) t->data + i1*t->nb[1] + i2*t->nb[2] + i3*t->nb[3], out + r*t->ne[0], t->ne[0]);
    }
}

// Several query tokens: a pass is (sequence, KV head, row group, block of positions) with
// at most TQ_FA_ROWS rows; passes are dealt to the threads, and each walks its chunks in
// order, merging each into the output rows as it goes. Where the rows are expanded to float
// the KV range is walked one window at a time (every thread expands a share of the window,
// then every pass takes the window's chunks), each row's M and S kept in the work buffer
// between windows; the chunks and their order are the same as in one walk.
static void tq_fa_batch(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    const struct ggml_tensor * q = dst->src[0];
    const struct ggml_tensor * k = dst->src[1];
    const struct ggml_tensor * v = dst->src[2];

    const struct tq_fa_op op = tq_fa_op_of(dst);

    const int64_t n_pos  = q->ne[1];
    const int64_t n_kv   = k->ne[1];
    const struct tq_fa_passes ps = tq_fa_passes_of(dst);
    const int64_t G      = ps.G, g = ps.g, n_grp = ps.n_grp, P = ps.P, n_blk = ps.n_blk;
    const int64_t rk3    = q->ne[3]/k->ne[3];
    const int64_t n_pass = q->ne[3]*k->ne[2]*n_grp*n_blk;

    // the shared part of the work buffer: the window's K and V rows as float ([i3][KV head][cell][d]),
    // then [M, S] per query row (iq3, iq1, iq2)
    const int64_t window = tq_fa_window(dst);
    float * wk = (float *) tq_fa_work(params);
    float * wv = wk + window*tq_fa_floats_per_cell(k);
    float * ms = (float *) ((char *) wk + tq_fa_aligned(sizeof(float)*window*
                                                         (tq_fa_floats_per_cell(k) + tq_fa_floats_per_cell(v))));
    const struct tq_fa_scratch s = tq_fa_scratch_of(params, dst);

    const int64_t step = window > 0 ? window : GGML_PAD(n_kv, TQ_FA_CHUNK);
    for (int64_t w0 = 0; w0 < n_kv; w0 += step) {
        const int64_t w1 = MIN(w0 + step, n_kv);
        struct tq_fa_op wop = op;
        if (window > 0) {
            if (w0 > 0) {
                ggml_barrier(params->threadpool); // every pass is done with the last window's floats
            }
            tq_fa_expand(k, op.k_to_float, wk, w0, w1, params->ith, params->nth);
            tq_fa_expand(v, op.v_to_float, wv, w0, w1, params->ith, params->nth);
            ggml_barrier(params->threadpool);
            if (op.k_to_float) {
                wop.k_to_float = NULL;
                wop.nbk1 = op.DK*sizeof(float);
            }
            if (op.v_to_float) {
                wop.v_to_float = NULL;
                wop.nbv1 = op.DV*sizeof(float);
            }
        }

        for (int64_t pass = params->ith; pass < n_pass; pass += params->nth) {
            const int64_t blk = pass % n_blk;
            const int64_t grp = (pass / n_blk) % n_grp;
            const int64_t ik2 = (pass / (n_blk*n_grp)) % k->ne[2];
            const int64_t iq3 = pass / (n_blk*n_grp*k->ne[2]);
            const int64_t h0  = ik2*G + grp*g;
            const int64_t h1  = MIN(h0 + g, (ik2 + 1)*G);

            struct tq_fa_pass p = { 0 };
            float * out[TQ_FA_ROWS];
            float * row_ms[TQ_FA_ROWS];
            int64_t head[TQ_FA_ROWS];
            for (int64_t iq1 = blk*P; iq1 < MIN((blk + 1)*P, n_pos); ++iq1) {
                for (int64_t iq2 = h0; iq2 < h1; ++iq2) {
                    out[p.n]    = tq_fa_out_row(dst, iq1, iq2, iq3);
                    row_ms[p.n] = ms + 2*((iq3*n_pos + iq1)*q->ne[2] + iq2);
                    head[p.n]   = iq2;
                    if (w0 == 0) {
                        memset(out[p.n], 0, op.DV*sizeof(float));
                        row_ms[p.n][0] = -INFINITY;
                        row_ms[p.n][1] = 0.0f;
                    }
                    tq_fa_add_row(&p, &op, dst, iq1, iq2, iq3, s.acc + p.n*op.DV);
                }
            }
            const int64_t kv_head = (iq3/rk3)*k->ne[2] + ik2; // in the expanded layout
            const int64_t nw = w1 - w0;
            const char * k_rows = op.k_to_float && window > 0 ? (const char *) (wk + kv_head*nw*op.DK)
                                : (const char *) k->data + ik2*k->nb[2] + (iq3/rk3)*k->nb[3] + w0*k->nb[1];
            const char * v_rows = op.v_to_float && window > 0 ? (const char *) (wv + kv_head*nw*op.DV)
                                : (const char *) v->data + ik2*v->nb[2] + (iq3/rk3)*v->nb[3] + w0*v->nb[1];
            for (int64_t c = w0/TQ_FA_CHUNK; c*TQ_FA_CHUNK < w1; ++c) {
                tq_fa_chunk(&wop, &p, &s, k_rows, v_rows, w0, c*TQ_FA_CHUNK, MIN((c + 1)*TQ_FA_CHUNK, n_kv));
                for (int r = 0; r < p.n; ++r) {
                    tq_fa_merge(op.DV, &row_ms[r][0], &row_ms[r][1], out[r], p.M[r], p.S[r], p.acc[r]);
                }
            }
            if (w1 == n_kv) {
                for (int r = 0; r < p.n; ++r) {
                    tq_fa_finish(dst, head[r], op.DV, row_ms[r][0], row_ms[r][1], out[r]);
                }
            }
        }
    }
}

void ggml_tq_cpu_fa(const struct ggml_compute_params * params, struct ggml_tensor * dst) {
    if (tq_fa_is_decode(dst)) {
        tq_fa_decode(params, dst);
    } else {
        tq_fa_batch(params, dst);
    }
}
