// tq-gguf: reference encoder and decoder of the trellis-coded value types (docs/FORMAT.md, section 12).
//
// Plain C, one block at a time, in exactly the order the spec prescribes. The SIMD encoders
// (cpu/arch/x86/tq-tcq.c) and the NumPy reference (tq_gguf/reference/trellis.py) must give
// the same bytes; tests/unit/test_tcq.py holds them to it.
#include "tq-tcq.h"

#include <math.h>
#include <string.h>

static_assert((1 << TQ_TCQ2_MEMORY) <= TQ_TCQ_MAX_STATES && (1 << TQ_TCQ3_MEMORY) <= TQ_TCQ_MAX_STATES,
              "a type has more states than the work arrays");
static_assert(TQ_TCQ_MAX_STATES <= 8, "a value's decisions are kept in the bits of one byte");
static_assert(TQ_TCQ2_SCALES <= TQ_TCQ_MAX_SCALES && TQ_TCQ3_SCALES <= TQ_TCQ_MAX_SCALES, "too many scales");
static_assert((1 << (TQ_TCQ3_BITS - 1)) <= TQ_TCQ_MAX_RANKS, "too many ranks");

const struct tq_tcq_type tq_tcq2_type = {
    TQ_TCQ2_BITS, TQ_TCQ2_MEMORY, TQ_TCQ2_SCALES, sizeof(block_tcq2), tq_tcq2_levels, &tq_tcq2_subset_midpoints[0][0],
    tq_tcq2_inv_factors, tq_tcq2_factors_sq, &tq_tcq2_subset[0][0],
};

const struct tq_tcq_type tq_tcq3_type = {
    TQ_TCQ3_BITS, TQ_TCQ3_MEMORY, TQ_TCQ3_SCALES, sizeof(block_tcq3), tq_tcq3_levels, &tq_tcq3_subset_midpoints[0][0],
    tq_tcq3_inv_factors, tq_tcq3_factors_sq, &tq_tcq3_subset[0][0],
};

//
// numerics shared with the turbo types (FORMAT.md sections 3 and 5)
//

// the halving tree: element i + 32 is added to element i, then i + 16, 8, 4, 2, 1
static float tcq_tree(const float * v) {
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

// range conditioning: no intermediate of the encoder overflows, and only the products
// v = x * s can be subnormal, where they act as zero (FORMAT.md 12.5)
static float tcq_condition(float v) {
    v = fminf(fmaxf(v, -TQ_TCQ_CLAMP), TQ_TCQ_CLAMP);
    return fabsf(v) < TQ_TCQ_FLUSH ? 0.0f : v;
}

uint16_t tq_tcq_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    const uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7FFFFFFFu;
    if (a > 0x7F800000u) {
        return (uint16_t) (sign | 0x7E00u);      // NaN: the canonical quiet NaN
    }
    if (a >= 0x477FF000u) {
        return (uint16_t) (sign | 0x7BFFu);      // 65520 and above round past 65504: saturate
    }
    if (a < 0x38800000u) {                       // below 2^-14: an fp16 subnormal, or zero
        if (a <= 0x33000000u) {
            return (uint16_t) sign;              // 2^-25 and below: zero (2^-25 ties to the even 0)
        }
        const uint32_t m = (a & 0x7FFFFFu) | 0x800000u, shift = 126 - (a >> 23);
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        uint32_t h = m >> shift;
        h += rem > half || (rem == half && (h & 1));
        return (uint16_t) (sign | h);
    }
    uint32_t h = (a >> 13) - (112u << 10);      // rebias the exponent, keep 10 mantissa bits
    const uint32_t rem = a & 0x1FFFu;
    h += rem > 0x1000u || (rem == 0x1000u && (h & 1)); // a carry moves into the exponent, as it should
    return (uint16_t) (sign | h);
}

float tq_tcq_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t) (h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    uint32_t x;
    if (e == 0x1F) {
        x = sign | 0x7F800000u | (m << 13);      // infinity, NaN with its payload
    } else if (e != 0) {
        x = sign | ((e + 112) << 23) | (m << 13);
    } else if (m == 0) {
        x = sign;
    } else {                                     // subnormal m * 2^-24: normalise
        uint32_t mm = m, shift = 0;
        while (!(mm & 0x400u)) {
            mm <<= 1;
            ++shift;
        }
        x = sign | ((113 - shift) << 23) | ((mm & 0x3FFu) << 13);
    }
    float f;
    memcpy(&f, &x, sizeof(f));
    return f;
}

//
// packing (FORMAT.md 12.4)
//

static size_t tcq_rank_bytes(const struct tq_tcq_type * tp) {
    return (size_t) QK_TCQ * (size_t) (tp->bits - 1) / 8;
}

void tq_tcq_pack(const struct tq_tcq_type * tp, const struct tq_tcq_values * v, void * GGML_RESTRICT block) {
    uint8_t * out = (uint8_t *) block;
    uint8_t * qs  = out + 2;
    uint8_t * qb  = qs + tcq_rank_bytes(tp);
    out[0] = (uint8_t) (v->d & 0xFF);
    out[1] = (uint8_t) (v->d >> 8);
    memset(qs, 0, tcq_rank_bytes(tp) + QK_TCQ/8);
    for (int i = 0; i < QK_TCQ; ++i) {
        if (tp->bits == 3) {
            qs[i % 16] |= (uint8_t) (v->rank[i] << (2*(i / 16)));  // turbo2's arrangement
        } else {
            qs[i / 8] |= (uint8_t) (v->rank[i] << (i % 8));
        }
        qb[i / 8] |= (uint8_t) (v->branch[i] << (i % 8));
    }
}

void tq_tcq_unpack(const struct tq_tcq_type * tp, const void * GGML_RESTRICT block, struct tq_tcq_values * v) {
    const uint8_t * in = (const uint8_t *) block;
    const uint8_t * qs = in + 2;
    const uint8_t * qb = qs + tcq_rank_bytes(tp);
    v->d = (uint16_t) (in[0] | in[1] << 8);
    for (int i = 0; i < QK_TCQ; ++i) {
        v->rank[i]   = tp->bits == 3 ? (qs[i % 16] >> (2*(i / 16))) & 3 : (qs[i / 8] >> (i % 8)) & 1;
        v->branch[i] = (qb[i / 8] >> (i % 8)) & 1;
    }
}

//
// the encoder (FORMAT.md 12.5)
//

// rank of the nearest level of subset j: the midpoints below v (strict: on a midpoint, the lower level)
static inline int tcq_rank(const struct tq_tcq_type * tp, int j, float v) {
    const int nmid = (1 << (tp->bits - 1)) - 1;
    int r = 0;
    for (int k = 0; k < nmid; ++k) {
        r += v > tp->midpoints[j*nmid + k];
    }
    return r;
}

void tq_tcq_quantize_block_ref(const struct tq_tcq_type * tp, const float * GGML_RESTRICT x, void * GGML_RESTRICT block) {
    struct tq_tcq_values v;
    memset(&v, 0, sizeof(v));
    for (int i = 0; i < QK_TCQ; ++i) {
        if (!isfinite(x[i])) {
            v.d = TQ_TCQ_SCALE_NONFINITE;        // every other bit 0
            tq_tcq_pack(tp, &v, block);
            return;
        }
    }
    float xc[QK_TCQ], sq[QK_TCQ];
    for (int i = 0; i < QK_TCQ; ++i) {
        xc[i] = tcq_condition(x[i]);
        sq[i] = xc[i]*xc[i];
    }
    const float ss = tcq_tree(sq);
    if (ss == 0.0f) {
        tq_tcq_pack(tp, &v, block);              // d = 0 and every other bit 0
        return;
    }
    const float norm = sqrtf(ss);
    const float inv  = 1.0f/norm;
    const int   S    = 1 << tp->memory;

    // one Viterbi per candidate: its decisions (bit k of took_p1[t][i]: state k after value i
    // came from its second predecessor), and the least metric
    uint8_t took_p1[TQ_TCQ_MAX_SCALES][QK_TCQ];
    float best = INFINITY; // every metric is finite, so candidate 0 takes it
    int   win  = 0;
    for (int t = 0; t < tp->scales; ++t) {
        const float s = inv*tp->inv_factors[t];
        float cost[TQ_TCQ_MAX_STATES];
        for (int k = 0; k < S; ++k) {
            cost[k] = k == 0 ? 0.0f : INFINITY;  // every block starts in state 0
        }
        for (int i = 0; i < QK_TCQ; ++i) {
            const float v = xc[i]*s;
            float err[TQ_TCQ_SUBSETS];
            for (int j = 0; j < TQ_TCQ_SUBSETS; ++j) {
                const float d = v - tp->levels[j + TQ_TCQ_SUBSETS*tcq_rank(tp, j, v)];
                err[j] = d*d;
            }
            // state k is reached from p0 = k >> 1 and p1 = p0 + S/2 with branch bit k & 1
            float   next[TQ_TCQ_MAX_STATES];
            uint8_t took = 0;
            for (int k = 0; k < S; ++k) {
                const int   p0 = k >> 1, p1 = p0 | (S >> 1), b = k & 1;
                const float c0 = cost[p0] + err[tp->subset[2*p0 + b]];
                const float c1 = cost[p1] + err[tp->subset[2*p1 + b]];
                next[k] = c1 < c0 ? c1 : c0;     // a tie keeps p0
                took |= (uint8_t) ((c1 < c0) << k);
            }
            memcpy(cost, next, sizeof(float)*S);
            took_p1[t][i] = took;
        }
        const float metric = cost[0]*tp->factors_sq[t]; // every block ends in state 0
        if (metric < best) {                     // a tie keeps the earlier candidate
            best = metric;
            win  = t;
        }
    }

    // the winner's path, traced back from state 0; each value's rank is the one its search used
    const float s = inv*tp->inv_factors[win];
    float c2[QK_TCQ];
    int state = 0;
    for (int i = QK_TCQ - 1; i >= 0; --i) {
        const int prev = (state >> 1) | ((took_p1[win][i] >> state) & 1)*(S >> 1);
        const int j    = tp->subset[2*prev + (state & 1)];
        const int r    = tcq_rank(tp, j, xc[i]*s);
        const float c  = tp->levels[j + TQ_TCQ_SUBSETS*r];
        v.branch[i] = (uint8_t) (state & 1);
        v.rank[i]   = (uint8_t) r;
        c2[i] = c*c;
        state = prev;
    }
    // the norm-preserving scale of the turbo types: |x| / |L[levels]|
    v.d = tq_tcq_fp16(norm/sqrtf(tcq_tree(c2)));
    tq_tcq_pack(tp, &v, block);
}

//
// the decoder (FORMAT.md 12.6)
//

void tq_tcq_dequantize_block(const struct tq_tcq_type * tp, const void * GGML_RESTRICT block, float * GGML_RESTRICT y) {
    struct tq_tcq_values v;
    tq_tcq_unpack(tp, block, &v);
    const float d = tq_tcq_fp32(v.d);
    const int   S = 1 << tp->memory;
    int state = 0;
    for (int i = 0; i < QK_TCQ; ++i) {
        const int j = tp->subset[2*state + v.branch[i]];
        y[i] = d*tp->levels[j + TQ_TCQ_SUBSETS*v.rank[i]];
        state = ((state << 1) | v.branch[i]) & (S - 1);
    }
}

//
// rows: one function per type, as ggml's type traits want them
//

#define TQ_TCQ_ROW_FUNCS(N)                                                                              \
void quantize_row_tcq##N##_ref(const float * GGML_RESTRICT x, block_tcq##N * GGML_RESTRICT y, int64_t k) { \
    assert(k % QK_TCQ == 0);                                                                             \
    for (int64_t b = 0; b < k/QK_TCQ; ++b) {                                                             \
        tq_tcq_quantize_block_ref(&tq_tcq##N##_type, x + b*QK_TCQ, &y[b]);                               \
    }                                                                                                    \
}                                                                                                        \
                                                                                                         \
void dequantize_row_tcq##N(const block_tcq##N * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) {   \
    assert(k % QK_TCQ == 0);                                                                             \
    for (int64_t b = 0; b < k/QK_TCQ; ++b) {                                                             \
        tq_tcq_dequantize_block(&tq_tcq##N##_type, &x[b], y + b*QK_TCQ);                                 \
    }                                                                                                    \
}                                                                                                        \
                                                                                                         \
size_t quantize_tcq##N(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows,          \
                       int64_t n_per_row, const float * imatrix) {                                       \
    (void) imatrix;                                                                                      \
    const size_t row_size = (size_t) (n_per_row/QK_TCQ)*sizeof(block_tcq##N);                            \
    for (int64_t r = 0; r < nrows; ++r) {                                                                \
        quantize_row_tcq##N##_ref(src + r*n_per_row, (block_tcq##N *) ((char *) dst + r*row_size), n_per_row); \
    }                                                                                                    \
    return (size_t) nrows*row_size;                                                                      \
}

TQ_TCQ_ROW_FUNCS(2)
TQ_TCQ_ROW_FUNCS(3)
