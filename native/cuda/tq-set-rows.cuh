// tq-gguf: SET_ROWS into a turbo or trellis-coded (tcq) type on CUDA: k_set_rows_turbo and set_rows_cuda_turbo.
//
// Included by ggml-cuda's set-rows.cu (patch 0006), whose dispatch calls
// set_rows_cuda_turbo<idx_t, type>; it relies on common.cuh's fast division helpers.
#pragma once

#include "tq-cuda.cuh"

// Turbo and tcq set_rows. Unlike k_set_rows_quant (one thread per block) a whole warp
// quantizes one block of 64 values, because FORMAT.md fixes the sum of squares to a
// halving tree that is exactly a 32-lane shuffle butterfly (and a tcq block's Viterbi runs
// its candidates and states on the lanes). threadIdx.y picks the block.
#define CUDA_SET_ROWS_TURBO_WARPS 4

template <typename idx_t, ggml_type type>
static __global__ void k_set_rows_turbo(const float * __restrict__ src0,
                                        const idx_t * __restrict__ src1,
                                        typename tq_cuda_type<type>::block * __restrict__ dst,
                                        const int64_t ne_total,
                                        const int64_t s01,
                                        const int64_t s02,
                                        const int64_t s03,
                                        const int64_t s10,
                                        const int64_t s11,
                                        const int64_t s12,
                                        const int64_t s1,
                                        const int64_t s2,
                                        const int64_t s3,
                                        const uint3   ne00,
                                        const uint3   ne01,
                                        const uint3   ne02,
                                        const uint3   ne11_fd,
                                        const uint3   ne12_fd) {
    typedef typename tq_cuda_type<type>::block block_type;

    // the same for all lanes of a warp, so a warp returns as a whole
    const int64_t i = int64_t(blockIdx.x)*CUDA_SET_ROWS_TURBO_WARPS + threadIdx.y;

    if (i >= ne_total) {
        return;
    }

    const int64_t i_base = i * QK_TURBO;
    uint32_t      tmp    = (uint32_t) i_base;
    uint2         div_mod;

    div_mod           = fast_div_modulo(tmp, ne00);
    const int64_t i00 = div_mod.y;
    tmp               = div_mod.x;

    div_mod           = fast_div_modulo(tmp, ne01);
    const int64_t i01 = div_mod.y;
    tmp               = div_mod.x;

    div_mod           = fast_div_modulo(tmp, ne02);
    const int64_t i02 = div_mod.y;
    const int64_t i03 = div_mod.x;

    const int64_t i12 = fastmodulo((uint32_t) i03, ne12_fd);
    const int64_t i11 = fastmodulo((uint32_t) i02, ne11_fd);
    const int64_t i10 = i01;

    ggml_cuda_pdl_sync();
    const int64_t dst_row = *(src1 + i10*s10 + i11*s11 + i12*s12);

    const float * src0_row    = src0 + i01*s01 + i02*s02 + i03*s03;
    block_type  * dst_row_ptr = dst + (dst_row*s1 + i02*s2 + i03*s3) / sizeof(block_type);

    tq_cuda_quantize<type>(src0_row + i00, dst_row_ptr + i00/QK_TURBO);
}

template <typename idx_t, ggml_type type>
static void set_rows_cuda_turbo(
        const float * src0_d, const idx_t * src1_d, void * dst_d,
        const int64_t ne00, const int64_t ne01, const int64_t ne02, const int64_t ne03,
        const int64_t ne11, const int64_t ne12,
        const size_t nb01, const size_t nb02, const size_t nb03,
        const size_t nb10, const size_t nb11, const size_t nb12,
        const size_t nb1, const size_t nb2, const size_t nb3,
        cudaStream_t stream) {
    typedef typename tq_cuda_type<type>::block block_type;

    GGML_ASSERT(ne00 % QK_TURBO == 0);
    const int64_t ne_total = (ne00 * ne01 * ne02 * ne03) / QK_TURBO;
    const dim3 block_size(WARP_SIZE, CUDA_SET_ROWS_TURBO_WARPS);
    const dim3 grid_size((ne_total + CUDA_SET_ROWS_TURBO_WARPS - 1) / CUDA_SET_ROWS_TURBO_WARPS);

    if (ne_total > 0 && ne00 > 0 && ne01 > 0 && ne02 > 0 && ne11 > 0 && ne12 > 0) {
        k_set_rows_turbo<idx_t, type><<<grid_size, block_size, 0, stream>>>(
            src0_d, src1_d, (block_type *) dst_d, ne_total,
            nb01/sizeof(float), nb02/sizeof(float), nb03/sizeof(float),
            nb10/sizeof(idx_t), nb11/sizeof(idx_t), nb12/sizeof(idx_t),
            nb1, nb2, nb3,
            init_fastdiv_values((uint32_t) ne00), init_fastdiv_values((uint32_t) ne01), init_fastdiv_values((uint32_t) ne02),
            init_fastdiv_values((uint32_t) ne11), init_fastdiv_values((uint32_t) ne12));
    }
}
