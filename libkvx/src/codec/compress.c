/*
 * compress.c - kvx_codec_compress: per chunk, quantize and count symbols, build the CDF tables,
 * range-code one stream per (row, channel), and write the frame (docs/codec-container.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "container.h"

typedef struct count_job {
    const layout *lo;
    const uint8_t *symbols;
    int64_t tokens;
    uint16_t *counts;
    uint16_t *cdf;
    stream_model *models; /* the rotated method's choice of table per stream */
    int64_t *count_bytes; /* [streams]: bytes of the stream's counts as varints */
    uint8_t *out;         /* write pass: the counts section; count_bytes then holds offsets */
} count_job;

/* Writes every stream's table at its offset: streams are independent, so this runs in
 * parallel (a chunk holds millions of counts). */
static void write_counts_range(void *ctx, int64_t begin, int64_t end)
{
    const count_job *job = ctx;
    const layout *lo = job->lo;
    int rotated = lo->method == KVX_CODEC_METHOD_ROTATED;
    for (int64_t i = begin; i < end; i++) {
        const uint16_t *counts = job->counts + i * lo->num_bins;
        uint8_t *p = job->out + job->count_bytes[i];
        stream_model m = job->models[i];
        if (m.gaussian) {
            p = varint_write(p, 2u * m.center + 1);
            *p = m.spread;
            continue;
        }
        int32_t first, n;
        kvx_codec_count_span(counts, row_symbols(lo, i / lo->channels), &first, &n);
        p = varint_write(p, (uint32_t)(rotated ? 2 * first : first));
        p = varint_write(p, (uint32_t)n);
        for (int32_t s = first; s < first + n; s++)
            p = varint_write(p, counts[s]);
    }
}

/* Histograms of the streams [first, first + n) of one row: token by token, each token's symbols
 * of those channels read as one contiguous run (reading a stream's column token by token instead
 * touches a cache line per symbol). */
static void count_row_segment(const count_job *job, int64_t first, int64_t n)
{
    const layout *lo = job->lo;
    int32_t nb = lo->num_bins;
    uint16_t *counts = job->counts + first * nb;
    memset(counts, 0, (size_t)(n * nb) * sizeof *counts);
    const uint8_t *p = job->symbols + (first / lo->channels) * job->tokens * lo->channels +
                       first % lo->channels;
    for (int64_t t = 0; t < job->tokens; t++, p += lo->channels)
        for (int64_t c = 0; c < n; c++)
            counts[c * nb + p[c]]++;
}

/* Histogram, table and CDF of each stream of a work item. */
static void count_range(void *ctx, int64_t begin, int64_t end)
{
    const count_job *job = ctx;
    const layout *lo = job->lo;
    int32_t nb = lo->num_bins;
    for (int64_t i = begin; i < end;) {
        int64_t in_row = lo->channels - i % lo->channels;
        int64_t n = in_row < end - i ? in_row : end - i;
        count_row_segment(job, i, n);
        for (int64_t last = i + n; i < last; i++) {
            int64_t row = i / lo->channels;
            uint16_t *counts = job->counts + i * nb, *cdf = job->cdf + i * (nb + 1);
            if (lo->method == KVX_CODEC_METHOD_ROTATED) {
                job->count_bytes[i] = kvx_codec_choose_table(lo, row, counts, job->tokens, cdf,
                                                             &job->models[i]);
                continue;
            }
            kvx_codec_cdf_from_counts(counts, nb, job->tokens, cdf);
            job->count_bytes[i] = kvx_codec_counts_bytes(counts, row_symbols(lo, row), 1);
        }
    }
}

static int32_t quantize_chunk(const kvx_backend *be, const kvx_dense_desc *kv, const layout *lo,
                              int64_t t0, int64_t tokens, chunk_buffers *b,
                              const kvx_stream *stream)
{
    int64_t es = kvx_dtype_size(kv->dtype), plane = lo->num_layers * tokens;
    for (int32_t p = 0; p < lo->num_kv; p++) {
        const uint8_t *x = (const uint8_t *)kv->base +
                           (p * kv->kv_stride + t0 * kv->token_stride) * es;
        kvx_codec_quantize_args args = {.x = x,
                                        .dtype = kv->dtype,
                                        .num_rows = lo->num_layers,
                                        .num_tokens = tokens,
                                        .num_channels = lo->channels,
                                        .row_stride = kv->layer_stride,
                                        .token_stride = kv->token_stride,
                                        .bins = lo->bins + p * lo->num_layers,
                                        .symbols = b->symbols + p * plane * lo->channels,
                                        .scales = b->scales + p * plane};
        int32_t rc = be->codec_quantize(&args, stream);
        if (rc) {
            /* The backend names rows and tokens of this chunk's plane; say where that is. */
            char detail[400];
            snprintf(detail, sizeof detail, "%s", kvx_last_error());
            return kvx_fail(rc, "kv (plane %d, chunk from token %lld): %s", (int)p, (long long)t0,
                            detail);
        }
    }
    return KVX_OK;
}

/* The CRC-32 of what was written from `start` on; a writer past its capacity only counts it. */
static void put_crc(writer *w, int64_t start)
{
    if (w->pos <= w->cap)
        put_le(w, kvx_crc32(0, w->p + start, (size_t)(w->pos - start)), 4);
    else
        reserve(w, CRC_SIZE);
}

static void write_header(writer *w, const layout *lo)
{
    uint8_t *at = reserve(w, 4);
    if (at)
        memcpy(at, CONTAINER_MAGIC, 4);
    put_le(w, KVX_CODEC_FORMAT_VERSION, 2);
    put_le(w, HEADER_SIZE, 2);
    put_le(w, (uint64_t)lo->dtype, 4);
    put_le(w, (uint64_t)lo->num_kv, 4);
    put_le(w, (uint64_t)lo->num_layers, 4);
    put_le(w, (uint64_t)lo->num_heads, 4);
    put_le(w, (uint64_t)lo->head_size, 4);
    put_le(w, (uint64_t)lo->num_bins, 4);
    put_le(w, (uint64_t)lo->num_tokens, 8);
    put_le(w, (uint64_t)lo->chunk_tokens, 4);
    put_le(w, (uint64_t)lo->num_chunks, 4);
    put_le(w, (uint64_t)lo->method, 4);
    put_le(w, 0, 8); /* reserved */
    for (int64_t r = 0; r < lo->rows; r++)
        put_le(w, (uint64_t)lo->bins[r], 2);
    put_crc(w, 0);
}

/* n scales as little-endian f32, or bf16 for the rotated method (whose scales are bfloat16
 * values: the top half of their float32 bits), whatever the host's byte order. */
static void put_scales(writer *w, const layout *lo, const float *scales, int64_t n)
{
    int64_t size = scale_bytes(lo);
    uint8_t *at = reserve(w, size * n);
    for (int64_t i = 0; at && i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &scales[i], sizeof bits);
        bits >>= 8 * (4 - size);
        for (int k = 0; k < size; k++)
            at[size * i + k] = (uint8_t)(bits >> (8 * k));
    }
}

static void write_chunk(writer *w, const layout *lo, int64_t index, int64_t tokens,
                        const chunk_buffers *b, count_job *job)
{
    int64_t streams = lo->rows * lo->channels, start = w->pos, payload = 0, counts = 0;
    int64_t lengths = 0;
    for (int64_t i = 0; i < streams; i++) {
        int64_t bytes = b->end_offsets[i];
        b->end_offsets[i] = counts; /* sizes become offsets for write_counts_range */
        counts += bytes;
        lengths += varint_size((uint32_t)b->lengths[i]);
        payload += b->lengths[i];
    }
    put_le(w, (uint64_t)index, 4);
    put_le(w, (uint64_t)tokens, 4);
    put_le(w, (uint64_t)counts, 8);
    put_le(w, (uint64_t)lengths, 8);
    put_le(w, (uint64_t)payload, 8);
    put_scales(w, lo, b->scales, lo->rows * tokens);
    if ((job->out = reserve(w, counts)))
        kvx_parallel_for(streams, 256, write_counts_range, job);
    for (int64_t i = 0; i < streams; i++)
        put_varint(w, (uint32_t)b->lengths[i]);
    for (int64_t i = 0; i < streams; i++) {
        uint8_t *at = reserve(w, b->lengths[i]);
        if (at)
            memcpy(at, b->streams + i * b->stream_capacity, (size_t)b->lengths[i]);
    }
    put_crc(w, start);
}

/* Encodes a chunk's streams into b->streams (slots of b->stream_capacity bytes). */
static int32_t encode_chunk(const kvx_backend *be, const layout *lo, int64_t tokens,
                            chunk_buffers *b, const kvx_stream *stream)
{
    kvx_codec_encode_args args = {.cdf = b->cdf,
                                  .cdf_len = lo->num_bins + 1,
                                  .symbols = b->symbols,
                                  .num_layers = lo->rows,
                                  .num_tokens = tokens,
                                  .num_channels = lo->channels,
                                  .streams = b->streams,
                                  .stream_capacity = b->stream_capacity,
                                  .lengths = b->lengths};
    return be->codec_encode(&args, stream);
}

/* Re-encodes a chunk whose streams did not fit the typical-size slots into worst-case ones. */
static int32_t grow_streams(const kvx_backend *be, const layout *lo, int64_t tokens,
                            chunk_buffers *b, const kvx_stream *stream)
{
    int64_t capacity = kvx_codec_stream_bound_of(lo->chunk_tokens);
    uint8_t *bigger = malloc((size_t)(lo->rows * lo->channels * capacity));
    if (!bigger)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "codec: cannot allocate %lld stream bytes",
                        (long long)(lo->rows * lo->channels * capacity));
    free(b->streams);
    b->streams = bigger;
    b->stream_capacity = capacity;
    kvx_clear_error();
    return encode_chunk(be, lo, tokens, b, stream);
}

static int32_t compress_chunks(const kvx_backend *be, const kvx_dense_desc *kv, const layout *lo,
                               writer *w, const kvx_stream *stream)
{
    chunk_buffers b;
    int64_t most = lo->chunk_tokens < lo->num_tokens ? lo->chunk_tokens : lo->num_tokens;
    int32_t rc = kvx_codec_buffers_alloc(&b, lo, most, 1);
    for (int64_t k = 0; !rc && k < lo->num_chunks; k++) {
        int64_t tokens = chunk_len(lo, k);
        count_job job = {lo, b.symbols, tokens, b.counts, b.cdf, b.models, b.end_offsets, NULL};
        rc = lo->method == KVX_CODEC_METHOD_ROTATED
                 ? kvx_codec_rotated_quantize(lo, kv, k * lo->chunk_tokens, tokens, b.symbols,
                                              b.scales)
                 : quantize_chunk(be, kv, lo, k * lo->chunk_tokens, tokens, &b, stream);
        if (rc)
            break;
        kvx_parallel_for(lo->rows * lo->channels, 64, count_range, &job);
        rc = encode_chunk(be, lo, tokens, &b, stream);
        if (rc == KVX_ERR_BUFFER_TOO_SMALL)
            rc = grow_streams(be, lo, tokens, &b, stream);
        if (!rc)
            write_chunk(w, lo, k, tokens, &b, &job);
    }
    kvx_codec_buffers_free(&b);
    return rc;
}

int32_t kvx_codec_compress(const kvx_dense_desc *kv_user, const kvx_codec_params *params_user,
                           void *dst, int64_t dst_capacity, int64_t *dst_size,
                           const kvx_stream *stream)
{
    int32_t rc;
    kvx_dense_desc kv;
    kvx_codec_params params;
    kvx_clear_error();
    if ((rc = kvx_codec_read_kv_args(kv_user, params_user, &kv, &params)) ||
        (rc = kvx_check_range("dst_capacity", dst_capacity, 0, INT64_MAX)) ||
        (rc = kvx_check_pointer("dst", dst, dst_capacity)) ||
        (rc = kvx_check_pointer("dst_size", dst_size, 1)))
        return rc;
    const kvx_backend *be = kvx_backend_for(stream);
    if (!be)
        return KVX_ERR_NOT_AVAILABLE;
    if (!kvx_backend_runs_container(be))
        return kvx_fail(KVX_ERR_UNSUPPORTED,
                        "codec_compress: the container is built in host "
                        "memory; the %s backend is not supported yet",
                        be->name);
    layout *lo = kvx_codec_layout_from_desc(&kv, &params);
    if (!lo)
        return KVX_ERR_OUT_OF_MEMORY;
    writer w = {dst, 0, dst_capacity};
    write_header(&w, lo);
    rc = compress_chunks(be, &kv, lo, &w, stream);
    free(lo);
    if (rc)
        return rc;
    if (w.pos > dst_capacity)
        return kvx_fail(KVX_ERR_BUFFER_TOO_SMALL,
                        "dst_capacity: expected >= %lld bytes, got "
                        "%lld (kvx_codec_compress_bound gives a safe size)",
                        (long long)w.pos, (long long)dst_capacity);
    *dst_size = w.pos;
    return KVX_OK;
}
