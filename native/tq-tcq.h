// tq-gguf: the trellis-coded value types tcq2 and tcq3, their blocks and their reference
// encoder and decoder (docs/FORMAT.md, section 12).
//
// Plain C with no dependency on ggml, so that the tests and tools/bench/sptcq_speed.py can
// compile it on its own; inside ggml it sees ggml's ggml_half and GGML_API. Every float
// operation is the spec's, in its order: compile with -ffp-contract=off (a product that
// the compiler fuses into an FMA changes the bytes).
#pragma once

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(GGML_COMMON_DECL)
typedef uint16_t ggml_half; // outside ggml: the fp16 bits, as ggml's host type
#endif
#ifndef GGML_API
#define GGML_API extern
#endif
#ifndef GGML_RESTRICT
#ifdef __cplusplus
#define GGML_RESTRICT __restrict__
#else
#define GGML_RESTRICT restrict
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

// The blocks and tables (generated from the type table):
//   block_tcq2 { ggml_half d; uint8_t qs[8];  uint8_t qb[8]; }  18 bytes: rank i in bit i of qs;
//   block_tcq3 { ggml_half d; uint8_t qs[16]; uint8_t qb[8]; }  26 bytes: rank i in qs[i % 16],
//                bits 2*(i / 16) .. 2*(i / 16) + 1 (turbo2's arrangement);
//   both: the branch bit of value i in bit i % 8 of qb[i / 8].
#include "tq-tcq-tables.h"

// The most states, subsets and ranks of any type: the size of the encoders' work arrays.
#define TQ_TCQ_MAX_STATES 8
#define TQ_TCQ_MAX_RANKS  4
#define TQ_TCQ_SUBSETS    4
#define TQ_TCQ_MAX_SCALES 4

// One type's trellis and tables, as the generic code reads them.
struct tq_tcq_type {
    int           bits;        // per value: the branch bit, then bits - 1 bits of rank
    int           memory;      // 2^memory states; a block's last `memory` branch bits are 0
    int           scales;      // candidate scale factors
    size_t        block_size;  // bytes per block
    const float * levels;      // union codebook, 2^(bits + 1) levels ascending; subset j holds j, j + 4, ...
    const float * midpoints;   // [4][ranks - 1]: between neighbouring levels of each subset
    const float * inv_factors; // [scales]: 1/F[t]
    const float * factors_sq;  // [scales]: F[t]^2
    const uint8_t * subset;    // [states][2]: the subset of branch (state, branch bit)
};

GGML_API const struct tq_tcq_type tq_tcq2_type;
GGML_API const struct tq_tcq_type tq_tcq3_type;

// As the turbo types (FORMAT.md section 5, steps 1 and 2): the fp16 bits of the scale of a
// block that held a NaN or an infinity, and the range conditioning (values clamped to
// +-2^60, those below 2^-63 in magnitude made +0).
#define TQ_TCQ_SCALE_NONFINITE 0x7E00
#define TQ_TCQ_CLAMP 0x1p60f
#define TQ_TCQ_FLUSH 0x1p-63f

// float -> fp16 bits: round to nearest even, fp16 subnormals kept, finite values past the
// fp16 range saturated to 65504 (FORMAT.md section 5, step 8). Portable C.
GGML_API uint16_t tq_tcq_fp16(float f);
GGML_API float    tq_tcq_fp32(uint16_t h);

// One block's stored content before packing: ranks and branch bits one per byte.
struct tq_tcq_values {
    uint16_t d;
    uint8_t  rank[QK_TCQ];
    uint8_t  branch[QK_TCQ];
};

GGML_API void tq_tcq_pack(const struct tq_tcq_type * tp, const struct tq_tcq_values * v, void * GGML_RESTRICT block);
GGML_API void tq_tcq_unpack(const struct tq_tcq_type * tp, const void * GGML_RESTRICT block, struct tq_tcq_values * v);

// The reference encoder: one block of 64 floats into one packed block. Every other
// implementation must reproduce its bytes.
GGML_API void tq_tcq_quantize_block_ref(const struct tq_tcq_type * tp, const float * GGML_RESTRICT x, void * GGML_RESTRICT block);
// The decoder: one packed block into 64 floats.
GGML_API void tq_tcq_dequantize_block(const struct tq_tcq_type * tp, const void * GGML_RESTRICT block, float * GGML_RESTRICT y);

// rows, as ggml's type traits want them (k a multiple of QK_TCQ)
GGML_API void quantize_row_tcq2_ref(const float * GGML_RESTRICT x, block_tcq2 * GGML_RESTRICT y, int64_t k);
GGML_API void quantize_row_tcq3_ref(const float * GGML_RESTRICT x, block_tcq3 * GGML_RESTRICT y, int64_t k);
GGML_API void dequantize_row_tcq2(const block_tcq2 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
GGML_API void dequantize_row_tcq3(const block_tcq3 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);

// for ggml_quantize_chunk (no importance matrix: the types need no calibration)
GGML_API size_t quantize_tcq2(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
GGML_API size_t quantize_tcq3(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);

#ifdef __cplusplus
}
#endif
