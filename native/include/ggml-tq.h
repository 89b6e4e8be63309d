// tq-gguf additions to ggml: the public side of the turbo KV-cache types.
//
// turbo2/turbo3/turbo4 (GGML_TYPE_TURBO2..4) store blocks of 64 values as one
// fp16 scale plus a 2/3/4-bit Lloyd-Max codebook index per value. They are
// meant for data that was first rotated by the randomized Hadamard transform
// below; llama.cpp applies it to Q, K and V of turbo caches. docs/FORMAT.md is
// the normative description; this header is what other code links against.
#pragma once

#include "ggml.h"
#include "ggml-tq-types.h" // GGML_TQ_BLOCK, GGML_TQ_ROT_GROUP, ggml_tq_is_turbo (generated)

#ifdef __cplusplus
extern "C" {
#endif

// Content hash of the tq-gguf build this library came from ("cpu-0123abcd...").
// Python compares it with the hash of the current sources to detect a stale build.
GGML_API const char * ggml_tq_build_id(void);

// GGML_TYPE_COUNT of this build. ggml_type_name() and friends only assert on
// out-of-range ids, so callers outside C check ids against this first.
GGML_API int ggml_tq_type_count(void);

// The fixed random signs s[0..n) of the rotation (docs/FORMAT.md, "Rotation").
GGML_API void ggml_tq_rotation_signs(float * signs, int n);

// The rotation R = H_n * diag(s) as a row-major n*n matrix (y = R x), with H_n the
// orthonormal Walsh-Hadamard matrix; n is a power of two. R^-1 = R^T = diag(s) * H_n.
GGML_API void ggml_tq_rotation_matrix(float * dst, int n);

#ifdef __cplusplus
}
#endif
