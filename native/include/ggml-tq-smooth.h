// tq-gguf key smoothing (docs/FORMAT.md, "Key smoothing"): the K cache stores k - mu,
// where mu is one fixed f32 vector per layer and KV head.
//
// Why it is exact: for a query q every score moves by the same q.mu, and softmax does
// not change when all scores of a row move together. Only the quantization error
// changes: a key that is mostly a constant offset (Qwen2.5's "outlier" channels) leaves
// a small residual that a 4-bit code can hold. Learned attention sinks and logit
// softcapping break the invariance, so llama.cpp refuses smoothing for such models.
//
// mu needs no calibration: it is the mean of the first rows written into an empty
// cache (the first GGML_TQ_SMOOTH_ROWS rows of that ubatch, the attention sink in row 0
// included) and stays fixed while the cache holds anything. It lives in the cache's own storage domain, after any rotation, so a
// rotated cache smooths R k - R mu = R (k - mu) with the same arithmetic.
#pragma once

#include "ggml.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// How many rows of the first ubatch mu averages at most: a whole default ubatch. Measured
// (FORMAT.md 11.6): the whole first ubatch took 16% (SmolLM2) and 27% (Gemma 3) more off
// turbo4 keys' KL divergence than its first 64 rows; leaving row 0 out made no difference
// at that size and cost 3-10% with small windows.
#define GGML_TQ_SMOOTH_ROWS 512

// A saved cache state that holds smoothed keys starts with this word ("TQMU") and its
// mu, before llama.cpp's stream count; an unsmoothed state starts with that count
// (1..n_seq_max), so the two cannot be mistaken for each other.
#define GGML_TQ_SMOOTH_STATE_MAGIC 0x554d5154u

// The rows mu is taken from: [first, first + n) of a ubatch of n_rows rows.
static inline void ggml_tq_smooth_window(int64_t n_rows, int64_t * first, int64_t * n) {
    *first = 0;
    *n = n_rows < GGML_TQ_SMOOTH_ROWS ? n_rows : GGML_TQ_SMOOTH_ROWS;
}

// mu of k [head, n_head_kv, n_rows] (f32) as a [head, n_head_kv] tensor.
static inline struct ggml_tensor * ggml_tq_smooth_mean(struct ggml_context * ctx, struct ggml_tensor * k) {
    int64_t first, n;
    ggml_tq_smooth_window(k->ne[2], &first, &n);
    struct ggml_tensor * rows = ggml_view_3d(ctx, k, k->ne[0], k->ne[1], n, k->nb[1], k->nb[2], first*k->nb[2]);
    // rows along dim 0, so that ggml_mean (a mean over dim 0) averages them
    rows = ggml_cont(ctx, ggml_permute(ctx, rows, 1, 2, 0, 3));
    return ggml_reshape_2d(ctx, ggml_mean(ctx, rows), k->ne[0], k->ne[1]);
}

#ifdef __cplusplus
}
#endif
