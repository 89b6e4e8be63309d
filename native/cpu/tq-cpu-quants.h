// tq-gguf: CPU kernels of the turbo types.
//
// Each kernel has a plain C `_generic` version (tq-cpu-quants.c) and, where
// written, SIMD versions in arch/<arch>/tq-quants.c. As in ggml's own
// quants.c / arch-fallback.h, the unsuffixed name is the SIMD kernel when the
// target has one and the generic one otherwise.
#pragma once

#include "ggml.h"
#include "ggml-backend.h"
#include "ggml-quants.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ggml-cpu type traits
void quantize_row_turbo2(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo4(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);

void dequantize_row_turbo2_cpu(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo3_cpu(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo4_cpu(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);

// q is plain float (vec_dot_type F32): a query is used against thousands of keys, so
// it is not worth quantizing, and the codebook lookup needs no integer path.
void ggml_vec_dot_turbo2_f32(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
void ggml_vec_dot_turbo3_f32(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
void ggml_vec_dot_turbo4_f32(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);

// generic C versions
void quantize_row_turbo2_generic(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo3_generic(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void quantize_row_turbo4_generic(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo2_cpu_generic(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo3_cpu_generic(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void dequantize_row_turbo4_cpu_generic(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
void ggml_vec_dot_turbo2_f32_generic(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
void ggml_vec_dot_turbo3_f32_generic(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
void ggml_vec_dot_turbo4_f32_generic(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);

// The dequantizer the CPU backend uses for a turbo type (flash attention's V rows).
ggml_to_float_t ggml_tq_cpu_to_float(enum ggml_type type);

// FLASH_ATTN_EXT with a turbo K and/or V (tq-fattn.c): one pass over each K/V row serves
// every query row of its KV head in the pass, and a query row's result does not depend on
// the batch or the thread count. _supported says whether dst can take it (a declined op is
// logged once per reason); _work_size is the work buffer it needs for n_threads threads
// (bytes, on top of ggml's; bounded whatever the context); ggml_tq_cpu_fa computes dst on
// every thread of the op. GGML_TQ_FA=0 in the environment turns it off (for timing).
struct ggml_compute_params;
bool   ggml_tq_cpu_fa_supported(const struct ggml_tensor * dst);
GGML_BACKEND_API size_t ggml_tq_cpu_fa_work_size(const struct ggml_tensor * dst, int n_threads);
void   ggml_tq_cpu_fa(const struct ggml_compute_params * params, struct ggml_tensor * dst);
// Why the kernel can decline an op: the i-th reason's text (NULL past the last), and whether
// it declined one for that reason in this process.
GGML_BACKEND_API const char * ggml_tq_cpu_fa_decline_reason(int i);
GGML_BACKEND_API bool         ggml_tq_cpu_fa_declined(int i);
// The row expander flash attention uses for a K/V type (NULL for f32 rows, used as they are).
ggml_to_float_t ggml_tq_cpu_fa_to_float(enum ggml_type type);

// Ops the CPU backend runs on turbo tensors; everything else is refused up front.
bool ggml_tq_op_uses_turbo(const struct ggml_tensor * op);
bool ggml_tq_cpu_supports_op(const struct ggml_tensor * op);

//
// Kernel variants, for the tests: every variant this machine can run must give
// the bytes and floats of the generic one (docs/FORMAT.md).
//
enum ggml_tq_cpu_variant {
    GGML_TQ_CPU_GENERIC = 0,
    GGML_TQ_CPU_AVX2    = 1,
    GGML_TQ_CPU_AVX512  = 2,
    GGML_TQ_CPU_NEON    = 3,
    GGML_TQ_CPU_DEFAULT = 15, // what the type traits use
};

struct ggml_tq_cpu_kernels {
    void (*quantize_row)(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k);
    void (*dequantize_row)(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k);
    void (*vec_dot)(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc);
};

// Kernels of an architecture-specific variant for type, or NULL when this build
// or this processor does not have it (arch/<arch>/tq-quants.c).
const struct ggml_tq_cpu_kernels * ggml_tq_cpu_arch_kernels(enum ggml_type type, int variant);

GGML_BACKEND_API bool   ggml_tq_cpu_has_variant(int variant);
// turbo and tcq types (a tcq variant is the encoder or decoder of tq_tcq_cpu_quantize_row / _dequantize_row)
GGML_BACKEND_API void   ggml_tq_cpu_quantize_row(enum ggml_type type, int variant, const float * x, void * y, int64_t k);
GGML_BACKEND_API void   ggml_tq_cpu_dequantize_row(enum ggml_type type, int variant, const void * x, float * y, int64_t k);
GGML_BACKEND_API float  ggml_tq_cpu_vec_dot(enum ggml_type type, int variant, int n, const void * x, const float * y);

#ifdef __cplusplus
}
#endif
