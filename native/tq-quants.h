// tq-gguf: turbo2/turbo3/turbo4 blocks and their reference (de)quantizers.
//
// Internal to ggml: included at the end of ggml-quants.h, which provides
// ggml_half. The layout and every arithmetic step follow docs/FORMAT.md; this
// file is the plain C reference that the SIMD kernels in cpu/ and the GPU
// backends are tested against.
#pragma once

#include "ggml.h"
#include "ggml-tq.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// The blocks (generated from the type table): an fp16 scale d, then the index planes.
//   turbo2: index i sits in qs[i % 16], bits 2*(i / 16) .. 2*(i / 16) + 1;
//   turbo3: its low two bits as in turbo2, bit 2 in qh[i % 8], bit i / 8;
//   turbo4: index i sits in qs[i % 32], low nibble for i < 32, high nibble otherwise (like q4_0).
#include "tq-blocks.h"

// The codebook of a type: 2^bits centroids, and the scale search's TQ_SEARCH_STEPS rows of
// 2^(bits-1) - 1 positive midpoints, one row per candidate scale (FORMAT.md section 5, step 6).
struct tq_codebook {
    int           bits;
    const float * centroids;
    const float * search_midpoints;
};

GGML_API const struct tq_codebook * tq_codebook_for(enum ggml_type type);

// fp16 bits of the scale of a block that held a NaN or an infinity (a quiet NaN,
// so that the damage shows downstream instead of passing as plausible numbers)
#define TQ_SCALE_NONFINITE 0x7E00

// Range conditioning (FORMAT.md section 5, step 2): values are clamped to
// +-2^60 and those below 2^-63 in magnitude become +0, so no intermediate of the
// quantizer overflows or turns subnormal.
#define TQ_CLAMP 0x1p60f
#define TQ_FLUSH 0x1p-63f

// The spec's pieces, shared with the SIMD kernels.
GGML_API float     tq_condition(float v);
GGML_API float     tq_sum_tree(const float * v);        // fixed halving tree over 64 values
GGML_API float     tq_sum_squares_ref(const float * v); // the same tree over the squares
GGML_API ggml_half tq_scale_to_fp16(float scale);       // round to nearest even, saturating

// Reference block quantizer: 64 floats -> codebook indices (one per byte) and the fp16 scale.
// Every other implementation must reproduce its output exactly.
GGML_API ggml_half tq_quantize_block_ref(const float * GGML_RESTRICT x, uint8_t * GGML_RESTRICT idx,
                                         const struct tq_codebook * cb);

// Step 6 on its own: the indices of one candidate (mids = its positive midpoints), and the
// search over all candidates, giving the best one's indices and its sum of squared centroids.
GGML_API void tq_select_ref(const float * GGML_RESTRICT u, const float * GGML_RESTRICT mids, uint8_t * GGML_RESTRICT idx, int bits);
GGML_API void tq_search_ref(const float * GGML_RESTRICT x, const float * GGML_RESTRICT u, uint8_t * GGML_RESTRICT idx,
                            float * GGML_RESTRICT cs_best, const struct tq_codebook * cb);

// Pack / unpack 64 one-byte indices into a block's bit planes.
GGML_API void tq_pack_turbo2(const uint8_t * GGML_RESTRICT idx, block_turbo2 * GGML_RESTRICT y);
GGML_API void tq_pack_turbo3(const uint8_t * GGML_RESTRICT idx, block_turbo3 * GGML_RESTRICT y);
GGML_API void tq_pack_turbo4(const uint8_t * GGML_RESTRICT idx, block_turbo4 * GGML_RESTRICT y);
GGML_API void tq_unpack_turbo2(const block_turbo2 * GGML_RESTRICT x, uint8_t * GGML_RESTRICT idx);
GGML_API void tq_unpack_turbo3(const block_turbo3 * GGML_RESTRICT x, uint8_t * GGML_RESTRICT idx);
GGML_API void tq_unpack_turbo4(const block_turbo4 * GGML_RESTRICT x, uint8_t * GGML_RESTRICT idx);

GGML_API void quantize_row_turbo2_ref(const float * GGML_RESTRICT x, block_turbo2 * GGML_RESTRICT y, int64_t k);
GGML_API void quantize_row_turbo3_ref(const float * GGML_RESTRICT x, block_turbo3 * GGML_RESTRICT y, int64_t k);
GGML_API void quantize_row_turbo4_ref(const float * GGML_RESTRICT x, block_turbo4 * GGML_RESTRICT y, int64_t k);

GGML_API void dequantize_row_turbo2(const block_turbo2 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
GGML_API void dequantize_row_turbo3(const block_turbo3 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
GGML_API void dequantize_row_turbo4(const block_turbo4 * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);

// for ggml_quantize_chunk (no importance matrix: the types need no calibration)
GGML_API size_t quantize_turbo2(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
GGML_API size_t quantize_turbo3(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);
GGML_API size_t quantize_turbo4(const float * GGML_RESTRICT src, void * GGML_RESTRICT dst, int64_t nrows, int64_t n_per_row, const float * imatrix);

#ifdef __cplusplus
}
#endif
