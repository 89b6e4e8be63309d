// tq-gguf: reference quantizer and dequantizer of the turbo types (docs/FORMAT.md).
//
// Plain C, one block at a time, in exactly the order the spec prescribes. The
// SIMD kernels (cpu/arch/...) and GPU shaders must produce the same bytes; the
// tests hold them to it through this file and the NumPy reference.
#include "ggml-quants.h"
#include "ggml-impl.h"
#include "tq-codebooks.h"

#include <assert.h>
#include <math.h>
#include <string.h>

static const struct tq_codebook tq_codebooks[3] = {
    { 2, tq_centroids_2bit, &tq_search_midpoints_2bit[0][0] },
    { 3, tq_centroids_3bit, &tq_search_midpoints_3bit[0][0] },
    { 4, tq_centroids_4bit, &tq_search_midpoints_4bit[0][0] },
};

const struct tq_codebook * tq_codebook_for(enum ggml_type type) {
    switch (type) {
        case GGML_TYPE_TURBO2: return &tq_codebooks[0];
        case GGML_TYPE_TURBO3: return &tq_codebooks[1];
        case GGML_TYPE_TURBO4: return &tq_codebooks[2];
        default:               return NULL;
    }
}

// The spec's fixed summation order for 64 floats, the "halving" tree: element
// i + 32 is added to element i, then i + 16, 8, 4, 2, 1. It maps onto vector
// register halves (AVX2, AVX-512, NEON) and onto GPU subgroup shuffles alike.
float tq_sum_tree(const float * v) {
    float s[32];
    for (int i = 0; i < 32; ++i) {
        s[i] = v[i] + v[i + 32];
    }
    for (int h = 16; h >= 1; h /= 2) {
        for (int i = 0; i < h; ++i) {
            s[i] = s[i] + s[i + h];
        }
    }
    return s[0];
}

// Each square is rounded to float before it is added (the tq sources are
// compiled with -ffp-contract=off, so no square-and-add is fused into an FMA).
float tq_sum_squares_ref(const float * v) {
    float sq[QK_TURBO];
    for (int i = 0; i < QK_TURBO; ++i) {
        sq[i] = v[i]*v[i];
    }
    return tq_sum_tree(sq);
}

// float -> fp16 with round to nearest even. A finite scale beyond the fp16 range
// saturates to 65504 rather than becoming infinity (docs/FORMAT.md, "Scale").
ggml_half tq_scale_to_fp16(float f) {
    if (f > 65504.0f) {
        return (ggml_half) 0x7BFF;
    }
    return GGML_FP32_TO_FP16(f);
}

float tq_condition(float v) {
    v = fminf(fmaxf(v, -TQ_CLAMP), TQ_CLAMP);
    return fabsf(v) < TQ_FLUSH ? 0.0f : v;
}

ggml_half tq_quantize_block_ref(const float * GGML_RESTRICT x, uint8_t * GGML_RESTRICT idx,
                                const struct tq_codebook * cb) {
    const int nmid = (1 << cb->bits) - 1;

    for (int i = 0; i < QK_TURBO; ++i) {
        if (!isfinite(x[i])) {
            memset(idx, 0, QK_TURBO);
            return (ggml_half) TQ_SCALE_NONFINITE;
        }
    }

    // range conditioning: no intermediate below can overflow or become subnormal
    float xc[QK_TURBO];
    for (int i = 0; i < QK_TURBO; ++i) {
        xc[i] = tq_condition(x[i]);
    }

    const float sumsq = tq_sum_squares_ref(xc);
    if (sumsq == 0.0f) {
        // every u_i is 0: the index rule below gives the index just under the middle
        memset(idx, (1 << (cb->bits - 1)) - 1, QK_TURBO);
        return 0;
    }

    const float norm = sqrtf(sumsq);
    const float inv  = 1.0f/norm;

    float u[QK_TURBO];
    for (int i = 0; i < QK_TURBO; ++i) {
        u[i] = xc[i]*inv;
    }
    float cs;
    tq_search_ref(xc, u, idx, &cs, cb);

    // stored scale: the norm corrected so that the reconstruction keeps the norm of x
    return tq_scale_to_fp16(norm/sqrtf(cs));
}

void tq_select_ref(const float * GGML_RESTRICT u, const float * GGML_RESTRICT mids, uint8_t * GGML_RESTRICT idx, int bits) {
    const int half = 1 << (bits - 1);
    for (int i = 0; i < QK_TURBO; ++i) {
        const float a = fabsf(u[i]);
        int cnt = 0;
        for (int j = 0; j < half - 1; ++j) {
            cnt += a > mids[j]; // a tie goes to the index nearer zero
        }
        idx[i] = (uint8_t) (u[i] > 0.0f ? half + cnt : half - 1 - cnt);
    }
}

void tq_search_ref(const float * GGML_RESTRICT x, const float * GGML_RESTRICT u, uint8_t * GGML_RESTRICT idx,
                   float * GGML_RESTRICT cs_best, const struct tq_codebook * cb) {
    const int nmid = (1 << (cb->bits - 1)) - 1;
    float best = -INFINITY;
    for (int t = 0; t < TQ_SEARCH_STEPS; ++t) {
        uint8_t k[QK_TURBO];
        float p[QK_TURBO], c2[QK_TURBO];
        tq_select_ref(u, cb->search_midpoints + t*nmid, k, cb->bits);
        for (int i = 0; i < QK_TURBO; ++i) {
            const float c = fabsf(cb->centroids[k[i]]);
            p[i]  = fabsf(x[i])*c;
            c2[i] = c*c;
        }
        const float cs    = tq_sum_tree(c2);
        const float score = tq_sum_tree(p)/sqrtf(cs);
        if (score > best) { // the first of equal scores stays
            best     = score;
            *cs_best = cs;
            memcpy(idx, k, QK_TURBO);
        }
    }
}

//
// bit packing
//

void tq_pack_turbo2(const uint8_t * GGML_RESTRICT idx, block_turbo2 * GGML_RESTRICT y) {
    for (int j = 0; j < 16; ++j) {
        y->qs[j] = (uint8_t) (idx[j] | idx[j + 16] << 2 | idx[j + 32] << 4 | idx[j + 48] << 6);
    }
}

void tq_pack_turbo3(const uint8_t * GGML_RESTRICT idx, block_turbo3 * GGML_RESTRICT y) {
    for (int j = 0; j < 16; ++j) {
        y->qs[j] = (uint8_t) ((idx[j] & 3) | (idx[j + 16] & 3) << 2 | (idx[j + 32] & 3) << 4 | (idx[j + 48] & 3) << 6);
    }
    for (int j = 0; j < 8; ++j) {
        uint8_t h = 0;
        for (int b = 0; b < 8; ++b) {
            h |= (uint8_t) ((idx[j + 8*b] >> 2) << b);
        }
        y->qh[j] = h;
    }
}

void tq_pack_turbo4(const uint8_t * GGML_RESTRICT idx, block_turbo4 * GGML_RESTRICT y) {
    for (int j = 0; j < 32; ++j) {
        y->qs[j] = (uint8_t) (idx[j] | idx[j + 32] << 4);
    }
}

void tq_unpack_turbo2(const block_turbo2 * GGML_RESTRICT x, uint8_t * GGML_RESTRICT idx) {
    for (int i = 0; i < QK_TURBO; ++i) {
        idx[i] = (x->qs[i % 16] >> (2*(i / 16))) & 3;
    }
}

void tq_unpack_turbo3(const block_turbo3 * GGML_RESTRICT x, uint8_t * GGML_RESTRICT idx) {
    for (int i = 0; i < QK_TURBO; ++i) {
        idx[i] = (uint8_t) (((x->qs[i % 16] >> (2*(i / 16))) & 3) | ((x->qh[i % 8] >> (i / 8)) & 1) << 2);
    }
}

void tq_unpack_turbo4(const block_turbo4 * GGML_RESTRICT x, uint8_t * GGML_RESTRICT idx) {
    for (int i = 0; i < QK_TURBO; ++i) {
        idx[i] = (x->qs[i % 32] >> (4*(i / 32))) & 15;
    }
}

//
// rows: one function per type, as ggml's type traits want them
//

#define TQ_ROW_FUNCS(N)                                                                                  \
void quantize_row_turbo##N##_ref(const float * GGML_RESTRICT x, block_turbo##N * GGML_RESTRICT y, int64_t k) { \
    assert(k % QK_TURBO == 0);                                                                           \
    const struct tq_codebook * cb = tq_codebook_for(GGML_TYPE_TURBO##N);                                 \
    uint8_t idx[QK_TURBO];                                                                               \
    for (int64_t b = 0; b < k/QK_TURBO; ++b) {                                                           \
        y[b].d = tq_quantize_block_ref(x + b*QK_TURBO, idx, cb);                                         \
        tq_pack_turbo##N(idx, &y[b]);                                                                    \
    }                                                                                                    \
}                                                                                                        \
                                                                                                         \
void dequantize_row_turbo##N(const block_turbo##N * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) { \
    assert(k % QK_TURBO == 0);                                                                           \
    const struct tq_codebook * cb = tq_codebook_for(GGML_TYPE_TURBO##N);                                 \
    uint8_t idx[QK_TURBO];                                                                               \
    for (int64_t b = 0; b < k/QK_TURBO; ++b) {                                                           \
        const float d = GGML_FP16_TO_FP32(x[b].d);                                                       \
        tq_unpack_turbo##N(&x[b], idx);                                                                  \
        for (int i = 0; i < QK_TURBO; ++i) {                                                             \
            y[b*QK_TURBO + i] = d*cb->centroids[idx[i]];                                                 \
        }                                                                                                \
    }                                                                                                    \
}                                                                                                        \
                                                                                                         \
size_t quantize_turbo##N(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows,        \
                         int64_t n_per_row, const float * imatrix) {                                     \
    (void) imatrix;                                                                                      \
    const size_t row_size = ggml_row_size(GGML_TYPE_TURBO##N, n_per_row);                                \
    for (int64_t r = 0; r < nrows; ++r) {                                                                \
        quantize_row_turbo##N##_ref(src + r*n_per_row, (block_turbo##N *) ((char *) dst + r*row_size), n_per_row); \
    }                                                                                                    \
    return nrows*row_size;                                                                               \
}

TQ_ROW_FUNCS(2)
TQ_ROW_FUNCS(3)
TQ_ROW_FUNCS(4)
