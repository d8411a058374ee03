/*
 * codec_rotated.c - kvx_codec_quantize_rotated and kvx_codec_dequantize_rotated on the CPU: the
 * container's own loops over the caller's [rows, tokens, channels] arrays (codec/rotated.h), so
 * both write the same symbols and scales.
 *
 * Quantization makes two passes so that bad input writes nothing: the first finds the first
 * token the method refuses (a cheap scan of most tokens), the second writes.
 */
#include "../codec/rotated.h"
#include "../codec/rotated_token.h" /* kvx_rot_limit, KVX_ROT_RANGE_MESSAGE */
#include "cpu_backend.h"

/* The caller's strided tensor as one plane of rows. */
static kvx_rotated_tokens caller_tokens(const void *base, int32_t dtype, int64_t rows,
                                        int64_t tokens, int64_t channels, int64_t head_size,
                                        int64_t row_stride, int64_t token_stride,
                                        const int32_t *bins)
{
    return (kvx_rotated_tokens){
        .base = (void *)base,
        .dtype = dtype,
        .rows = rows,
        .tokens = tokens,
        .channels = channels,
        .head_size = head_size,
        .rows_per_plane = rows,
        .row_stride = row_stride,
        .token_stride = token_stride,
        .bins = bins,
    };
}

int32_t kvx_cpu_codec_quantize_rotated(const kvx_codec_quantize_rotated_args *args,
                                       const kvx_stream *stream)
{
    (void)stream;
    const kvx_codec_quantize_args *a = &args->base;
    kvx_rotated_tokens v = caller_tokens(a->x, a->dtype, a->num_rows, a->num_tokens,
                                         a->num_channels, args->head_size, a->row_stride,
                                         a->token_stride, a->bins);
    int64_t bad = -1;
    int32_t rc = kvx_rotated_check_tokens(&v, &bad);
    if (rc == KVX_OK && bad >= 0)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT, KVX_ROT_RANGE_MESSAGE,
                        (double)kvx_rot_limit(args->head_size), (long long)(bad / a->num_tokens),
                        (long long)(bad % a->num_tokens));
    if (rc == KVX_OK)
        rc = kvx_rotated_quantize_tokens(&v, a->symbols, a->scales, &bad);
    return rc;
}

int32_t kvx_cpu_codec_dequantize_rotated(const kvx_codec_dequantize_rotated_args *args,
                                         const kvx_stream *stream)
{
    (void)stream;
    const kvx_codec_dequantize_args *a = &args->base;
    kvx_rotated_tokens v = caller_tokens(a->out, a->dtype, a->num_rows, a->num_tokens,
                                         a->num_channels, args->head_size, a->row_stride,
                                         a->token_stride, a->bins);
    return kvx_rotated_dequantize_tokens(&v, a->symbols, a->scales);
}
