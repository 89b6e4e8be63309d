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
// included), less the RoPE pairs that turn too far over the context, and stays fixed
// while the cache holds anything. It lives in the cache's own storage domain, after any
// rotation, so a rotated cache smooths R k - R mu = R (k - mu) with the same arithmetic.
#pragma once

#include "ggml.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// How many rows of the first ubatch mu averages at most: a whole default ubatch. Measured
// (FORMAT.md 11.6): the whole first ubatch took 16% (SmolLM2) and 27% (Gemma 3) more off
// turbo4 keys' KL divergence than its first 64 rows; leaving row 0 out made no difference
// at that size and cost 3-10% with small windows.
#define GGML_TQ_SMOOTH_ROWS 512

// The graph that learns mu adds, per layer, at most this many tensors to llama.cpp's graph
// budget: the mean (5), out of the rotation and back (8), dropping pairs (up to 15), the
// copy into the cache and the subtraction (2).
#define GGML_TQ_SMOOTH_GRAPH_NODES 40

// A saved cache state that holds smoothed keys starts with this word ("TQMU") and its
// mu, before llama.cpp's stream count; an unsmoothed state starts with that count
// (1..n_seq_max), so the two cannot be mistaken for each other.
#define GGML_TQ_SMOOTH_STATE_MAGIC 0x554d5154u

// The rows mu is taken from: [first, first + n) of a ubatch of n_rows rows.
static inline void ggml_tq_smooth_window(int64_t n_rows, int64_t * first, int64_t * n) {
    *first = 0;
    *n = n_rows < GGML_TQ_SMOOTH_ROWS ? n_rows : GGML_TQ_SMOOTH_ROWS;
}

// RoPE turns pair i of a key by theta_i = freq_scale * freq_base^(-2i/n_rot) radians per
// position, and the constant part c of a key turns with it: n positions on, the row holds
// R(n theta_i) c, and |R(phi) c - c| = 2 |c| sin(phi/2) exceeds |c| once phi > pi/3. So mu
// keeps only the pairs that turn by at most GGML_TQ_SMOOTH_MAX_TURN over the whole context:
// there subtracting it never leaves more than not subtracting would, at any position. The
// faster pairs average to little over the first ubatch anyway. Measured (FORMAT.md 11.7): on
// Gemma 3's sliding-window layers (base 10^4) the whole mu raised far keys' error 1.3-2.2x at
// 16K; with the fast pairs dropped it never did.
#define GGML_TQ_SMOOTH_MAX_TURN 1.0471975511965976 // pi/3

// The first RoPE pair mu keeps: pairs [0, pair0) turn by more than GGML_TQ_SMOOTH_MAX_TURN
// over n_pos positions (n_rot/2 when every rotated pair does). Dimensions past n_rot are not
// turned and are always kept.
static inline int64_t ggml_tq_smooth_first_pair(int64_t n_rot, float freq_base, float freq_scale, int64_t n_pos) {
    int64_t i = 0;
    for (; i < n_rot/2; ++i) {
        const double theta = (double) freq_scale * pow((double) freq_base, -2.0*(double) i/(double) n_rot);
        if (theta*(double) n_pos <= GGML_TQ_SMOOTH_MAX_TURN) {
            break;
        }
    }
    return i;
}

// mu [head, n_head_kv] (f32, the keys' own domain, before any rotation) with dims [a, b) of
// every head set to zero.
static inline struct ggml_tensor * ggml_tq_smooth_zero_dims(struct ggml_context * ctx, struct ggml_tensor * mu,
        int64_t a, int64_t b) {
    if (a >= b) {
        return mu;
    }
    const int64_t head = mu->ne[0];
    struct ggml_tensor * out = NULL;
    const int64_t edges[4] = { 0, a, b, head };
    for (int part = 0; part < 3; ++part) {
        const int64_t lo = edges[part], hi = edges[part + 1];
        if (lo >= hi) {
            continue;
        }
        struct ggml_tensor * piece = ggml_cont(ctx, ggml_view_2d(ctx, mu, hi - lo, mu->ne[1], mu->nb[1], lo*mu->nb[0]));
        if (part == 1) {
            piece = ggml_scale(ctx, piece, 0.0f);
        }
        out = out ? ggml_concat(ctx, out, piece, 0) : piece;
    }
    return out;
}

// mu with the pairs [0, pair0) of its first n_rot dims dropped: NEOX RoPE pairs dims (i, i + n_rot/2),
// the original layout pairs (2i, 2i + 1).
static inline struct ggml_tensor * ggml_tq_smooth_drop_pairs(struct ggml_context * ctx, struct ggml_tensor * mu,
        int64_t n_rot, int64_t pair0, bool neox) {
    if (neox) {
        mu = ggml_tq_smooth_zero_dims(ctx, mu, 0, pair0);
        return ggml_tq_smooth_zero_dims(ctx, mu, n_rot/2, n_rot/2 + pair0);
    }
    return ggml_tq_smooth_zero_dims(ctx, mu, 0, 2*pair0);
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
