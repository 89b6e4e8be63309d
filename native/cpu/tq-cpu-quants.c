// tq-gguf: generic C kernels of the turbo types for the CPU backend, the op
// whitelist, and the hooks the tests use to compare kernel variants.
#include "tq-arch-fallback.h"
#include "tq-cpu-quants.h"
#include "tq-cpu-tcq.h"

#include "ggml-impl.h"

#include <assert.h>

//
// generic kernels: the reference itself, and a dot product in the spec's order
//

#define TQ_GENERIC_FUNCS(N)                                                                              \
void quantize_row_turbo##N##_generic(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) { \
    quantize_row_turbo##N##_ref(x, (block_turbo##N *) y, k);                                             \
}                                                                                                        \
                                                                                                         \
void dequantize_row_turbo##N##_cpu_generic(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) { \
    dequantize_row_turbo##N((const block_turbo##N *) x, y, k);                                           \
}                                                                                                        \
                                                                                                         \
void ggml_vec_dot_turbo##N##_f32_generic(int n, float * GGML_RESTRICT s, size_t bs, const void * GGML_RESTRICT vx, \
                                          size_t bx, const void * GGML_RESTRICT vy, size_t by, int nrc) { \
    assert(n % QK_TURBO == 0);                                                                           \
    assert(nrc == 1);                                                                                    \
    GGML_UNUSED(bs); GGML_UNUSED(bx); GGML_UNUSED(by); GGML_UNUSED(nrc);                                 \
    const block_turbo##N * x = (const block_turbo##N *) vx;                                              \
    const float * q = (const float *) vy;                                                                \
    const struct tq_codebook * cb = tq_codebook_for(GGML_TYPE_TURBO##N);                                 \
    uint8_t idx[QK_TURBO];                                                                               \
    float   p[QK_TURBO];                                                                                 \
    float sum = 0.0f;                                                                                    \
    for (int b = 0; b < n/QK_TURBO; ++b) {                                                               \
        tq_unpack_turbo##N(&x[b], idx);                                                                  \
        for (int i = 0; i < QK_TURBO; ++i) {                                                             \
            p[i] = cb->centroids[idx[i]]*q[b*QK_TURBO + i];                                              \
        }                                                                                                \
        sum += GGML_FP16_TO_FP32(x[b].d)*tq_sum_tree(p);                                             \
    }                                                                                                    \
    *s = sum;                                                                                            \
}

TQ_GENERIC_FUNCS(2)
TQ_GENERIC_FUNCS(3)
TQ_GENERIC_FUNCS(4)

ggml_to_float_t ggml_tq_cpu_to_float(enum ggml_type type) {
    switch (type) {
        case GGML_TYPE_TURBO2: return dequantize_row_turbo2_cpu;
        case GGML_TYPE_TURBO3: return dequantize_row_turbo3_cpu;
        case GGML_TYPE_TURBO4: return dequantize_row_turbo4_cpu;
        case GGML_TYPE_TCQ2:   return dequantize_row_tcq2_cpu;
        case GGML_TYPE_TCQ3:   return dequantize_row_tcq3_cpu;
        default:               return NULL;
    }
}

//
// supported ops
//

bool ggml_tq_op_uses_turbo(const struct ggml_tensor * op) {
    if (ggml_tq_is_tq(op->type)) {
        return true;
    }
    for (int i = 0; i < GGML_MAX_SRC; ++i) {
        if (op->src[i] && ggml_tq_is_tq(op->src[i]->type)) {
            return true;
        }
    }
    return false;
}

static bool tq_is_float(enum ggml_type type) {
    return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16;
}

bool ggml_tq_cpu_supports_op(const struct ggml_tensor * op) {
    const struct ggml_tensor * src0 = op->src[0];
    switch (op->op) {
        case GGML_OP_NONE:
        case GGML_OP_RESHAPE:
        case GGML_OP_VIEW:
        case GGML_OP_PERMUTE:
        case GGML_OP_TRANSPOSE:
            return true;
        case GGML_OP_SET_ROWS: // float rows quantized into a turbo or tcq cache
            return ggml_tq_is_tq(op->type) && (src0->type == GGML_TYPE_F32 || src0->type == GGML_TYPE_F16);
        case GGML_OP_GET_ROWS: // turbo or tcq rows expanded to f32
            return ggml_tq_is_tq(src0->type) && op->type == GGML_TYPE_F32;
        case GGML_OP_CPY:
        case GGML_OP_DUP:
            if (ggml_tq_is_tq(op->type)) {
                return tq_is_float(src0->type) || src0->type == op->type; // quantize, or copy blocks
            }
            return op->type == GGML_TYPE_F32; // out of turbo or tcq: dequantize to f32 only
        case GGML_OP_FLASH_ATTN_EXT: // turbo K and/or turbo or tcq V, any K/V type on the other side;
                                     // a tcq type has no dot product, so never K
            return op->src[0]->type == GGML_TYPE_F32 && !ggml_tq_is_trellis(op->src[1]->type);
        default:
            return false;
    }
}

//
// kernel variants for the tests
//

#define TQ_KERNELS(N) { quantize_row_turbo##N##_generic, dequantize_row_turbo##N##_cpu_generic, ggml_vec_dot_turbo##N##_f32_generic }
static const struct ggml_tq_cpu_kernels tq_generic_kernels[3] = { TQ_KERNELS(2), TQ_KERNELS(3), TQ_KERNELS(4) };

#define TQ_DEFAULT_KERNELS(N) { quantize_row_turbo##N, dequantize_row_turbo##N##_cpu, ggml_vec_dot_turbo##N##_f32 }
static const struct ggml_tq_cpu_kernels tq_default_kernels[3] = { TQ_DEFAULT_KERNELS(2), TQ_DEFAULT_KERNELS(3), TQ_DEFAULT_KERNELS(4) };

#if defined(GGML_TQ_CPU_NO_ARCH_KERNELS)
const struct ggml_tq_cpu_kernels * ggml_tq_cpu_arch_kernels(enum ggml_type type, int variant) {
    GGML_UNUSED(type);
    GGML_UNUSED(variant);
    return NULL;
}
#endif

static const struct ggml_tq_cpu_kernels * tq_kernels(enum ggml_type type, int variant) {
    if (!ggml_tq_is_turbo(type)) {
        return NULL;
    }
    const int t = type - GGML_TYPE_TURBO2;
    switch (variant) {
        case GGML_TQ_CPU_GENERIC: return &tq_generic_kernels[t];
        case GGML_TQ_CPU_DEFAULT: return &tq_default_kernels[t];
        default:                  return ggml_tq_cpu_arch_kernels(type, variant);
    }
}

bool ggml_tq_cpu_has_variant(int variant) {
    return tq_kernels(GGML_TYPE_TURBO2, variant) != NULL;
}

// the tcq types' bits per value (their variants are numbered as ours: tq-cpu-tcq.h)
static int tq_tcq_bits(enum ggml_type type) {
    return type == GGML_TYPE_TCQ2 ? 2 : 3;
}

void ggml_tq_cpu_quantize_row(enum ggml_type type, int variant, const float * x, void * y, int64_t k) {
    if (ggml_tq_is_trellis(type)) {
        const tq_tcq_quantize_row_t fn = tq_tcq_cpu_quantize_row(tq_tcq_bits(type), variant);
        GGML_ASSERT(fn && "tcq encoder variant not available");
        fn(x, y, k);
        return;
    }
    const struct ggml_tq_cpu_kernels * kern = tq_kernels(type, variant);
    GGML_ASSERT(kern && "turbo kernel variant not available");
    kern->quantize_row(x, y, k);
}

void ggml_tq_cpu_dequantize_row(enum ggml_type type, int variant, const void * x, float * y, int64_t k) {
    if (ggml_tq_is_trellis(type)) {
        const tq_tcq_dequantize_row_t fn = tq_tcq_cpu_dequantize_row(tq_tcq_bits(type), variant);
        GGML_ASSERT(fn && "tcq decoder variant not available");
        fn(x, y, k);
        return;
    }
    const struct ggml_tq_cpu_kernels * kern = tq_kernels(type, variant);
    GGML_ASSERT(kern && "turbo kernel variant not available");
    kern->dequantize_row(x, y, k);
}

float ggml_tq_cpu_vec_dot(enum ggml_type type, int variant, int n, const void * x, const float * y) {
    const struct ggml_tq_cpu_kernels * kern = tq_kernels(type, variant);
    GGML_ASSERT(kern && "turbo kernel variant not available");
    float s = 0.0f;
    kern->vec_dot(n, &s, 0, x, 0, y, 0, 1);
    return s;
}
