// tq-gguf additions to ggml: public entry points of the turbo KV-cache types.
#pragma once

#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

// Content hash of the tq-gguf build this library came from ("cpu-0123abcd...").
// Python compares it with the hash of the current sources to detect a stale build.
GGML_API const char * ggml_tq_build_id(void);

// GGML_TYPE_COUNT of this build. ggml_type_name() and friends only assert on
// out-of-range ids, so callers outside C check ids against this first.
GGML_API int ggml_tq_type_count(void);

#ifdef __cplusplus
}
#endif
