/*
 * codec_quantize.cu - CacheGen quantization and dequantization on CUDA and HIP GPUs.
 *
 * One thread block per (row, token): its threads take the token's channels in turn (coalesced
 * reads), reduce the magnitude bits with a shared-memory atomicMax (integer max: the result does
 * not depend on the order, and it is exactly the CPU's scale), then each quantizes its own
 * channels with codec_core.h's arithmetic. A token holding inf or NaN is skipped and recorded for
 * kvx_synchronize() (the CPU backend rejects the call up front instead).
 */
#include "codec_gpu.h"

__global__ void __launch_bounds__(KVX_QUANT_THREADS) quantize_tokens(const kvx_quant_args a)
{
    __shared__ unsigned int max_bits;
    const kvx_token_rows &g = a.g;
    const long long items = g.rows * g.tokens;
    for (long long i = blockIdx.x; i < items; i += gridDim.x) {
        const long long r = i / g.tokens, t = i - r * g.tokens;
        const void *x = a.x + r * g.row_stride + t * g.token_stride;
        if (threadIdx.x == 0)
            max_bits = 0;
        __syncthreads();
        atomicMax(&max_bits, kvx_cc_max_magnitude(x, g.dtype, g.channels, threadIdx.x, blockDim.x));
        __syncthreads();
        const unsigned int bits = max_bits;
        __syncthreads(); /* all have read it before thread 0 resets it for the next token */
        if (bits >= kvx_cc_inf_bits(g.dtype)) {
            if (threadIdx.x == 0)
                kvx_gpu_record_error(a.error, KVX_GPU_NON_FINITE, (a.first_row + r) * g.tokens + t,
                                     a.first_row + r, t);
            continue;
        }
        const float scale = kvx_cc_from_bits(bits, g.dtype);
        kvx_cc_quantize_channels(x, g.dtype, g.channels, threadIdx.x, blockDim.x, g.max_int[r],
                                 scale, a.symbols + i * g.channels);
        if (threadIdx.x == 0)
            a.scales[i] = scale;
    }
}

__global__ void __launch_bounds__(KVX_QUANT_THREADS) dequantize_tokens(const kvx_dequant_args a)
{
    const kvx_token_rows &g = a.g;
    const long long items = g.rows * g.tokens;
    for (long long i = blockIdx.x; i < items; i += gridDim.x) {
        const long long r = i / g.tokens, t = i - r * g.tokens;
        kvx_cc_dequantize_channels(a.symbols + i * g.channels, a.scales[i], g.max_int[r], g.dtype,
                                   a.out + r * g.row_stride + t * g.token_stride, g.channels,
                                   threadIdx.x, blockDim.x);
    }
}

extern "C" int32_t kvx_gpu_codec_quantize(const kvx_codec_quantize_args *args,
                                          const kvx_stream *stream)
{
    return kvx_quantize_launches(quantize_tokens, args, kvx_rotation{}, stream);
}

extern "C" int32_t kvx_gpu_codec_dequantize(const kvx_codec_dequantize_args *args,
                                            const kvx_stream *stream)
{
    return kvx_dequantize_launches(dequantize_tokens, args, kvx_rotation{}, stream);
}
