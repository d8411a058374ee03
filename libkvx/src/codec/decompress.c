/*
 * decompress.c - kvx_codec_decompress: pass 1 checks every chunk (frame, CRC, scales, stream
 * lengths) before anything is written; pass 2 reads each chunk's counts, rebuilds its CDF tables,
 * range-decodes and dequantizes into the caller's buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "container.h"

/* A rotated stream's Gaussian model (its head varint odd): the centre within the row's symbols,
 * then the spread byte. */
static int32_t read_model(reader *r, const layout *lo, int64_t index, int64_t i, uint32_t head,
                          stream_model *model)
{
    uint32_t center = head >> 1, top = (uint32_t)rotated_top(lo, i / lo->channels);
    if (center > 16 * top)
        return FAIL_CORRUPT("chunk[%lld].counts[%lld]: expected a model centre within 0..%u "
                            "(sixteenths of a symbol), got %u",
                            (long long)index, (long long)i, (unsigned)(16 * top), (unsigned)center);
    uint64_t spread = 0;
    int32_t rc = get_le(r, 1, &spread, "chunk.counts");
    if (!rc && model)
        *model = (stream_model){(uint16_t)center, (uint8_t)spread, 1};
    return rc;
}

/* One stream's counts: a run of varints summing to the chunk's tokens (stored into counts, a
 * zero-filled row of num_bins, when it is non-NULL). */
static int32_t read_run(reader *r, const layout *lo, int64_t index, int64_t i, uint32_t first,
                        const chunk_view *c, uint16_t *counts)
{
    int32_t rc, symbols = row_symbols(lo, i / lo->channels);
    uint32_t n = 0;
    uint64_t sum = 0;
    if ((rc = get_varint(r, &n, "chunk.counts")))
        return rc;
    if ((uint64_t)first + n > (uint64_t)symbols)
        return FAIL_CORRUPT("chunk[%lld].counts[%lld]: expected a run of symbols within "
                            "0..%d, got %u counts from symbol %u",
                            (long long)index, (long long)i, (int)symbols - 1, (unsigned)n,
                            (unsigned)first);
    for (uint32_t s = first; s < first + n; s++) {
        uint32_t v = 0;
        if ((rc = get_varint(r, &v, "chunk.counts")))
            return rc;
        sum += v;
        if (counts)
            counts[s] = (uint16_t)v;
    }
    if (sum != (uint64_t)c->tokens)
        return FAIL_CORRUPT("chunk[%lld].counts[%lld]: expected symbol counts summing to %lld "
                            "tokens, got %llu",
                            (long long)index, (long long)i, (long long)c->tokens,
                            (unsigned long long)sum);
    return KVX_OK;
}

/* Walks every stream's table: CacheGen's are counts; the rotated method's start with a varint
 * whose low bit tells a Gaussian model (centre in the other bits) from counts (first symbol).
 * With `counts` and `models` non-NULL also stores them ([streams, num_bins] and [streams]). */
static int32_t read_counts(const layout *lo, int64_t index, const chunk_view *c, uint16_t *counts,
                           stream_model *models)
{
    int32_t rc;
    int rotated = lo->method == KVX_CODEC_METHOD_ROTATED;
    reader r = {c->counts, 0, c->counts_size};
    for (int64_t i = 0; i < lo->rows * lo->channels; i++) {
        uint16_t *row = counts ? counts + i * lo->num_bins : NULL;
        uint32_t head = 0;
        if (row)
            memset(row, 0, (size_t)lo->num_bins * sizeof *row);
        if (models)
            models[i] = (stream_model){0, 0, 0};
        if ((rc = get_varint(&r, &head, "chunk.counts")))
            return rc;
        rc = rotated && (head & 1) ? read_model(&r, lo, index, i, head, models ? &models[i] : NULL)
                                   : read_run(&r, lo, index, i, rotated ? head >> 1 : head, c, row);
        if (rc)
            return rc;
    }
    if (r.pos != r.size)
        return FAIL_CORRUPT("chunk[%lld].counts_size: expected %lld bytes, got %lld",
                            (long long)index, (long long)r.pos, (long long)r.size);
    return KVX_OK;
}

/* Stream lengths as inclusive prefix sums (end_offsets may be NULL: check only). */
static int32_t read_lengths(const layout *lo, int64_t index, const chunk_view *c,
                            int64_t *end_offsets)
{
    int32_t rc;
    reader r = {c->lengths, 0, c->lengths_size};
    int64_t end = 0;
    for (int64_t i = 0; i < lo->rows * lo->channels; i++) {
        uint32_t v = 0;
        if ((rc = get_varint(&r, &v, "chunk.lengths")))
            return rc;
        end += v; /* cannot overflow: end <= payload_size < 2^63 before adding < 2^32 */
        if (end > c->payload_size)
            return FAIL_CORRUPT("chunk[%lld].lengths[%lld]: streams run past the payload "
                                "(%lld bytes)",
                                (long long)index, (long long)i, (long long)c->payload_size);
        if (end_offsets)
            end_offsets[i] = end;
    }
    if (r.pos != r.size)
        return FAIL_CORRUPT("chunk[%lld].lengths_size: expected %lld bytes, got %lld",
                            (long long)index, (long long)r.pos, (long long)r.size);
    if (end != c->payload_size)
        return FAIL_CORRUPT("chunk[%lld].payload_size: expected the sum of the stream lengths "
                            "(%lld), got %lld",
                            (long long)index, (long long)end, (long long)c->payload_size);
    return KVX_OK;
}

/* Scale i of a chunk's scales section (f32, or bf16 for the rotated method), as float32. */
static float scale_at(const layout *lo, const uint8_t *scales, int64_t i)
{
    int64_t size = scale_bytes(lo);
    uint32_t bits = (uint32_t)le_at(scales + size * i, (int)size) << (8 * (4 - size));
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* CacheGen's scales are max |x| of values of the KV dtype: finite, >= 0 and at most the dtype's
 * largest value, which keeps every decoded value (|value| <= scale) finite in that dtype. The
 * rotated method's are at most its limit, which keeps its inverse transform finite in float32
 * (the dtype then saturates). */
static int32_t check_scales(const layout *lo, int64_t index, const chunk_view *c)
{
    float largest = lo->method == KVX_CODEC_METHOD_ROTATED ? kvx_codec_rotated_limit(lo)
                    : lo->dtype == KVX_DTYPE_FLOAT16       ? 65504.0f
                    : lo->dtype == KVX_DTYPE_BFLOAT16      ? 3.3895313892515355e38f
                                                           : 3.4028234663852886e38f;
    for (int64_t i = 0; i < lo->rows * c->tokens; i++) {
        float f = scale_at(lo, c->scales, i);
        if (!(f >= 0.0f && f <= largest))
            return FAIL_CORRUPT("chunk[%lld].scales[%lld]: expected a finite value >= 0 and <= "
                                "%g (the dtype's largest), got %g",
                                (long long)index, (long long)i, (double)largest, (double)f);
    }
    return KVX_OK;
}

/* Pass 1 for one chunk at r->pos: structure, sizes and CRC; fills *c. */
static int32_t parse_chunk(reader *r, const layout *lo, int64_t index, chunk_view *c)
{
    int32_t rc;
    int64_t start = r->pos;
    uint32_t crc;
    if ((rc = kvx_codec_read_chunk_frame(r, lo, index, c, &crc)))
        return rc;
    uint32_t computed = kvx_crc32(0, r->p + start, (size_t)(r->pos - CRC_SIZE - start));
    if (crc != computed)
        return FAIL_CORRUPT("chunk[%lld].crc32: checksum mismatch (stored %08x, computed %08x)",
                            (long long)index, (unsigned)crc, (unsigned)computed);
    if ((rc = check_scales(lo, index, c)) || (rc = read_lengths(lo, index, c, NULL)))
        return rc;
    return KVX_OK;
}

/* The caller's output descriptor, read once into *out and checked against the container. */
static int32_t read_out_desc(const kvx_dense_desc *user, const layout *lo, kvx_dense_desc *out)
{
    int32_t rc;
    if ((rc = kvx_read_struct("out", "kvx_dense_desc", user, out, sizeof *out)) ||
        (rc = kvx_codec_check_kv_desc("out", out)))
        return rc;
#define SAME(field, value)                                                                     \
    if ((int64_t)out->field != (int64_t)(value))                                               \
        return FAIL_ARG("out->" #field ": expected %lld (the container's), got %lld",          \
                        (long long)(value), (long long)out->field);
    SAME(dtype, lo->dtype)
    SAME(num_kv, lo->num_kv)
    SAME(num_layers, lo->num_layers)
    SAME(num_heads, lo->num_heads)
    SAME(head_size, lo->head_size)
    SAME(num_tokens, lo->num_tokens)
#undef SAME
    return KVX_OK;
}

static void scales_from_le(const layout *lo, const uint8_t *p, int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = scale_at(lo, p, i);
}

typedef struct cdf_build_job {
    const layout *lo;
    const uint16_t *counts;
    const stream_model *models;
    int64_t tokens;
    uint16_t *cdf;
} cdf_build_job;

static void cdf_build_range(void *ctx, int64_t begin, int64_t end)
{
    const cdf_build_job *job = ctx;
    int32_t nb = job->lo->num_bins;
    for (int64_t i = begin; i < end; i++) {
        uint16_t *cdf = job->cdf + i * (nb + 1);
        if (job->models[i].gaussian)
            kvx_codec_cdf_from_model(job->models[i], rotated_top(job->lo, i / job->lo->channels),
                                     nb, cdf);
        else
            kvx_codec_cdf_from_counts(job->counts + i * nb, nb, job->tokens, cdf);
    }
}

/* Dequantizes a chunk's decoded symbols, plane by plane, into its tokens of out. */
static int32_t dequantize_chunk(const kvx_backend *be, const layout *lo, int64_t index,
                                const chunk_view *c, const chunk_buffers *b,
                                const kvx_dense_desc *out, const kvx_stream *stream)
{
    int64_t es = kvx_dtype_size(lo->dtype), plane = lo->num_layers * c->tokens;
    int64_t t0 = index * lo->chunk_tokens;
    for (int32_t p = 0; p < lo->num_kv; p++) {
        uint8_t *dst = (uint8_t *)out->base + (p * out->kv_stride + t0 * out->token_stride) * es;
        kvx_codec_dequantize_args args = {.symbols = b->symbols + p * plane * lo->channels,
                                          .scales = b->scales + p * plane,
                                          .bins = lo->bins + p * lo->num_layers,
                                          .num_rows = lo->num_layers,
                                          .num_tokens = c->tokens,
                                          .num_channels = lo->channels,
                                          .dtype = lo->dtype,
                                          .out = dst,
                                          .row_stride = out->layer_stride,
                                          .token_stride = out->token_stride};
        int32_t rc = be->codec_dequantize(&args, stream);
        if (rc)
            return rc;
    }
    return KVX_OK;
}

/* Pass 2 for one chunk: tables, range decoding, dequantization into out. */
static int32_t decode_chunk(const kvx_backend *be, const layout *lo, int64_t index,
                            const chunk_view *c, chunk_buffers *b, const kvx_dense_desc *out,
                            const kvx_stream *stream)
{
    int32_t rc;
    int64_t streams = lo->rows * lo->channels;
    if ((rc = read_counts(lo, index, c, b->counts, b->models)) ||
        (rc = read_lengths(lo, index, c, b->end_offsets)))
        return rc;
    cdf_build_job job = {lo, b->counts, b->models, c->tokens, b->cdf};
    kvx_parallel_for(streams, 256, cdf_build_range, &job);
    scales_from_le(lo, c->scales, lo->rows * c->tokens, b->scales);
    kvx_codec_decode_args coded = {.cdf = b->cdf,
                                   .cdf_len = lo->num_bins + 1,
                                   .bytes = c->payload,
                                   .num_bytes = c->payload_size,
                                   .end_offsets = b->end_offsets,
                                   .num_layers = lo->rows,
                                   .num_tokens = c->tokens,
                                   .num_channels = lo->channels,
                                   .symbols = b->symbols};
    if ((rc = be->codec_decode(&coded, stream)))
        return rc;
    if (lo->method == KVX_CODEC_METHOD_ROTATED)
        return kvx_codec_rotated_dequantize(lo, out, index * lo->chunk_tokens, c->tokens,
                                            b->symbols, b->scales);
    return dequantize_chunk(be, lo, index, c, b, out, stream);
}

static int32_t decompress_chunks(const kvx_backend *be, const void *src, int64_t src_size,
                                 const layout *lo, const kvx_dense_desc *out,
                                 const kvx_stream *stream)
{
    int32_t rc = KVX_OK;
    reader r = {src, header_bytes(lo->rows), src_size};
    /* num_chunks is backed by the blob (kvx_codec_parse_header checked its least size). */
    chunk_view *views = calloc((size_t)lo->num_chunks + 1, sizeof *views);
    if (!views)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "codec: cannot allocate %lld chunk views",
                        (long long)lo->num_chunks);
    for (int64_t k = 0; !rc && k < lo->num_chunks; k++)
        rc = parse_chunk(&r, lo, k, &views[k]);
    if (!rc && r.pos != src_size)
        rc = FAIL_CORRUPT("src_size: %lld bytes follow the last chunk",
                          (long long)(src_size - r.pos));
    chunk_buffers b;
    memset(&b, 0, sizeof b);
    if (!rc && lo->num_chunks > 0)
        rc = kvx_codec_buffers_alloc(&b, lo, views[0].tokens, 0);
    for (int64_t k = 0; !rc && k < lo->num_chunks; k++)
        rc = decode_chunk(be, lo, k, &views[k], &b, out, stream);
    kvx_codec_buffers_free(&b);
    free(views);
    return rc;
}

int32_t kvx_codec_decompress(const void *src, int64_t src_size, const kvx_dense_desc *out_user,
                             const kvx_stream *stream)
{
    int32_t rc;
    layout *lo;
    kvx_dense_desc out;
    kvx_clear_error();
    if ((rc = kvx_codec_check_source(src, src_size)))
        return rc;
    const kvx_backend *be = kvx_backend_for(stream);
    if (!be)
        return KVX_ERR_NOT_AVAILABLE;
    if (!kvx_backend_runs_container(be))
        return kvx_fail(KVX_ERR_UNSUPPORTED,
                        "codec_decompress: the container is read in host "
                        "memory; the %s backend is not supported yet",
                        be->name);
    if ((rc = kvx_codec_parse_header(src, src_size, &lo)))
        return rc;
    if (!(rc = read_out_desc(out_user, lo, &out)))
        rc = decompress_chunks(be, src, src_size, lo, &out, stream);
    free(lo);
    return rc;
}
