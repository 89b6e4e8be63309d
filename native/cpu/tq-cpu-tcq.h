// tq-gguf: CPU encoders of the trellis-coded value types tcq2 and tcq3.
//
// As for the turbo types (tq-cpu-quants.h), each has a plain C `_generic` version (the
// reference, tq-cpu-tcq.c) and SIMD versions in arch/<arch>/tq-tcq.c, and the unsuffixed
// name is the widest one the build targets. The SIMD encoders run one block in each lane
// of a register, so that every lane does the reference's float operations in its order.
// The decoders (dequantize_row_tcqN_cpu) give the reference decoder's floats
// (dequantize_row_tcqN in tq-tcq.c) without its sequential state: a value's state is its
// previous branch bits, all in the block's qb plane, so SIMD decodes 16 or 32 values at once.
#pragma once

#include "../tq-tcq.h"

#ifndef GGML_BACKEND_API
#define GGML_BACKEND_API extern // outside ggml: the standalone build the tests compile
#endif

#ifdef __cplusplus
extern "C" {
#endif

// ggml-cpu type traits
void quantize_row_tcq2(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_tcq3(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

// the decoders flash attention and the CPU's to_float use
void dequantize_row_tcq2_cpu(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_tcq3_cpu(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);

// generic C versions
void quantize_row_tcq2_generic(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_tcq3_generic(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void dequantize_row_tcq2_cpu_generic(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_tcq3_cpu_generic(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);

// Encoder variants, for the tests, numbered as enum ggml_tq_cpu_variant (tq-cpu-quants.h):
// 0 generic, 1 AVX2, 2 AVX-512, 15 the unsuffixed entry point the type traits use. bits is
// 2 or 3 (tcq2, tcq3). Returns NULL when this build or this processor does not have the variant.
typedef void (*tq_tcq_quantize_row_t)(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
GGML_BACKEND_API tq_tcq_quantize_row_t tq_tcq_cpu_quantize_row(int bits, int variant);
// the SIMD variants' part of it (arch/<arch>/tq-tcq.c; NULL everywhere without one)
tq_tcq_quantize_row_t tq_tcq_cpu_arch_quantize_row(int bits, int variant);

// The same for the decoders.
typedef void (*tq_tcq_dequantize_row_t)(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
GGML_BACKEND_API tq_tcq_dequantize_row_t tq_tcq_cpu_dequantize_row(int bits, int variant);
tq_tcq_dequantize_row_t tq_tcq_cpu_arch_dequantize_row(int bits, int variant);

#ifdef __cplusplus
}
#endif
