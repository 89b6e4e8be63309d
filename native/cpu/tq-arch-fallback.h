// tq-gguf: select the generic turbo and tcq kernels where no SIMD file provides them
// (the same scheme as ggml-cpu/arch-fallback.h).
#pragma once

#if defined(GGML_CPU_GENERIC) || !(defined(__x86_64__) || defined(_M_X64))
#define quantize_row_turbo2_generic        quantize_row_turbo2
#define quantize_row_turbo3_generic        quantize_row_turbo3
#define quantize_row_turbo4_generic        quantize_row_turbo4
#define dequantize_row_turbo2_cpu_generic  dequantize_row_turbo2_cpu
#define dequantize_row_turbo3_cpu_generic  dequantize_row_turbo3_cpu
#define dequantize_row_turbo4_cpu_generic  dequantize_row_turbo4_cpu
#define ggml_vec_dot_turbo2_f32_generic    ggml_vec_dot_turbo2_f32
#define ggml_vec_dot_turbo3_f32_generic    ggml_vec_dot_turbo3_f32
#define ggml_vec_dot_turbo4_f32_generic    ggml_vec_dot_turbo4_f32
#define quantize_row_tcq2_generic          quantize_row_tcq2
#define quantize_row_tcq3_generic          quantize_row_tcq3
#define dequantize_row_tcq2_cpu_generic    dequantize_row_tcq2_cpu
#define dequantize_row_tcq3_cpu_generic    dequantize_row_tcq3_cpu
#define GGML_TQ_CPU_NO_ARCH_KERNELS
#endif
