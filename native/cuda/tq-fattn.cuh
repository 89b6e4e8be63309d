// tq-gguf: the turbo types in CUDA's vector FlashAttention kernel: the K*Q dot product
// (vec_dot_fattn_vec_KQ_turbo) and the V decode (dequantize_V_turbo, which also decodes the
// trellis-coded value types tcq2 and tcq3: V only, they have no dot product).
//
// Included by ggml-cuda's fattn-common.cuh (patch 0006) just before get_vec_dot_KQ and
// get_dequantize_V, which return these for a turbo K or V.
#pragma once

#include "tq-cuda.cuh"

// Turbo K. Q stays unquantized (float2, or half2 where V_DOT2_F32_F16_AVAILABLE) in
// the layout of the f16 kernel: each of nthreads lanes takes 2*cpy_ne consecutive values per
// step. Quantizing Q to q8_1 as for q4_0 would need integer codes, which the Lloyd-Max
// centroids are not; an unquantized Q keeps the dot product within FORMAT.md section 7.
template <ggml_type type_K, int D, int nthreads>
static __device__ __forceinline__ float vec_dot_fattn_vec_KQ_turbo(
    const char * __restrict__ K_c, const void * __restrict__ Q_v, const int * __restrict__ Q_q8 , const void * __restrict__ Q_ds_v) {

    GGML_UNUSED(Q_q8);
    GGML_UNUSED(Q_ds_v);

    constexpr int cpy_nb = ggml_cuda_get_max_cpy_bytes();
    constexpr int cpy_ne = cpy_nb / 4;

    float sum = 0.0f;

#pragma unroll
    for (int k_KQ_0 = 0; k_KQ_0 < D/2; k_KQ_0 += nthreads*cpy_ne) {
        const int k_KQ = k_KQ_0 + (threadIdx.x % nthreads)*cpy_ne;

        // 2*cpy_ne values never straddle a block: 64 is a multiple of 2*cpy_ne
        float c[2*cpy_ne];
        const float d = tq_cuda_load_centroids<type_K, 2*cpy_ne>(K_c, 2*k_KQ, c);

        float part = 0.0f;
#pragma unroll
        for (int k_KQ_1 = 0; k_KQ_1 < cpy_ne; ++k_KQ_1) {
#ifdef V_DOT2_F32_F16_AVAILABLE
            const float2 q = __half22float2(((const half2 *) Q_v)[k_KQ_0/nthreads + k_KQ_1]);
#else
            const float2 q = ((const float2 *) Q_v)[k_KQ_0/nthreads + k_KQ_1];
#endif // V_DOT2_F32_F16_AVAILABLE
            part += c[2*k_KQ_1 + 0]*q.x;
            part += c[2*k_KQ_1 + 1]*q.y;
        }
        // the block scale once per block slice instead of once per value
        sum += d*part;
    }

    return sum;
}

// Turbo or tcq V, ne = 4 consecutive values from one block (i0 is a multiple of 4)
template <ggml_type type_V, typename T, int ne>
static __device__ __forceinline__ void dequantize_V_turbo(const void * __restrict__ vx, void * __restrict__ dst, const int64_t i0) {
    static_assert(ne == 4 || ne == 8, "bad ne");

    float c[ne];
    float d;
    if constexpr (tq_cuda_is_tcq(type_V)) {
        d = tq_cuda_tcq_load_levels<type_V, ne>((const char *) vx, (int) i0, c);
    } else {
        d = tq_cuda_load_centroids<type_V, ne>((const char *) vx, (int) i0, c);
    }

#ifdef FP16_AVAILABLE
    if constexpr (std::is_same_v<T, half>) {
#pragma unroll
        for (int l0 = 0; l0 < ne; l0 += 2) {
            ((half2 *) dst)[l0/2] = __floats2half2_rn(d*c[l0 + 0], d*c[l0 + 1]);
        }
    } else
#endif // FP16_AVAILABLE
    if constexpr (std::is_same_v<T, float>) {
#pragma unroll
        for (int l = 0; l < ne; ++l) {
            ((float *) dst)[l] = d*c[l];
        }
    } else {
        static_assert(std::is_same_v<T, void>, "bad type");
    }
}
