/*
 * codec_quantize.cu - CacheGen quantization and dequantization on CUDA and HIP GPUs.
 *
 * One thread block per (row, token): its threads take the token's channels in turn (coalesced
 * reads), reduce the magnitude bits with a shared-memory atomicMax (integer max: the result does
 * not depend on the order, and it is exactly the CPU's scale), then each quantizes its own
 * channels with codec_core.h's arithmetic. A token holding inf or NaN is skipped and recorded for
 * kvx_synchronize() (the CPU backend rejects the call up front instead).
 *
 * bins come from host memory (src/ops/codec.c has range-checked them there), so each launch
 * carries MAX = bins / 2 - 1 of up to MAX_ROWS rows in its parameters: no device allocation, no
 * copy to wait for.
 */
#include "codec_gpu.h"

#define QUANT_THREADS 128
#define MAX_ROWS 1024 /* rows per launch: one byte of parameters each */

/* What quantize and dequantize launches share: the geometry of the float tensor (strides in
 * bytes) and the launch's rows with their MAX. */
struct token_rows {
    long long rows, tokens, channels;
    long long row_stride, token_stride;
    int dtype;
    unsigned char max_int[MAX_ROWS];
};

struct quant_args {
    token_rows g;
    const char *x;        /* the launch's first row */
    long long first_row;  /* of the whole call, for error reports */
    uint8_t *symbols;
    float *scales;
    kvx_gpu_deferred_error *error;
};

__global__ void __launch_bounds__(QUANT_THREADS) quantize_tokens(const quant_args a)
{
    __shared__ unsigned int max_bits;
    const token_rows &g = a.g;
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

struct dequant_args {
    token_rows g;
    const uint8_t *symbols;
    const float *scales;
    char *out; /* the launch's first row */
};

__global__ void __launch_bounds__(QUANT_THREADS) dequantize_tokens(const dequant_args a)
{
    const token_rows &g = a.g;
    const long long items = g.rows * g.tokens;
    for (long long i = blockIdx.x; i < items; i += gridDim.x) {
        const long long r = i / g.tokens, t = i - r * g.tokens;
        kvx_cc_dequantize_channels(a.symbols + i * g.channels, a.scales[i], g.max_int[r], g.dtype,
                                   a.out + r * g.row_stride + t * g.token_stride, g.channels,
                                   threadIdx.x, blockDim.x);
    }
}

/* Threads per token: a warp multiple near the channel count, so narrow tokens idle fewer. */
static unsigned threads_for(long long channels)
{
    return channels >= 128 ? 128u : channels >= 64 ? 64u : 32u;
}

static void init_rows(token_rows *g, int32_t dtype, int64_t tokens, int64_t channels,
                      int64_t row_stride, int64_t token_stride)
{
    const long long elem = kvx_dtype_size(dtype);
    g->dtype = dtype;
    g->tokens = tokens;
    g->channels = channels;
    g->row_stride = row_stride * elem;
    g->token_stride = token_stride * elem;
}

/* Sets up the launch of rows [first, first + MAX_ROWS) of num_rows. */
static void launch_rows(token_rows *g, long long first, long long num_rows, const int32_t *bins)
{
    g->rows = num_rows - first < MAX_ROWS ? num_rows - first : MAX_ROWS;
    for (long long r = 0; r < g->rows; r++)
        g->max_int[r] = (unsigned char)(bins[first + r] / 2 - 1);
}

extern "C" int32_t kvx_gpu_codec_quantize(const kvx_codec_quantize_args *args,
                                          const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    quant_args a = {};
    int32_t rc = kvx_codec_begin(stream, scope, &a.error);
    if (rc)
        return rc;
    init_rows(&a.g, args->dtype, args->num_tokens, args->num_channels, args->row_stride,
              args->token_stride);
    for (long long first = 0; first < args->num_rows; first += MAX_ROWS) {
        launch_rows(&a.g, first, args->num_rows, args->bins);
        a.first_row = first;
        a.x = (const char *)args->x + first * a.g.row_stride;
        a.symbols = args->symbols + first * args->num_tokens * args->num_channels;
        a.scales = args->scales + first * args->num_tokens;
        KVX_LAUNCH(quantize_tokens, kvx_codec_blocks(a.g.rows * args->num_tokens, 1),
                   threads_for(args->num_channels), 0, kvx_gpu_stream(stream))(a);
        if ((rc = kvx_codec_launched("launching the quantize kernel")))
            return rc;
    }
    return KVX_OK;
}

extern "C" int32_t kvx_gpu_codec_dequantize(const kvx_codec_dequantize_args *args,
                                            const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    dequant_args a = {};
    init_rows(&a.g, args->dtype, args->num_tokens, args->num_channels, args->row_stride,
              args->token_stride);
    for (long long first = 0; first < args->num_rows; first += MAX_ROWS) {
        launch_rows(&a.g, first, args->num_rows, args->bins);
        a.symbols = args->symbols + first * args->num_tokens * args->num_channels;
        a.scales = args->scales + first * args->num_tokens;
        a.out = (char *)args->out + first * a.g.row_stride;
        KVX_LAUNCH(dequantize_tokens, kvx_codec_blocks(a.g.rows * args->num_tokens, 1),
                   threads_for(args->num_channels), 0, kvx_gpu_stream(stream))(a);
        int32_t rc = kvx_codec_launched("launching the dequantize kernel");
        if (rc)
            return rc;
    }
    return KVX_OK;
}
