/*
 * codec_quantize.cu - CacheGen quantization and dequantization on CUDA and HIP GPUs.
 *
 * One thread block per (row, token): its threads take the token's channels in turn (coalesced
 * reads), reduce the magnitude bits with a shared-memory atomicMax (integer max: the result does
 * not depend on the order, and it is exactly the CPU's scale), then each quantizes its own
 * channels with codec_core.h's arithmetic. A token holding inf or NaN is skipped and recorded for
 * kvx_synchronize() (the CPU backend rejects the call up front instead).
 *
 * bins come from host memory (src/core/codec.c has range-checked them there), so each launch
 * carries MAX = bins / 2 - 1 of up to MAX_ROWS rows in its parameters: no device allocation, no
 * copy to wait for.
 */
#include "codec_gpu.h"

#define QUANT_THREADS 128
#define MAX_ROWS 1024 /* rows per launch: one byte of parameters each */

struct quant_args {
    const char *x; /* the launch's first row; strides in bytes */
    long long row_stride, token_stride;
    int dtype;
    long long rows, tokens, channels;
    long long first_row; /* of the whole call, for error reports */
    unsigned char max_int[MAX_ROWS];
    uint8_t *symbols;
    float *scales;
    kvx_gpu_deferred_error *error;
};

__global__ void __launch_bounds__(QUANT_THREADS) quantize_tokens(const quant_args a)
{
    __shared__ unsigned int max_bits;
    const long long items = a.rows * a.tokens;
    for (long long i = blockIdx.x; i < items; i += gridDim.x) {
        const long long r = i / a.tokens, t = i - r * a.tokens;
        const void *x = a.x + r * a.row_stride + t * a.token_stride;
        if (threadIdx.x == 0)
            max_bits = 0;
        __syncthreads();
        atomicMax(&max_bits, kvx_cc_max_magnitude(x, a.dtype, a.channels, threadIdx.x, blockDim.x));
        __syncthreads();
        const unsigned int bits = max_bits;
        __syncthreads(); /* all have read it before thread 0 resets it for the next token */
        if (bits >= kvx_cc_inf_bits(a.dtype)) {
            if (threadIdx.x == 0)
                kvx_gpu_record_error(a.error, KVX_GPU_NON_FINITE, (a.first_row + r) * a.tokens + t,
                                     a.first_row + r, t);
            continue;
        }
        const float scale = kvx_cc_from_bits(bits, a.dtype);
        kvx_cc_quantize_channels(x, a.dtype, a.channels, threadIdx.x, blockDim.x, a.max_int[r],
                                 scale, a.symbols + i * a.channels);
        if (threadIdx.x == 0)
            a.scales[i] = scale;
    }
}

struct dequant_args {
    const uint8_t *symbols;
    const float *scales;
    unsigned char max_int[MAX_ROWS];
    long long rows, tokens, channels;
    int dtype;
    char *out; /* the launch's first row; strides in bytes */
    long long row_stride, token_stride;
};

__global__ void __launch_bounds__(QUANT_THREADS) dequantize_tokens(const dequant_args a)
{
    const long long items = a.rows * a.tokens;
    for (long long i = blockIdx.x; i < items; i += gridDim.x) {
        const long long r = i / a.tokens, t = i - r * a.tokens;
        kvx_cc_dequantize_channels(a.symbols + i * a.channels, a.scales[i], a.max_int[r], a.dtype,
                                   a.out + r * a.row_stride + t * a.token_stride, a.channels,
                                   threadIdx.x, blockDim.x);
    }
}

/* Threads per token: a warp multiple near the channel count, so narrow tokens idle fewer. */
static unsigned threads_for(long long channels)
{
    return channels >= 128 ? 128u : channels >= 64 ? 64u : 32u;
}

static int rows_in_launch(long long first, long long rows)
{
    return (int)(rows - first < MAX_ROWS ? rows - first : MAX_ROWS);
}

extern "C" int32_t kvx_gpu_codec_quantize(const void *x, int32_t dtype, int64_t num_rows,
                                          int64_t num_tokens, int64_t num_channels,
                                          int64_t row_stride, int64_t token_stride,
                                          const int32_t *bins, uint8_t *symbols, float *scales,
                                          const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    quant_args a = {};
    int32_t rc = kvx_codec_begin(stream, scope, &a.error);
    if (rc)
        return rc;
    const long long elem = kvx_dtype_size(dtype);
    a.dtype = dtype;
    a.row_stride = row_stride * elem;
    a.token_stride = token_stride * elem;
    a.tokens = num_tokens;
    a.channels = num_channels;
    for (long long first = 0; first < num_rows; first += MAX_ROWS) {
        a.rows = rows_in_launch(first, num_rows);
        a.first_row = first;
        a.x = (const char *)x + first * a.row_stride;
        a.symbols = symbols + first * num_tokens * num_channels;
        a.scales = scales + first * num_tokens;
        for (int r = 0; r < a.rows; r++)
            a.max_int[r] = (unsigned char)(bins[first + r] / 2 - 1);
        quantize_tokens<<<kvx_codec_blocks(a.rows * num_tokens, 1), threads_for(num_channels), 0,
                          kvx_gpu_stream(stream)>>>(a);
        if ((rc = kvx_codec_launched("launching the quantize kernel")))
            return rc;
    }
    return KVX_OK;
}

extern "C" int32_t kvx_gpu_codec_dequantize(const uint8_t *symbols, const float *scales,
                                            const int32_t *bins, int64_t num_rows,
                                            int64_t num_tokens, int64_t num_channels,
                                            int32_t dtype, void *out, int64_t row_stride,
                                            int64_t token_stride, const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    const long long elem = kvx_dtype_size(dtype);
    dequant_args a = {};
    a.dtype = dtype;
    a.row_stride = row_stride * elem;
    a.token_stride = token_stride * elem;
    a.tokens = num_tokens;
    a.channels = num_channels;
    for (long long first = 0; first < num_rows; first += MAX_ROWS) {
        a.rows = rows_in_launch(first, num_rows);
        a.symbols = symbols + first * num_tokens * num_channels;
        a.scales = scales + first * num_tokens;
        a.out = (char *)out + first * a.row_stride;
        for (int r = 0; r < a.rows; r++)
            a.max_int[r] = (unsigned char)(bins[first + r] / 2 - 1);
        dequantize_tokens<<<kvx_codec_blocks(a.rows * num_tokens, 1), threads_for(num_channels), 0,
                            kvx_gpu_stream(stream)>>>(a);
        int32_t rc = kvx_codec_launched("launching the dequantize kernel");
        if (rc)
            return rc;
    }
    return KVX_OK;
}
