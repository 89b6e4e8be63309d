// tq-gguf: the fixed random rotation applied to turbo caches (docs/FORMAT.md, "Rotation").
#include "ggml-tq.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>

// splitmix64 (Steele, Lea, Flood 2014): a few integer operations that every
// language can reproduce bit for bit.
#define TQ_SIGN_SEED UINT64_C(0x7475726271756174) // "turbquat"

static uint64_t tq_splitmix64(uint64_t * state) {
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

void ggml_tq_rotation_signs(float * signs, int n) {
    uint64_t state = TQ_SIGN_SEED;
    for (int i = 0; i < n; ++i) {
        signs[i] = (tq_splitmix64(&state) >> 63) ? -1.0f : 1.0f;
    }
}

void ggml_tq_rotation_matrix(float * dst, int n) {
    assert(n > 0 && (n & (n - 1)) == 0 && n <= 4096);
    float signs[4096];
    ggml_tq_rotation_signs(signs, n);
    const float scale = 1.0f/sqrtf((float) n); // exact for n = 4^k (1/8 for 64)
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n; ++j) {
            // Sylvester's Hadamard matrix: H[i][j] = (-1)^popcount(i & j)
            unsigned bits = (unsigned) (i & j), parity = 0;
            for (; bits; bits &= bits - 1) {
                parity ^= 1;
            }
            const float h = parity ? -scale : scale;
            dst[i*n + j] = h*signs[j];
        }
    }
}
