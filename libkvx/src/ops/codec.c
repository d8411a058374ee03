/*
 * codec.c - the low-level codec entry points: backend-independent checks, then dispatch.
 *
 * After these checks a backend may assume: counts are in range, every array the call touches is
 * non-NULL and aligned to its element size, and every element or byte offset the call can form
 * fits in int64. What depends on the data (finite values, symbol ranges, CDF tables, stream
 * offsets) is checked by the backend, which knows where the data lives.
 */
#include "codec_checks.h"

/* Bits one symbol can cost, at most (see src/cpu/codec_range_coder.c), plus the final flush. */
#define MAX_BITS_PER_SYMBOL 18

/* a * b * c into *out, failing (naming `what`) on int64 overflow. */
int32_t kvx_codec_product(const char *what, int64_t a, int64_t b, int64_t c, int64_t *out)
{
    int64_t ab = 0;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, out))
        return FAIL_ARG("%s: %lld * %lld * %lld overflows int64", what, (long long)a, (long long)b,
                        (long long)c);
    return KVX_OK;
}

int64_t kvx_codec_stream_bound_of(int64_t num_tokens)
{
    return (num_tokens * MAX_BITS_PER_SYMBOL + 1 + 7) / 8;
}

int32_t kvx_codec_check_shape(int64_t num_layers, int64_t num_tokens, int64_t num_channels,
                              const char *layers_name, int64_t *elements)
{
    int32_t rc;
    if ((rc = kvx_check_range(layers_name, num_layers, 1, INT32_MAX)) ||
        (rc = kvx_check_range("num_tokens", num_tokens, 0, KVX_CODEC_MAX_TOKENS)) ||
        (rc = kvx_check_range("num_channels", num_channels, 1, INT32_MAX)))
        return rc;
    return kvx_codec_product("symbols", num_layers, num_tokens, num_channels, elements);
}

static int32_t check_float_dtype(const char *name, int32_t dtype)
{
    if (dtype != KVX_DTYPE_FLOAT32 && dtype != KVX_DTYPE_FLOAT16 && dtype != KVX_DTYPE_BFLOAT16)
        return FAIL_ARG("%s: expected KVX_DTYPE_FLOAT32 (1), FLOAT16 (2) or BFLOAT16 (3), got %d",
                        name, (int)dtype);
    return KVX_OK;
}

int32_t kvx_codec_check_bins(const char *name, const int32_t *bins, int64_t count)
{
    int32_t rc = kvx_check_pointer(name, bins, count);
    if (rc || !bins || (rc = kvx_check_aligned(name, bins, count, 4, "int32")))
        return rc;
    for (int64_t i = 0; i < count; i++)
        if (bins[i] < KVX_CODEC_MIN_BINS || bins[i] > KVX_CODEC_MAX_BINS)
            return FAIL_ARG("%s[%lld]: expected %d..%d, got %d", name, (long long)i,
                            KVX_CODEC_MIN_BINS, KVX_CODEC_MAX_BINS, (int)bins[i]);
    return KVX_OK;
}

/* The typed arrays the front-ends take besides x and out: present where touched, and aligned to
 * their element (kvx_check_aligned). */
static int32_t check_scales(const float *scales, int64_t count)
{
    int32_t rc = kvx_check_pointer("scales", scales, count);
    return rc ? rc : kvx_check_aligned("scales", scales, count, 4, "float32");
}

static int32_t check_cdf(const uint16_t *cdf, int64_t count)
{
    int32_t rc = kvx_check_pointer("cdf", cdf, count);
    return rc ? rc : kvx_check_aligned("cdf", cdf, count, 2, "uint16");
}

static int32_t check_lengths(const int32_t *lengths, int64_t count)
{
    int32_t rc = kvx_check_pointer("lengths", lengths, count);
    return rc ? rc : kvx_check_aligned("lengths", lengths, count, 4, "int32");
}

/* The strided [rows, tokens, channels] view must address bytes that fit in int64. */
static int32_t check_view(const char *name, int64_t rows, int64_t tokens, int64_t channels,
                          int64_t row_stride, int64_t token_stride, int32_t dtype)
{
    int64_t a, b, end;
    if (row_stride < 0 || token_stride < 0)
        return FAIL_ARG("%s: expected non-negative strides, got row_stride %lld, token_stride "
                        "%lld",
                        name, (long long)row_stride, (long long)token_stride);
    if (tokens == 0)
        return KVX_OK;
    if (__builtin_mul_overflow(rows - 1, row_stride, &a) ||
        __builtin_mul_overflow(tokens - 1, token_stride, &b) ||
        __builtin_add_overflow(a, b, &end) || __builtin_add_overflow(end, channels, &end) ||
        __builtin_mul_overflow(end, (int64_t)kvx_dtype_size(dtype), &end))
        return FAIL_ARG("%s: strides address more than 2^63 bytes", name);
    return KVX_OK;
}

/* Checks shared by quantize and dequantize: the float tensor's dtype, shape and strides
 * (`name` is its argument); *elements = rows * tokens * channels. */
static int32_t check_float_tokens(const char *name, int32_t dtype, int64_t num_rows,
                                  int64_t num_tokens, int64_t num_channels, int64_t row_stride,
                                  int64_t token_stride, int64_t *elements)
{
    int32_t rc;
    if ((rc = check_float_dtype("dtype", dtype)) ||
        (rc = kvx_codec_check_shape(num_rows, num_tokens, num_channels, "num_rows", elements)))
        return rc;
    return check_view(name, num_rows, num_tokens, num_channels, row_stride, token_stride, dtype);
}

/* The checks of kvx_codec_quantize's arguments, which the rotated method shares; fills *args and
 * *elements = rows * tokens * channels. */
static int32_t read_quantize_args(const void *x, int32_t dtype, int64_t num_rows,
                                  int64_t num_tokens, int64_t num_channels, int64_t row_stride,
                                  int64_t token_stride, const int32_t *bins, uint8_t *symbols,
                                  float *scales, kvx_codec_quantize_args *args, int64_t *elements)
{
    int32_t rc;
    if ((rc = check_float_tokens("x", dtype, num_rows, num_tokens, num_channels, row_stride,
                                 token_stride, elements)) ||
        (rc = kvx_check_pointer("x", x, *elements)) ||
        (rc = kvx_check_dtype_aligned("x", x, *elements, dtype)) ||
        (rc = kvx_codec_check_bins("bins", bins, num_rows)) ||
        (rc = kvx_check_pointer("symbols", symbols, *elements)) ||
        (rc = check_scales(scales, num_rows * num_tokens)))
        return rc;
    *args = (kvx_codec_quantize_args){.x = x,
                                      .dtype = dtype,
                                      .num_rows = num_rows,
                                      .num_tokens = num_tokens,
                                      .num_channels = num_channels,
                                      .row_stride = row_stride,
                                      .token_stride = token_stride,
                                      .bins = bins,
                                      .symbols = symbols,
                                      .scales = scales};
    return KVX_OK;
}

/* The same for kvx_codec_dequantize. */
static int32_t read_dequantize_args(const uint8_t *symbols, const float *scales,
                                    const int32_t *bins, int64_t num_rows, int64_t num_tokens,
                                    int64_t num_channels, int32_t dtype, void *out,
                                    int64_t row_stride, int64_t token_stride,
                                    kvx_codec_dequantize_args *args, int64_t *elements)
{
    int32_t rc;
    if ((rc = check_float_tokens("out", dtype, num_rows, num_tokens, num_channels, row_stride,
                                 token_stride, elements)) ||
        (rc = kvx_check_pointer("symbols", symbols, *elements)) ||
        (rc = check_scales(scales, num_rows * num_tokens)) ||
        (rc = kvx_codec_check_bins("bins", bins, num_rows)) ||
        (rc = kvx_check_pointer("out", out, *elements)) ||
        (rc = kvx_check_dtype_aligned("out", out, *elements, dtype)))
        return rc;
    *args = (kvx_codec_dequantize_args){.symbols = symbols,
                                        .scales = scales,
                                        .bins = bins,
                                        .num_rows = num_rows,
                                        .num_tokens = num_tokens,
                                        .num_channels = num_channels,
                                        .dtype = dtype,
                                        .out = out,
                                        .row_stride = row_stride,
                                        .token_stride = token_stride};
    return KVX_OK;
}

/* The rotated method's heads: a power of two (its transform's size) that tiles the channels. */
static int32_t check_head_size(int64_t head_size, int64_t num_channels)
{
    if (head_size < 1 || head_size > KVX_CODEC_MAX_HEAD_SIZE || (head_size & (head_size - 1)) ||
        num_channels % head_size)
        return FAIL_ARG("head_size: expected a power of two 1..%d dividing num_channels (%lld), "
                        "got %lld",
                        KVX_CODEC_MAX_HEAD_SIZE, (long long)num_channels, (long long)head_size);
    return KVX_OK;
}

int32_t kvx_codec_quantize(const void *x, int32_t dtype, int64_t num_rows, int64_t num_tokens,
                           int64_t num_channels, int64_t row_stride, int64_t token_stride,
                           const int32_t *bins, uint8_t *symbols, float *scales,
                           const kvx_stream *stream)
{
    int32_t rc;
    int64_t elements = 0;
    kvx_codec_quantize_args args;
    kvx_clear_error();
    if ((rc = read_quantize_args(x, dtype, num_rows, num_tokens, num_channels, row_stride,
                                 token_stride, bins, symbols, scales, &args, &elements)))
        return rc;
    KVX_DISPATCH(backend, stream, codec_quantize, "codec_quantize");
    if (elements == 0)
        return KVX_OK;
    return backend->codec_quantize(&args, stream);
}

int32_t kvx_codec_dequantize(const uint8_t *symbols, const float *scales, const int32_t *bins,
                             int64_t num_rows, int64_t num_tokens, int64_t num_channels,
                             int32_t dtype, void *out, int64_t row_stride, int64_t token_stride,
                             const kvx_stream *stream)
{
    int32_t rc;
    int64_t elements = 0;
    kvx_codec_dequantize_args args;
    kvx_clear_error();
    if ((rc = read_dequantize_args(symbols, scales, bins, num_rows, num_tokens, num_channels, dtype,
                                   out, row_stride, token_stride, &args, &elements)))
        return rc;
    KVX_DISPATCH(backend, stream, codec_dequantize, "codec_dequantize");
    if (elements == 0)
        return KVX_OK;
    return backend->codec_dequantize(&args, stream);
}

int32_t kvx_codec_quantize_rotated(const void *x, int32_t dtype, int64_t num_rows,
                                   int64_t num_tokens, int64_t num_channels, int64_t head_size,
                                   int64_t row_stride, int64_t token_stride, const int32_t *bins,
                                   uint8_t *symbols, float *scales, const kvx_stream *stream)
{
    int32_t rc;
    int64_t elements = 0;
    kvx_codec_quantize_rotated_args args = {.head_size = head_size};
    kvx_clear_error();
    if ((rc = read_quantize_args(x, dtype, num_rows, num_tokens, num_channels, row_stride,
                                 token_stride, bins, symbols, scales, &args.base, &elements)) ||
        (rc = check_head_size(head_size, num_channels)))
        return rc;
    KVX_DISPATCH(backend, stream, codec_quantize_rotated, "codec_quantize_rotated");
    if (elements == 0)
        return KVX_OK;
    return backend->codec_quantize_rotated(&args, stream);
}

int32_t kvx_codec_dequantize_rotated(const uint8_t *symbols, const float *scales,
                                     const int32_t *bins, int64_t num_rows, int64_t num_tokens,
                                     int64_t num_channels, int64_t head_size, int32_t dtype,
                                     void *out, int64_t row_stride, int64_t token_stride,
                                     const kvx_stream *stream)
{
    int32_t rc;
    int64_t elements = 0;
    kvx_codec_dequantize_rotated_args args = {.head_size = head_size};
    kvx_clear_error();
    if ((rc = read_dequantize_args(symbols, scales, bins, num_rows, num_tokens, num_channels, dtype,
                                   out, row_stride, token_stride, &args.base, &elements)) ||
        (rc = check_head_size(head_size, num_channels)))
        return rc;
    KVX_DISPATCH(backend, stream, codec_dequantize_rotated, "codec_dequantize_rotated");
    if (elements == 0)
        return KVX_OK;
    return backend->codec_dequantize_rotated(&args, stream);
}

int32_t kvx_codec_calculate_cdf(const uint8_t *symbols, int64_t num_layers, int64_t num_tokens,
                                int64_t num_channels, int32_t num_bins, uint16_t *cdf,
                                const kvx_stream *stream)
{
    int32_t rc;
    int64_t elements = 0, tables = 0;
    kvx_clear_error();
    if ((rc = kvx_codec_check_shape(num_layers, num_tokens, num_channels, "num_layers",
                                    &elements)) ||
        (rc = kvx_check_range("num_bins", num_bins, 1, KVX_CODEC_MAX_BINS)) ||
        (rc = kvx_check_pointer("symbols", symbols, elements)) ||
        (rc = kvx_codec_product("cdf", num_layers, num_channels, num_bins + 1, &tables)) ||
        (rc = check_cdf(cdf, tables)))
        return rc;
    KVX_DISPATCH(backend, stream, codec_calculate_cdf, "codec_calculate_cdf");
    kvx_codec_cdf_args args = {.symbols = symbols,
                               .num_layers = num_layers,
                               .num_tokens = num_tokens,
                               .num_channels = num_channels,
                               .num_bins = num_bins,
                               .cdf = cdf};
    return backend->codec_calculate_cdf(&args, stream);
}

int32_t kvx_codec_stream_bound(int64_t num_tokens, int64_t *bytes)
{
    int32_t rc;
    kvx_clear_error();
    if ((rc = kvx_check_range("num_tokens", num_tokens, 0, KVX_CODEC_MAX_TOKENS)) ||
        (rc = kvx_check_pointer("bytes", bytes, 1)))
        return rc;
    *bytes = kvx_codec_stream_bound_of(num_tokens);
    return KVX_OK;
}

/* Checks shared by encode and decode: shapes, the CDF tables' size and pointer. */
static int32_t check_coder_args(const uint16_t *cdf, int32_t cdf_len, int64_t num_layers,
                                int64_t num_tokens, int64_t num_channels, int64_t *elements)
{
    int32_t rc;
    int64_t tables = 0;
    if ((rc = kvx_codec_check_shape(num_layers, num_tokens, num_channels, "num_layers",
                                    elements)) ||
        (rc = kvx_check_range("cdf_len", cdf_len, 3, KVX_CODEC_MAX_CDF_LEN)) ||
        (rc = kvx_codec_product("cdf", num_layers, num_channels, cdf_len, &tables)) ||
        (rc = check_cdf(cdf, tables)))
        return rc;
    return KVX_OK;
}

int32_t kvx_codec_encode(const uint16_t *cdf, int32_t cdf_len, const uint8_t *symbols,
                         int64_t num_layers, int64_t num_tokens, int64_t num_channels,
                         uint8_t *streams, int64_t stream_capacity, int32_t *lengths,
                         const kvx_stream *stream)
{
    int32_t rc;
    int64_t elements = 0, slots = 0;
    kvx_clear_error();
    if ((rc = check_coder_args(cdf, cdf_len, num_layers, num_tokens, num_channels, &elements)) ||
        (rc = kvx_check_pointer("symbols", symbols, elements)) ||
        (rc = kvx_check_range("stream_capacity", stream_capacity, 1, KVX_CODEC_MAX_STREAM_BYTES)) ||
        (rc = kvx_codec_product("streams", num_layers, num_channels, stream_capacity, &slots)) ||
        (rc = kvx_check_pointer("streams", streams, slots)) ||
        (rc = check_lengths(lengths, num_layers * num_channels)))
        return rc;
    KVX_DISPATCH(backend, stream, codec_encode, "codec_encode");
    kvx_codec_encode_args args = {.cdf = cdf,
                                  .cdf_len = cdf_len,
                                  .symbols = symbols,
                                  .num_layers = num_layers,
                                  .num_tokens = num_tokens,
                                  .num_channels = num_channels,
                                  .streams = streams,
                                  .stream_capacity = stream_capacity,
                                  .lengths = lengths};
    return backend->codec_encode(&args, stream);
}

int32_t kvx_codec_decode(const uint16_t *cdf, int32_t cdf_len, const uint8_t *streams,
                         int64_t stream_capacity, const int32_t *lengths, int64_t num_layers,
                         int64_t num_tokens, int64_t num_channels, uint8_t *symbols,
                         const kvx_stream *stream)
{
    int32_t rc;
    int64_t elements = 0, slots = 0;
    kvx_clear_error();
    if ((rc = check_coder_args(cdf, cdf_len, num_layers, num_tokens, num_channels, &elements)) ||
        (rc = kvx_check_range("stream_capacity", stream_capacity, 0, INT64_MAX)) ||
        (rc = kvx_codec_product("streams", num_layers, num_channels, stream_capacity, &slots)) ||
        (rc = kvx_check_pointer("streams", streams, slots)) ||
        (rc = check_lengths(lengths, num_layers * num_channels)) ||
        (rc = kvx_check_pointer("symbols", symbols, elements)))
        return rc;
    KVX_DISPATCH(backend, stream, codec_decode, "codec_decode");
    if (elements == 0)
        return KVX_OK;
    kvx_codec_decode_args args = {.cdf = cdf,
                                  .cdf_len = cdf_len,
                                  .bytes = streams,
                                  .num_bytes = slots,
                                  .stream_capacity = stream_capacity,
                                  .lengths = lengths,
                                  .num_layers = num_layers,
                                  .num_tokens = num_tokens,
                                  .num_channels = num_channels,
                                  .symbols = symbols};
    return backend->codec_decode(&args, stream);
}

int32_t kvx_codec_decode_prefsum(const uint16_t *cdf, int32_t cdf_len, const uint8_t *bytes,
                                 int64_t num_bytes, const int64_t *end_offsets, int64_t num_layers,
                                 int64_t num_tokens, int64_t num_channels, uint8_t *symbols,
                                 const kvx_stream *stream)
{
    int32_t rc;
    int64_t elements = 0;
    kvx_clear_error();
    if ((rc = check_coder_args(cdf, cdf_len, num_layers, num_tokens, num_channels, &elements)) ||
        (rc = kvx_check_range("num_bytes", num_bytes, 0, INT64_MAX)) ||
        (rc = kvx_check_pointer("bytes", bytes, num_bytes)) ||
        (rc = kvx_check_pointer("end_offsets", end_offsets, num_layers * num_channels)) ||
        (rc = kvx_check_aligned("end_offsets", end_offsets, num_layers * num_channels, 8,
                                "int64")) ||
        (rc = kvx_check_pointer("symbols", symbols, elements)))
        return rc;
    KVX_DISPATCH(backend, stream, codec_decode, "codec_decode_prefsum");
    if (elements == 0)
        return KVX_OK;
    kvx_codec_decode_args args = {.cdf = cdf,
                                  .cdf_len = cdf_len,
                                  .bytes = bytes,
                                  .num_bytes = num_bytes,
                                  .end_offsets = end_offsets,
                                  .num_layers = num_layers,
                                  .num_tokens = num_tokens,
                                  .num_channels = num_channels,
                                  .symbols = symbols};
    return backend->codec_decode(&args, stream);
}
