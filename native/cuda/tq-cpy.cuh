// tq-gguf: CPY between f32 and a turbo or tcq type on CUDA: ggml_cpy_f32_turbo_cuda (quantize,
// one warp per 64-value block) and ggml_cpy_turbo_f32_cuda (decode), for either kind of type.
//
// Included by ggml-cuda's cpy.cu (patch 0006) after its cpy_q_f32 and cpy_blck_q_f32,
// which the decoding copy reuses; the dispatch in cpy.cu calls both launchers.
#pragma once

#include "tq-cuda.cuh"

// f32 -> turbo (the K-cache shift writes re-rotated rows back). As for set_rows,
// one warp quantizes one 64-value block (tq_cuda_quantize_block); threadIdx.y picks it.
#define CUDA_CPY_TURBO_WARPS 4

template <ggml_type type>
static __global__ void cpy_f32_turbo(const char * cx, char * cdst, const int64_t ne,
                                     const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
                                     const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11,
                                     const int64_t nb12, const int64_t nb13) {
    // the same for all lanes of a warp, so a warp returns as a whole
    const int64_t i = ((int64_t)blockIdx.x*CUDA_CPY_TURBO_WARPS + threadIdx.y)*QK_TURBO;

    if (i >= ne) {
        return;
    }

    const int64_t i03 = i/(ne00 * ne01 * ne02);
    const int64_t i02 = (i - i03*ne00*ne01*ne02 )/ (ne00*ne01);
    const int64_t i01 = (i - i03*ne00*ne01*ne02  -  i02*ne01*ne00) / ne00;
    const int64_t i00 = i - i03*ne00*ne01*ne02 - i02*ne01*ne00 - i01*ne00;
    const int64_t x_offset = i00*nb00 + i01*nb01 + i02*nb02 + i03 * nb03;

    const int64_t i13 = i/(ne10 * ne11 * ne12);
    const int64_t i12 = (i - i13*ne10*ne11*ne12) / (ne10*ne11);
    const int64_t i11 = (i - i13*ne10*ne11*ne12 - i12*ne10*ne11) / ne10;
    const int64_t i10 = i - i13*ne10*ne11*ne12 - i12*ne10*ne11 - i11*ne10;
    const int64_t dst_offset = (i10/QK_TURBO)*nb10 + i11*nb11 + i12*nb12 + i13*nb13;

    ggml_cuda_pdl_sync();
    tq_cuda_quantize<type>((const float *) (cx + x_offset), (typename tq_cuda_type<type>::block *) (cdst + dst_offset));
}

template <ggml_type type>
static void ggml_cpy_f32_turbo_cuda(
    const char * cx, char * cdst, const int64_t ne,
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11, const int64_t nb12, const int64_t nb13, cudaStream_t stream) {

    GGML_ASSERT(ne % QK_TURBO == 0);
    const int64_t num_blocks = (ne/QK_TURBO + CUDA_CPY_TURBO_WARPS - 1) / CUDA_CPY_TURBO_WARPS;
    GGML_ASSERT(num_blocks <= INT_MAX);
    cpy_f32_turbo<type><<<num_blocks, dim3(WARP_SIZE, CUDA_CPY_TURBO_WARPS), 0, stream>>>
        (cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13);
}

template <ggml_type type>
static void ggml_cpy_turbo_f32_cuda(
    const char * cx, char * cdst, const int64_t ne,
    const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t nb00, const int64_t nb01, const int64_t nb02,
    const int64_t nb03, const int64_t ne10, const int64_t ne11, const int64_t ne12, const int64_t nb10, const int64_t nb11, const int64_t nb12, const int64_t nb13, cudaStream_t stream) {

    const int64_t num_blocks = (ne/QK_TURBO + CUDA_CPY_BLOCK_SIZE - 1) / CUDA_CPY_BLOCK_SIZE;
    GGML_ASSERT(num_blocks <= INT_MAX);
    cpy_q_f32<cpy_blck_q_f32<dequantize_tq<type>, QK_TURBO>, QK_TURBO><<<num_blocks, CUDA_CPY_BLOCK_SIZE, 0, stream>>>
        (cx, cdst, ne, ne00, ne01, ne02, nb00, nb01, nb02, nb03, ne10, ne11, ne12, nb10, nb11, nb12, nb13);
}
