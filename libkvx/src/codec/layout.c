/*
 * layout.c - what a container holds, from the caller's arguments: the checks that make a KV
 * descriptor and codec parameters a container's layout, and the sizes that layout can take.
 */
#include <stdio.h>
#include <stdlib.h>

#include "bytes.h" /* MAX_VARINT32, for the worst-case size */
#include "layout.h"

int32_t kvx_codec_check_kv_desc(const char *name, const kvx_dense_desc *d)
{
    int32_t rc;
    if (d->dtype != KVX_DTYPE_FLOAT32 && d->dtype != KVX_DTYPE_FLOAT16 &&
        d->dtype != KVX_DTYPE_BFLOAT16)
        return FAIL_ARG("%s->dtype: expected KVX_DTYPE_FLOAT32 (1), FLOAT16 (2) or BFLOAT16 (3), "
                        "got %d",
                        name, (int)d->dtype);
    if (d->num_kv < 1 || d->num_kv > 2)
        return FAIL_ARG("%s->num_kv: expected 1 or 2, got %d", name, (int)d->num_kv);
    if (d->num_layers < 1 || d->num_heads < 1 || d->head_size < 1)
        return FAIL_ARG("%s: expected num_layers, num_heads, head_size >= 1, got %d, %d, %d", name,
                        (int)d->num_layers, (int)d->num_heads, (int)d->head_size);
    int64_t channels = (int64_t)d->num_heads * d->head_size;
    if (channels > INT32_MAX)
        return FAIL_ARG("%s: num_heads * head_size: expected <= %d, got %lld", name, INT32_MAX,
                        (long long)channels);
    if (d->num_heads > 1 && d->head_stride != d->head_size)
        return FAIL_ARG("%s->head_stride: expected head_size (%d): the codec needs the heads of "
                        "a token contiguous, got %lld",
                        name, (int)d->head_size, (long long)d->head_stride);
    if (d->kv_stride < 0 || d->layer_stride < 0 || d->token_stride < 0)
        return FAIL_ARG("%s: expected non-negative strides, got kv %lld, layer %lld, token %lld",
                        name, (long long)d->kv_stride, (long long)d->layer_stride,
                        (long long)d->token_stride);
    if ((rc = kvx_check_range("num_tokens", d->num_tokens, 0, KVX_CODEC_MAX_TOKENS)))
        return rc;
    if (d->num_tokens > 0 && !d->base)
        return FAIL_ARG("%s->base: expected a pointer, got NULL", name);
    if (d->num_tokens > 0 && !kvx_is_aligned(d->base, kvx_dtype_size(d->dtype))) {
        char field[32];
        snprintf(field, sizeof field, "%s->base", name);
        return kvx_check_dtype_aligned(field, d->base, d->num_tokens, d->dtype);
    }
    int64_t a, b, c, end;
    if (__builtin_mul_overflow((int64_t)d->num_kv - 1, d->kv_stride, &a) ||
        __builtin_mul_overflow((int64_t)d->num_layers - 1, d->layer_stride, &b) ||
        __builtin_mul_overflow(d->num_tokens, d->token_stride, &c) ||
        __builtin_add_overflow(a, b, &end) || __builtin_add_overflow(end, c, &end) ||
        __builtin_add_overflow(end, channels, &end) ||
        __builtin_mul_overflow(end, (int64_t)kvx_dtype_size(d->dtype), &end))
        return FAIL_ARG("%s: strides address more than 2^63 bytes", name);
    return KVX_OK;
}

static int32_t check_params(const kvx_dense_desc *kv, const kvx_codec_params *p)
{
    int32_t rc;
    if (p->method != KVX_CODEC_METHOD_CACHEGEN && p->method != KVX_CODEC_METHOD_ROTATED)
        return FAIL_ARG("params->method: expected KVX_CODEC_METHOD_CACHEGEN (0) or "
                        "KVX_CODEC_METHOD_ROTATED (1), got %d",
                        (int)p->method);
    if (p->method == KVX_CODEC_METHOD_ROTATED &&
        (kv->head_size & (kv->head_size - 1) || kv->head_size > KVX_CODEC_MAX_HEAD_SIZE))
        return FAIL_ARG("kv->head_size: the rotated method expects a power of two up to %d, "
                        "got %d",
                        KVX_CODEC_MAX_HEAD_SIZE, (int)kv->head_size);
    if ((rc = kvx_codec_check_bins("params->key_bins", p->key_bins, kv->num_layers)) ||
        (kv->num_kv == 2 &&
         (rc = kvx_codec_check_bins("params->value_bins", p->value_bins, kv->num_layers))))
        return rc;
    return kvx_check_range("params->chunk_tokens", p->chunk_tokens, 1, MAX_CHUNK_TOKENS);
}

int32_t kvx_codec_read_kv_args(const kvx_dense_desc *kv_user, const kvx_codec_params *params_user,
                               kvx_dense_desc *kv, kvx_codec_params *params)
{
    int32_t rc;
    if ((rc = kvx_read_struct("kv", "kvx_dense_desc", kv_user, kv, sizeof *kv)) ||
        (rc = kvx_read_struct("params", "kvx_codec_params", params_user, params, sizeof *params)) ||
        (rc = kvx_codec_check_kv_desc("kv", kv)))
        return rc;
    return check_params(kv, params);
}

layout *kvx_codec_layout_new(int64_t rows)
{
    layout *lo = calloc(1, sizeof(layout) + (size_t)rows * sizeof(int32_t));
    if (!lo)
        kvx_fail(KVX_ERR_OUT_OF_MEMORY, "codec: cannot allocate the bins of %lld rows",
                 (long long)rows);
    return lo;
}

layout *kvx_codec_layout_from_desc(const kvx_dense_desc *kv, const kvx_codec_params *p)
{
    int64_t rows = (int64_t)kv->num_kv * kv->num_layers;
    layout *lo = kvx_codec_layout_new(rows);
    if (!lo)
        return NULL;
    *lo = (layout){kv->dtype,
                   kv->num_kv,
                   kv->num_layers,
                   kv->num_heads,
                   kv->head_size,
                   0,
                   rows,
                   (int64_t)kv->num_heads * kv->head_size,
                   kv->num_tokens,
                   p->chunk_tokens,
                   (kv->num_tokens + p->chunk_tokens - 1) / p->chunk_tokens,
                   p->method};
    for (int64_t r = 0; r < rows; r++) {
        lo->bins[r] = r < kv->num_layers ? p->key_bins[r] : p->value_bins[r - kv->num_layers];
        lo->num_bins = lo->bins[r] > lo->num_bins ? lo->bins[r] : lo->num_bins;
    }
    return lo;
}

/* Bytes of one chunk of `tokens` tokens: worst case when worst != 0, else the least any valid
 * chunk can take (every stream needs at least one count, one length and one payload byte). */
static int32_t chunk_size(const layout *lo, int64_t tokens, int worst, int64_t *out)
{
    int64_t streams = lo->rows * lo->channels, count_bytes = 0, total;
    int64_t per_stream_payload = worst ? kvx_codec_stream_bound_of(tokens) : 1;
    /* Per stream: first symbol and run length (<= 2 bytes each), then <= 3 bytes per count;
     * at least those two and one count (a chunk has >= 1 token) of one byte each, or in the
     * rotated method a model's two (stream_tables.c). */
    int64_t least = lo->method == KVX_CODEC_METHOD_ROTATED ? 2 : 3;
    for (int64_t r = 0; r < lo->rows; r++)
        count_bytes += worst ? 4 + 3 * (int64_t)row_symbols(lo, r) : least;
    int64_t counts, payload, lengths = streams * (worst ? MAX_VARINT32 : 1);
    if (__builtin_mul_overflow(count_bytes, lo->channels, &counts) ||
        __builtin_mul_overflow(streams, per_stream_payload, &payload) ||
        __builtin_add_overflow(counts, payload, &total) ||
        __builtin_add_overflow(total, lengths, &total) ||
        __builtin_add_overflow(total, scale_bytes(lo) * lo->rows * tokens, &total) ||
        __builtin_add_overflow(total, (int64_t)CHUNK_HEADER_SIZE + CRC_SIZE, &total))
        return FAIL_ARG("codec: the container size overflows int64");
    *out = total;
    return KVX_OK;
}

int32_t kvx_codec_container_size(const layout *lo, int worst, int64_t *out)
{
    int32_t rc;
    int64_t total = header_bytes(lo->rows), full = 0, last = 0;
    if (lo->num_chunks == 0) {
        *out = total;
        return KVX_OK;
    }
    if ((rc = chunk_size(lo, lo->chunk_tokens, worst, &full)) ||
        (rc = chunk_size(lo, chunk_len(lo, lo->num_chunks - 1), worst, &last)))
        return rc;
    int64_t body;
    if (__builtin_mul_overflow(full, lo->num_chunks - 1, &body) ||
        __builtin_add_overflow(total, body, &total) || __builtin_add_overflow(total, last, &total))
        return FAIL_ARG("codec: the container size overflows int64");
    *out = total;
    return KVX_OK;
}

int32_t kvx_codec_compress_bound(const kvx_dense_desc *kv_user, const kvx_codec_params *params_user,
                                 int64_t *bound)
{
    int32_t rc;
    kvx_dense_desc kv;
    kvx_codec_params params;
    kvx_clear_error();
    if ((rc = kvx_codec_read_kv_args(kv_user, params_user, &kv, &params)) ||
        (rc = kvx_check_pointer("bound", bound, 1)))
        return rc;
    layout *lo = kvx_codec_layout_from_desc(&kv, &params);
    if (!lo)
        return KVX_ERR_OUT_OF_MEMORY;
    rc = kvx_codec_container_size(lo, 1, bound);
    free(lo);
    return rc;
}
