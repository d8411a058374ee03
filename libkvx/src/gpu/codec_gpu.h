/* codec_gpu.h - what the GPU codec's .cu files share: launch sizing and the per-call set-up.
 * C++ only. The arithmetic itself lives in codec_core.h. */
#ifndef KVX_GPU_CODEC_GPU_H
#define KVX_GPU_CODEC_GPU_H

#include "codec_core.h"
#include "gpu_device.h"

/* Grid-stride loops cover any count; this many blocks at most keeps every GPU busy without
 * approaching grid.x limits. Host execution takes a few blocks only, so that its tests run
 * every block through the loops several times (the coders' barriers among them), as a GPU does
 * only with more than 2^20 blocks' worth of work. */
#if defined(KVX_GPU_HOST)
#define KVX_CODEC_MAX_BLOCKS 3LL
#else
#define KVX_CODEC_MAX_BLOCKS (1LL << 20)
#endif

static inline unsigned kvx_codec_blocks(long long items, long long per_block)
{
    long long blocks = (items + per_block - 1) / per_block;
    blocks = blocks < 1 ? 1 : blocks;
    return (unsigned)(blocks < KVX_CODEC_MAX_BLOCKS ? blocks : KVX_CODEC_MAX_BLOCKS);
}

/* The quantizers run one thread block per (row, token), of this many threads at most. */
#define KVX_QUANT_THREADS 128
#define KVX_QUANT_MAX_ROWS 1024 /* rows per launch: one byte of parameters each */

/* What the quantize and dequantize launches share (codec_quantize.cu, codec_rotated.cu): the
 * geometry of the float tensor (strides in bytes) and the launch's rows with their MAX. bins
 * come from host memory (src/ops/codec.c has range-checked them there), so each launch carries
 * MAX = bins / 2 - 1 of its rows in its parameters: no device allocation, no copy to wait for. */
struct kvx_token_rows {
    long long rows, tokens, channels;
    long long row_stride, token_stride;
    int dtype;
    unsigned char max_int[KVX_QUANT_MAX_ROWS];
};

/* Threads per token: a warp multiple near the channel count, so narrow tokens idle fewer. */
static inline unsigned kvx_quant_threads(long long channels)
{
    return channels >= 128 ? 128u : channels >= 64 ? 64u : 32u;
}

static inline void kvx_token_rows_init(kvx_token_rows *g, int32_t dtype, int64_t tokens,
                                       int64_t channels, int64_t row_stride, int64_t token_stride)
{
    const long long elem = kvx_dtype_size(dtype);
    g->dtype = dtype;
    g->tokens = tokens;
    g->channels = channels;
    g->row_stride = row_stride * elem;
    g->token_stride = token_stride * elem;
}

/* Sets up the launch of rows [first, first + KVX_QUANT_MAX_ROWS) of num_rows. */
static inline void kvx_token_rows_launch(kvx_token_rows *g, long long first, long long num_rows,
                                         const int32_t *bins)
{
    g->rows = num_rows - first < KVX_QUANT_MAX_ROWS ? num_rows - first : KVX_QUANT_MAX_ROWS;
    for (long long r = 0; r < g->rows; r++)
        g->max_int[r] = (unsigned char)(bins[first + r] / 2 - 1);
}

/* Selects the stream's device (the scope restores the previous one) and finds its
 * deferred-error record: KVX_OK, or the failure already reported with kvx_fail(). */
static inline int32_t kvx_codec_begin(const kvx_stream *stream, kvx_gpu_device_scope &scope,
                                      kvx_gpu_deferred_error **record)
{
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    return kvx_gpu_error_record(kvx_gpu_device_index(stream), record);
}

/* After a launch: a bad configuration or a sticky device error surfaces here. */
static inline int32_t kvx_codec_launched(const char *what)
{
    gpuError_t error = gpuGetLastError();
    return error == gpuSuccess ? KVX_OK : kvx_gpu_fail(error, what);
}

/* The rotated method's constants (codec_rotated.cu); all zero for CacheGen. */
struct kvx_rotation {
    int head_size;
    int piece;   /* channels a block holds in shared memory at once: a multiple of head_size */
    float limit; /* kvx_rot_limit(head_size) */
};

struct kvx_quant_args {
    kvx_token_rows g;
    kvx_rotation rot;
    const char *x;       /* the launch's first row */
    long long first_row; /* of the whole call, for error reports */
    uint8_t *symbols;
    float *scales;
    kvx_gpu_deferred_error *error;
};

struct kvx_dequant_args {
    kvx_token_rows g;
    kvx_rotation rot;
    const uint8_t *symbols;
    const float *scales;
    char *out; /* the launch's first row */
};

/* Runs a quantize kernel over the call's rows, KVX_QUANT_MAX_ROWS at a time, one block per
 * (row, token) with rot.piece floats of dynamic shared memory. */
static inline int32_t kvx_quantize_launches(void (*kernel)(kvx_quant_args),
                                            const kvx_codec_quantize_args *args, kvx_rotation rot,
                                            const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    kvx_quant_args a = {};
    int32_t rc = kvx_codec_begin(stream, scope, &a.error);
    if (rc)
        return rc;
    a.rot = rot;
    kvx_token_rows_init(&a.g, args->dtype, args->num_tokens, args->num_channels, args->row_stride,
                        args->token_stride);
    for (long long first = 0; first < args->num_rows; first += KVX_QUANT_MAX_ROWS) {
        kvx_token_rows_launch(&a.g, first, args->num_rows, args->bins);
        a.first_row = first;
        a.x = (const char *)args->x + first * a.g.row_stride;
        a.symbols = args->symbols + first * args->num_tokens * args->num_channels;
        a.scales = args->scales + first * args->num_tokens;
        KVX_LAUNCH(kernel, kvx_codec_blocks(a.g.rows * args->num_tokens, 1),
                   kvx_quant_threads(args->num_channels), rot.piece * sizeof(float),
                   kvx_gpu_stream(stream))(a);
        if ((rc = kvx_codec_launched("launching the quantize kernel")))
            return rc;
    }
    return KVX_OK;
}

/* The same for a dequantize kernel (no data to check: no error record). */
static inline int32_t kvx_dequantize_launches(void (*kernel)(kvx_dequant_args),
                                              const kvx_codec_dequantize_args *args,
                                              kvx_rotation rot, const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    kvx_dequant_args a = {};
    a.rot = rot;
    kvx_token_rows_init(&a.g, args->dtype, args->num_tokens, args->num_channels, args->row_stride,
                        args->token_stride);
    for (long long first = 0; first < args->num_rows; first += KVX_QUANT_MAX_ROWS) {
        kvx_token_rows_launch(&a.g, first, args->num_rows, args->bins);
        a.symbols = args->symbols + first * args->num_tokens * args->num_channels;
        a.scales = args->scales + first * args->num_tokens;
        a.out = (char *)args->out + first * a.g.row_stride;
        KVX_LAUNCH(kernel, kvx_codec_blocks(a.g.rows * args->num_tokens, 1),
                   kvx_quant_threads(args->num_channels), rot.piece * sizeof(float),
                   kvx_gpu_stream(stream))(a);
        int32_t rc = kvx_codec_launched("launching the dequantize kernel");
        if (rc)
            return rc;
    }
    return KVX_OK;
}

#endif /* KVX_GPU_CODEC_GPU_H */
