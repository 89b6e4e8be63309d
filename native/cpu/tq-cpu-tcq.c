// tq-gguf: generic C encoders and decoders of the trellis-coded types for the CPU backend
// (the reference itself), and the variants the tests compare.
#include "tq-arch-fallback.h"
#include "tq-cpu-tcq.h"

#define TQ_TCQ_GENERIC_FUNCS(N)                                                                          \
void quantize_row_tcq##N##_generic(const float * GGML_RESTRICT x, void * GGML_RESTRICT y, int64_t k) {   \
    quantize_row_tcq##N##_ref(x, (block_tcq##N *) y, k);                                                 \
}                                                                                                        \
                                                                                                         \
void dequantize_row_tcq##N##_cpu_generic(const void * GGML_RESTRICT x, float * GGML_RESTRICT y, int64_t k) { \
    dequantize_row_tcq##N((const block_tcq##N *) x, y, k);                                               \
}

TQ_TCQ_GENERIC_FUNCS(2)
TQ_TCQ_GENERIC_FUNCS(3)

#if defined(GGML_TQ_CPU_NO_ARCH_KERNELS)
tq_tcq_quantize_row_t tq_tcq_cpu_arch_quantize_row(int bits, int variant) {
    (void) bits;
    (void) variant;
    return NULL;
}

tq_tcq_dequantize_row_t tq_tcq_cpu_arch_dequantize_row(int bits, int variant) {
    (void) bits;
    (void) variant;
    return NULL;
}
#endif

// the numbers of enum ggml_tq_cpu_variant that are not an architecture's
#define TQ_TCQ_CPU_GENERIC 0
#define TQ_TCQ_CPU_DEFAULT 15

tq_tcq_quantize_row_t tq_tcq_cpu_quantize_row(int bits, int variant) {
    if (bits != 2 && bits != 3) {
        return NULL;
    }
    switch (variant) {
        case TQ_TCQ_CPU_GENERIC: return bits == 2 ? quantize_row_tcq2_generic : quantize_row_tcq3_generic;
        case TQ_TCQ_CPU_DEFAULT: return bits == 2 ? quantize_row_tcq2 : quantize_row_tcq3;
        default:                 return tq_tcq_cpu_arch_quantize_row(bits, variant);
    }
}

tq_tcq_dequantize_row_t tq_tcq_cpu_dequantize_row(int bits, int variant) {
    if (bits != 2 && bits != 3) {
        return NULL;
    }
    switch (variant) {
        case TQ_TCQ_CPU_GENERIC: return bits == 2 ? dequantize_row_tcq2_cpu_generic : dequantize_row_tcq3_cpu_generic;
        case TQ_TCQ_CPU_DEFAULT: return bits == 2 ? dequantize_row_tcq2_cpu : dequantize_row_tcq3_cpu;
        default:                 return tq_tcq_cpu_arch_dequantize_row(bits, variant);
    }
}
