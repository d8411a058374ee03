/*
 * container.c - kvx's CacheGen container (docs/codec-container.md): serialisation and a
 * parser that treats every byte as hostile.
 *
 * Host-side and backend-independent: quantization, range coding and dequantization go through
 * the backend's codec entries; this file adds the per-chunk symbol counts (from which both sides
 * derive LMCache's CDF tables), the byte layout and the checksums.
 *
 * Decoding validates in two passes so that damage is reported before the output is written:
 * pass 1 walks every chunk, bounds-checks every size against the bytes that are really there,
 * verifies each CRC-32, the scales and the stream lengths; pass 2 parses each chunk's symbol
 * counts (checked again: they must sum to the chunk's tokens) and decodes. Nothing is allocated
 * from a declared size before the blob is known to be large enough to hold what it declares.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/codec_checks.h"
#include "bytes.h"
#include "crc32.h"

#define FAIL_CORRUPT(...) kvx_fail(KVX_ERR_CORRUPT_INPUT, __VA_ARGS__)

enum {
    HEADER_SIZE = 60,        /* fixed part of the file header, before the bins table */
    CHUNK_HEADER_SIZE = 32,  /* index, tokens, three section sizes */
    CRC_SIZE = 4,
    MAX_CHUNK_TOKENS = 65535 /* symbol counts stay uint16 */
};

static const uint8_t MAGIC[4] = {'K', 'V', 'X', 'C'};

/* ---------------------------------------------------------------- shared layout */

typedef struct layout {
    int32_t dtype, num_kv, num_layers, num_heads, head_size, num_bins;
    int64_t rows, channels, num_tokens, chunk_tokens, num_chunks;
    int32_t bins[]; /* rows entries (allocated with the struct) */
} layout;

static int64_t chunk_len(const layout *lo, int64_t chunk)
{
    int64_t left = lo->num_tokens - chunk * lo->chunk_tokens;
    return left < lo->chunk_tokens ? left : lo->chunk_tokens;
}

static int64_t header_bytes(int64_t rows) { return HEADER_SIZE + 2 * rows + CRC_SIZE; }

/* Symbols a row can produce: 0 .. bins - 2. */
static int32_t row_symbols(const layout *lo, int64_t row) { return lo->bins[row] - 1; }

/* cdf[s] = (65535 - num_bins) * (symbols below s) / tokens + s: LMCache's calculate_cdf. */
static void cdf_from_counts(const uint16_t *counts, int32_t num_bins, int64_t tokens,
                            uint16_t *cdf)
{
    uint64_t below = 0, top = (uint64_t)(0xffff - num_bins);
    for (int32_t s = 0; s <= num_bins; s++) {
        uint64_t scaled = tokens ? top * below / (uint64_t)tokens : 0;
        cdf[s] = (uint16_t)(scaled + (uint64_t)s);
        if (s < num_bins)
            below += counts[s];
    }
}

/* ---------------------------------------------------------------- argument checks */

static int32_t check_kv_desc(const char *name, const kvx_dense_desc *d)
{
    int32_t rc;
    if (d->dtype != KVX_DTYPE_FLOAT32 && d->dtype != KVX_DTYPE_FLOAT16 &&
        d->dtype != KVX_DTYPE_BFLOAT16)
        return FAIL_ARG("%s->dtype: expected KVX_DTYPE_FLOAT32 (1), FLOAT16 (2) or BFLOAT16 (3), "
                        "got %d", name, (int)d->dtype);
    if (d->num_kv < 1 || d->num_kv > 2)
        return FAIL_ARG("%s->num_kv: expected 1 or 2, got %d", name, (int)d->num_kv);
    if (d->num_layers < 1 || d->num_heads < 1 || d->head_size < 1)
        return FAIL_ARG("%s: expected num_layers, num_heads, head_size >= 1, got %d, %d, %d",
                        name, (int)d->num_layers, (int)d->num_heads, (int)d->head_size);
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
    if (p->reserved0 != 0)
        return FAIL_ARG("params->reserved0: expected 0, got %d", (int)p->reserved0);
    if ((rc = kvx_codec_check_bins("params->key_bins", p->key_bins, kv->num_layers)) ||
        (kv->num_kv == 2 &&
         (rc = kvx_codec_check_bins("params->value_bins", p->value_bins, kv->num_layers))))
        return rc;
    return kvx_check_range("params->chunk_tokens", p->chunk_tokens, 1, MAX_CHUNK_TOKENS);
}

/* The caller's kv descriptor and parameters, read once into *kv and *params and checked. */
static int32_t read_kv_args(const kvx_dense_desc *kv_user, const kvx_codec_params *params_user,
                            kvx_dense_desc *kv, kvx_codec_params *params)
{
    int32_t rc;
    if ((rc = kvx_read_struct("kv", "kvx_dense_desc", kv_user, kv, sizeof *kv)) ||
        (rc = kvx_read_struct("params", "kvx_codec_params", params_user, params,
                              sizeof *params)) ||
        (rc = check_kv_desc("kv", kv)))
        return rc;
    return check_params(kv, params);
}

static layout *layout_new(int64_t rows)
{
    layout *lo = calloc(1, sizeof(layout) + (size_t)rows * sizeof(int32_t));
    if (!lo)
        kvx_fail(KVX_ERR_OUT_OF_MEMORY, "codec: cannot allocate the bins of %lld rows",
                 (long long)rows);
    return lo;
}

static layout *layout_from_desc(const kvx_dense_desc *kv, const kvx_codec_params *p)
{
    int64_t rows = (int64_t)kv->num_kv * kv->num_layers;
    layout *lo = layout_new(rows);
    if (!lo)
        return NULL;
    *lo = (layout){kv->dtype, kv->num_kv, kv->num_layers, kv->num_heads, kv->head_size, 0,
                   rows, (int64_t)kv->num_heads * kv->head_size, kv->num_tokens,
                   p->chunk_tokens, (kv->num_tokens + p->chunk_tokens - 1) / p->chunk_tokens};
    for (int64_t r = 0; r < rows; r++) {
        lo->bins[r] = r < kv->num_layers ? p->key_bins[r] : p->value_bins[r - kv->num_layers];
        lo->num_bins = lo->bins[r] > lo->num_bins ? lo->bins[r] : lo->num_bins;
    }
    return lo;
}

/* ---------------------------------------------------------------- bounds */

/* Bytes of one chunk of `tokens` tokens: worst case when worst != 0, else the least any valid
 * chunk can take (every stream needs at least one count, one length and one payload byte). */
static int32_t chunk_size(const layout *lo, int64_t tokens, int worst, int64_t *out)
{
    int64_t streams = lo->rows * lo->channels, count_bytes = 0, total;
    int64_t per_stream_payload = worst ? kvx_codec_stream_bound_of(tokens) : 1;
    /* Per stream: first symbol and run length (<= 2 bytes each), then <= 3 bytes per count;
     * at least those two and one count (a chunk has >= 1 token) of one byte each. */
    for (int64_t r = 0; r < lo->rows; r++)
        count_bytes += worst ? 4 + 3 * (int64_t)row_symbols(lo, r) : 3;
    int64_t counts, payload, lengths = streams * (worst ? MAX_VARINT32 : 1);
    if (__builtin_mul_overflow(count_bytes, lo->channels, &counts) ||
        __builtin_mul_overflow(streams, per_stream_payload, &payload) ||
        __builtin_add_overflow(counts, payload, &total) ||
        __builtin_add_overflow(total, lengths, &total) ||
        __builtin_add_overflow(total, 4 * lo->rows * tokens, &total) ||
        __builtin_add_overflow(total, (int64_t)CHUNK_HEADER_SIZE + CRC_SIZE, &total))
        return FAIL_ARG("codec: the container size overflows int64");
    *out = total;
    return KVX_OK;
}

static int32_t container_size(const layout *lo, int worst, int64_t *out)
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

int32_t kvx_codec_compress_bound(const kvx_dense_desc *kv_user,
                                 const kvx_codec_params *params_user, int64_t *bound)
{
    int32_t rc;
    kvx_dense_desc kv;
    kvx_codec_params params;
    kvx_clear_error();
    if ((rc = read_kv_args(kv_user, params_user, &kv, &params)) ||
        (rc = kvx_check_pointer("bound", bound, 1)))
        return rc;
    layout *lo = layout_from_desc(&kv, &params);
    if (!lo)
        return KVX_ERR_OUT_OF_MEMORY;
    rc = container_size(lo, 1, bound);
    free(lo);
    return rc;
}

/* ---------------------------------------------------------------- compress */

typedef struct chunk_buffers {
    uint8_t *symbols;    /* [rows, tokens, channels] */
    float *scales;       /* [rows, tokens] */
    uint16_t *counts;    /* [rows, channels, num_bins] */
    uint16_t *cdf;       /* [rows, channels, num_bins + 1] */
    int64_t *end_offsets; /* [rows * channels]; compress: where each stream's counts start */
    int32_t *lengths;    /* [rows * channels] */
    uint8_t *streams;    /* [rows * channels, stream_capacity] (compress only) */
    int64_t stream_capacity;
} chunk_buffers;

static void buffers_free(chunk_buffers *b)
{
    free(b->symbols);
    free(b->scales);
    free(b->counts);
    free(b->cdf);
    free(b->end_offsets);
    free(b->lengths);
    free(b->streams);
    memset(b, 0, sizeof *b);
}

static int32_t buffers_alloc(chunk_buffers *b, const layout *lo, int64_t tokens, int with_streams)
{
    int64_t streams = lo->rows * lo->channels;
    memset(b, 0, sizeof *b);
    b->symbols = malloc((size_t)(lo->rows * tokens * lo->channels) + 1);
    b->scales = malloc((size_t)(lo->rows * tokens) * sizeof(float) + 1);
    b->counts = malloc((size_t)(streams * lo->num_bins) * sizeof(uint16_t));
    b->cdf = malloc((size_t)(streams * (lo->num_bins + 1)) * sizeof(uint16_t));
    b->end_offsets = malloc((size_t)(streams + 1) * sizeof(int64_t));
    b->lengths = malloc((size_t)streams * sizeof(int32_t));
    if (with_streams) {
        /* Slots sized for 6 bits per symbol, not the 18-bit worst case: a stream longer than
         * that is re-encoded into worst-case slots (compress_chunks), and the smaller buffer
         * halves the memory the encoder touches. Symbols cost about log2(bins) bits at most
         * under their own chunk's statistics. */
        int64_t typical = (tokens * 6 + 7) / 8 + 16, worst = kvx_codec_stream_bound_of(tokens);
        b->stream_capacity = typical < worst ? typical : worst;
        b->streams = malloc((size_t)(streams * b->stream_capacity));
    }
    if (!b->symbols || !b->scales || !b->counts || !b->cdf || !b->end_offsets || !b->lengths ||
        (with_streams && !b->streams)) {
        buffers_free(b);
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "codec: cannot allocate the work buffers of a "
                        "%lld-token chunk", (long long)tokens);
    }
    return KVX_OK;
}

typedef struct count_job {
    const layout *lo;
    const uint8_t *symbols;
    int64_t tokens;
    uint16_t *counts;
    uint16_t *cdf;
    int64_t *count_bytes; /* [streams]: bytes of the stream's counts as varints */
    uint8_t *out;         /* write pass: the counts section; count_bytes then holds offsets */
} count_job;

/* The run of symbols a stream's counts cover: from the first to the last non-zero count (a
 * stream's values sit in a few symbols around the middle, so this halves the counts section).
 * An all-zero histogram (no tokens) gives an empty run. */
static void count_span(const uint16_t *counts, int32_t symbols, int32_t *first, int32_t *n)
{
    int32_t lo = 0, hi = symbols - 1;
    while (lo < symbols && counts[lo] == 0)
        lo++;
    while (hi >= lo && counts[hi] == 0)
        hi--;
    *first = lo < symbols ? lo : 0;
    *n = hi >= lo ? hi - lo + 1 : 0;
}

/* Writes every stream's counts at its offset: streams are independent, so this runs in
 * parallel (a chunk holds millions of counts). */
static void write_counts_range(void *ctx, int64_t begin, int64_t end)
{
    const count_job *job = ctx;
    const layout *lo = job->lo;
    for (int64_t i = begin; i < end; i++) {
        const uint16_t *counts = job->counts + i * lo->num_bins;
        int32_t first, n;
        count_span(counts, row_symbols(lo, i / lo->channels), &first, &n);
        uint8_t *p = varint_write(job->out + job->count_bytes[i], (uint32_t)first);
        p = varint_write(p, (uint32_t)n);
        for (int32_t s = first; s < first + n; s++)
            p = varint_write(p, counts[s]);
    }
}

/* Histogram and CDF of one stream, per work item: channels are read token by token. */
static void count_range(void *ctx, int64_t begin, int64_t end)
{
    const count_job *job = ctx;
    const layout *lo = job->lo;
    int32_t nb = lo->num_bins;
    for (int64_t i = begin; i < end; i++) {
        int64_t row = i / lo->channels, c = i % lo->channels;
        uint16_t *counts = job->counts + i * nb;
        memset(counts, 0, (size_t)nb * sizeof *counts);
        const uint8_t *p = job->symbols + row * job->tokens * lo->channels + c;
        for (int64_t t = 0; t < job->tokens; t++, p += lo->channels)
            counts[*p]++;
        cdf_from_counts(counts, nb, job->tokens, job->cdf + i * (nb + 1));
        int32_t first, n;
        count_span(counts, row_symbols(lo, row), &first, &n);
        int64_t bytes = varint_size((uint32_t)first) + varint_size((uint32_t)n);
        for (int32_t s = first; s < first + n; s++)
            bytes += varint_size(counts[s]);
        job->count_bytes[i] = bytes;
    }
}

static int32_t quantize_chunk(const kvx_backend *be, const kvx_dense_desc *kv, const layout *lo,
                              int64_t t0, int64_t tokens, chunk_buffers *b,
                              const kvx_stream *stream)
{
    int64_t es = kvx_dtype_size(kv->dtype), plane = lo->num_layers * tokens;
    for (int32_t p = 0; p < lo->num_kv; p++) {
        const uint8_t *x = (const uint8_t *)kv->base + (p * kv->kv_stride + t0 * kv->token_stride) * es;
        kvx_codec_quantize_args args = {.x = x, .dtype = kv->dtype, .num_rows = lo->num_layers,
            .num_tokens = tokens, .num_channels = lo->channels, .row_stride = kv->layer_stride,
            .token_stride = kv->token_stride, .bins = lo->bins + p * lo->num_layers,
            .symbols = b->symbols + p * plane * lo->channels, .scales = b->scales + p * plane};
        int32_t rc = be->codec_quantize(&args, stream);
        if (rc) {
            /* The backend names rows and tokens of this chunk's plane; say where that is. */
            char detail[400];
            snprintf(detail, sizeof detail, "%s", kvx_last_error());
            return kvx_fail(rc, "kv (plane %d, chunk from token %lld): %s", (int)p,
                            (long long)t0, detail);
        }
    }
    return KVX_OK;
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
    uint8_t *at = reserve(w, 4 * lo->rows * tokens);
    for (int64_t i = 0; at && i < lo->rows * tokens; i++) {
        uint32_t bits;
        memcpy(&bits, &b->scales[i], sizeof bits);
        for (int k = 0; k < 4; k++)
            at[4 * i + k] = (uint8_t)(bits >> (8 * k));
    }
    if ((job->out = reserve(w, counts)))
        kvx_parallel_for(streams, 256, write_counts_range, job);
    for (int64_t i = 0; i < streams; i++)
        put_varint(w, (uint32_t)b->lengths[i]);
    for (int64_t i = 0; i < streams; i++) {
        at = reserve(w, b->lengths[i]);
        if (at)
            memcpy(at, b->streams + i * b->stream_capacity, (size_t)b->lengths[i]);
    }
    if (w->pos <= w->cap)
        put_le(w, kvx_codec_crc32(w->p + start, w->pos - start), 4);
    else
        reserve(w, CRC_SIZE);
}

static void write_header(writer *w, const layout *lo)
{
    uint8_t *at = reserve(w, 4);
    if (at)
        memcpy(at, MAGIC, 4);
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
    put_le(w, 0, 4); /* flags */
    put_le(w, 0, 8); /* reserved */
    for (int64_t r = 0; r < lo->rows; r++)
        put_le(w, (uint64_t)lo->bins[r], 2);
    if (w->pos <= w->cap)
        put_le(w, kvx_codec_crc32(w->p, w->pos), 4);
    else
        reserve(w, CRC_SIZE);
}

/* Encodes a chunk's streams into b->streams (slots of b->stream_capacity bytes). */
static int32_t encode_chunk(const kvx_backend *be, const layout *lo, int64_t tokens,
                            chunk_buffers *b, const kvx_stream *stream)
{
    kvx_codec_encode_args args = {.cdf = b->cdf, .cdf_len = lo->num_bins + 1,
        .symbols = b->symbols, .num_layers = lo->rows, .num_tokens = tokens,
        .num_channels = lo->channels, .streams = b->streams,
        .stream_capacity = b->stream_capacity, .lengths = b->lengths};
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
    int32_t rc = buffers_alloc(&b, lo, lo->chunk_tokens < lo->num_tokens ? lo->chunk_tokens
                                                                          : lo->num_tokens, 1);
    for (int64_t k = 0; !rc && k < lo->num_chunks; k++) {
        int64_t tokens = chunk_len(lo, k);
        count_job job = {lo, b.symbols, tokens, b.counts, b.cdf, b.end_offsets, NULL};
        if ((rc = quantize_chunk(be, kv, lo, k * lo->chunk_tokens, tokens, &b, stream)))
            break;
        kvx_parallel_for(lo->rows * lo->channels, 64, count_range, &job);
        rc = encode_chunk(be, lo, tokens, &b, stream);
        if (rc == KVX_ERR_BUFFER_TOO_SMALL)
            rc = grow_streams(be, lo, tokens, &b, stream);
        if (!rc)
            write_chunk(w, lo, k, tokens, &b, &job);
    }
    buffers_free(&b);
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
    if ((rc = read_kv_args(kv_user, params_user, &kv, &params)) ||
        (rc = kvx_check_range("dst_capacity", dst_capacity, 0, INT64_MAX)) ||
        (rc = kvx_check_pointer("dst", dst, dst_capacity)) ||
        (rc = kvx_check_pointer("dst_size", dst_size, 1)))
        return rc;
    const kvx_backend *be = kvx_backend_for(stream);
    if (!be)
        return KVX_ERR_NOT_AVAILABLE;
    if (be->device_type != KVX_DEVICE_CPU || !be->codec_quantize || !be->codec_encode)
        return kvx_fail(KVX_ERR_UNSUPPORTED, "codec_compress: the container is built in host "
                        "memory; the %s backend is not supported yet", be->name);
    layout *lo = layout_from_desc(&kv, &params);
    if (!lo)
        return KVX_ERR_OUT_OF_MEMORY;
    writer w = {dst, 0, dst_capacity};
    write_header(&w, lo);
    rc = compress_chunks(be, &kv, lo, &w, stream);
    free(lo);
    if (rc)
        return rc;
    if (w.pos > dst_capacity)
        return kvx_fail(KVX_ERR_BUFFER_TOO_SMALL, "dst_capacity: expected >= %lld bytes, got "
                        "%lld (kvx_codec_compress_bound gives a safe size)",
                        (long long)w.pos, (long long)dst_capacity);
    *dst_size = w.pos;
    return KVX_OK;
}

/* ---------------------------------------------------------------- inspect */

static int32_t field_range(const char *field, uint64_t value, int64_t lo, int64_t hi)
{
    if (value < (uint64_t)lo || value > (uint64_t)hi)
        return FAIL_CORRUPT("%s: expected %lld..%lld, got %llu", field, (long long)lo,
                            (long long)hi, (unsigned long long)value);
    return KVX_OK;
}

/* Reads and checks the fixed header fields into *lo (bins excluded). */
static int32_t parse_fixed_header(reader *r, layout *lo)
{
    int32_t rc;
    uint64_t v[13] = {0};
    static const int widths[13] = {2, 2, 4, 4, 4, 4, 4, 4, 8, 4, 4, 4, 8};
    static const char *const names[13] = {
        "header.version", "header.header_size", "header.dtype", "header.num_kv",
        "header.num_layers", "header.num_heads", "header.head_size", "header.num_bins",
        "header.num_tokens", "header.chunk_tokens", "header.num_chunks", "header.flags",
        "header.reserved"};
    if ((rc = need(r, 4, "header.magic")))
        return rc;
    if (memcmp(r->p, MAGIC, 4) != 0)
        return FAIL_CORRUPT("header.magic: expected \"KVXC\", got %02x %02x %02x %02x", r->p[0],
                            r->p[1], r->p[2], r->p[3]);
    r->pos = 4;
    for (int i = 0; i < 13; i++)
        if ((rc = get_le(r, widths[i], &v[i], names[i])))
            return rc;
    if ((rc = field_range(names[0], v[0], KVX_CODEC_FORMAT_VERSION, KVX_CODEC_FORMAT_VERSION)) ||
        (rc = field_range(names[1], v[1], HEADER_SIZE, HEADER_SIZE)))
        return rc;
    if (v[2] != KVX_DTYPE_FLOAT32 && v[2] != KVX_DTYPE_FLOAT16 && v[2] != KVX_DTYPE_BFLOAT16)
        return FAIL_CORRUPT("header.dtype: expected 1 (float32), 2 (float16) or 3 (bfloat16), "
                            "got %llu", (unsigned long long)v[2]);
    if ((rc = field_range(names[3], v[3], 1, 2)) ||
        (rc = field_range(names[4], v[4], 1, INT32_MAX)) ||
        (rc = field_range(names[5], v[5], 1, INT32_MAX)) ||
        (rc = field_range(names[6], v[6], 1, INT32_MAX)) ||
        (rc = field_range(names[7], v[7], KVX_CODEC_MIN_BINS, KVX_CODEC_MAX_BINS)) ||
        (rc = field_range(names[8], v[8], 0, KVX_CODEC_MAX_TOKENS)) ||
        (rc = field_range(names[9], v[9], 1, MAX_CHUNK_TOKENS)) ||
        (rc = field_range(names[11], v[11], 0, 0)) || (rc = field_range(names[12], v[12], 0, 0)))
        return rc;
    if (v[5] * v[6] > INT32_MAX)
        return FAIL_CORRUPT("header.num_heads * header.head_size: expected <= %d, got %llu",
                            INT32_MAX, (unsigned long long)(v[5] * v[6]));
    uint64_t chunks = (v[8] + v[9] - 1) / v[9];
    if (v[10] != chunks)
        return FAIL_CORRUPT("header.num_chunks: expected %llu (num_tokens / chunk_tokens, "
                            "rounded up), got %llu",
                            (unsigned long long)chunks, (unsigned long long)v[10]);
    *lo = (layout){(int32_t)v[2], (int32_t)v[3], (int32_t)v[4], (int32_t)v[5], (int32_t)v[6],
                   (int32_t)v[7], (int64_t)(v[3] * v[4]), (int64_t)(v[5] * v[6]),
                   (int64_t)v[8], (int64_t)v[9], (int64_t)v[10]};
    return KVX_OK;
}

static int32_t parse_bins(reader *r, layout *lo)
{
    int32_t largest = 0, rc;
    for (int64_t i = 0; i < lo->rows; i++) {
        uint64_t b;
        if ((rc = get_le(r, 2, &b, "header.bins")))
            return rc;
        if (b < KVX_CODEC_MIN_BINS || b > KVX_CODEC_MAX_BINS)
            return FAIL_CORRUPT("header.bins[%lld]: expected %d..%d, got %llu", (long long)i,
                                KVX_CODEC_MIN_BINS, KVX_CODEC_MAX_BINS, (unsigned long long)b);
        lo->bins[i] = (int32_t)b;
        largest = lo->bins[i] > largest ? lo->bins[i] : largest;
    }
    if (largest != lo->num_bins)
        return FAIL_CORRUPT("header.num_bins: expected the largest bins (%d), got %d", largest,
                            (int)lo->num_bins);
    return KVX_OK;
}

/* The whole header, its CRC, and a size check so that nothing is allocated from a declared size
 * the blob cannot back. *out is allocated here; the caller frees it. */
static int32_t parse_header(const void *src, int64_t src_size, layout **out)
{
    int32_t rc;
    layout head, *lo;
    reader r = {src, 0, src_size};
    memset(&head, 0, sizeof head);
    *out = NULL;
    if ((rc = parse_fixed_header(&r, &head)))
        return rc;
    /* Each row costs at least 2 header bytes: bound the allocation by the blob first. */
    if ((rc = need(&r, 2 * head.rows + CRC_SIZE, "header.bins")))
        return rc;
    if (!(lo = layout_new(head.rows)))
        return KVX_ERR_OUT_OF_MEMORY;
    memcpy(lo, &head, offsetof(layout, bins));
    uint64_t crc;
    if ((rc = parse_bins(&r, lo)) || (rc = get_le(&r, 4, &crc, "header.crc32")))
        goto fail;
    if (crc != kvx_codec_crc32(src, r.pos - CRC_SIZE)) {
        rc = FAIL_CORRUPT("header.crc32: checksum mismatch (stored %08llx, computed %08x)",
                          (unsigned long long)crc,
                          (unsigned)kvx_codec_crc32(src, r.pos - CRC_SIZE));
        goto fail;
    }
    int64_t least;
    if ((rc = container_size(lo, 0, &least)))
        goto fail;
    if (src_size < least) {
        rc = FAIL_CORRUPT("src_size: the header declares %lld tokens in %lld chunks, which take "
                          "at least %lld bytes; the container has %lld (truncated?)",
                          (long long)lo->num_tokens, (long long)lo->num_chunks, (long long)least,
                          (long long)src_size);
        goto fail;
    }
    *out = lo;
    return KVX_OK;
fail:
    free(lo);
    return rc;
}

/* Writes what the container holds into the caller's info (as much as its struct_size asks). */
static int32_t fill_info(const layout *lo, kvx_codec_info *user)
{
    int64_t bytes;
    if (kvx_codec_product("decoded_bytes", lo->rows * lo->channels, lo->num_tokens,
                          kvx_dtype_size(lo->dtype), &bytes))
        return FAIL_CORRUPT("header: the decoded size overflows int64");
    kvx_codec_info info = {sizeof(kvx_codec_info), KVX_CODEC_FORMAT_VERSION, lo->dtype,
                           lo->num_kv, lo->num_layers, lo->num_heads, lo->head_size,
                           lo->num_bins, lo->num_tokens, lo->chunk_tokens, lo->num_chunks,
                           bytes};
    return kvx_write_struct("info", "kvx_codec_info", user, &info, sizeof info);
}

/* ---------------------------------------------------------------- chunk frames */

typedef struct chunk_view {
    int64_t tokens;
    const uint8_t *scales, *counts, *lengths, *payload;
    int64_t counts_size, lengths_size, payload_size;
} chunk_view;

/* One chunk's frame at r->pos: its index and token count as expected, its sections within the
 * blob; fills *c, stores the chunk's CRC in *stored_crc and leaves r after it. */
static int32_t read_chunk_frame(reader *r, const layout *lo, int64_t index, chunk_view *c,
                                uint32_t *stored_crc)
{
    int32_t rc;
    uint64_t idx, tokens, sizes[3], crc;
    if ((rc = get_le(r, 4, &idx, "chunk.index")) || (rc = get_le(r, 4, &tokens, "chunk.tokens")) ||
        (rc = get_le(r, 8, &sizes[0], "chunk.counts_size")) ||
        (rc = get_le(r, 8, &sizes[1], "chunk.lengths_size")) ||
        (rc = get_le(r, 8, &sizes[2], "chunk.payload_size")))
        return rc;
    if (idx != (uint64_t)index)
        return FAIL_CORRUPT("chunk[%lld].index: expected %lld, got %llu", (long long)index,
                            (long long)index, (unsigned long long)idx);
    if (tokens != (uint64_t)chunk_len(lo, index))
        return FAIL_CORRUPT("chunk[%lld].tokens: expected %lld, got %llu", (long long)index,
                            (long long)chunk_len(lo, index), (unsigned long long)tokens);
    c->tokens = (int64_t)tokens;
    static const char *const names[3] = {"chunk.counts_size", "chunk.lengths_size",
                                         "chunk.payload_size"};
    const uint8_t **parts[3] = {&c->counts, &c->lengths, &c->payload};
    int64_t *part_sizes[3] = {&c->counts_size, &c->lengths_size, &c->payload_size};
    if ((rc = need(r, 4 * lo->rows * c->tokens, "chunk.scales")))
        return rc;
    c->scales = r->p + r->pos;
    r->pos += 4 * lo->rows * c->tokens;
    for (int i = 0; i < 3; i++) {
        if (sizes[i] > (uint64_t)(r->size - r->pos))
            return FAIL_CORRUPT("%s: chunk %lld declares %llu bytes, only %lld remain", names[i],
                                (long long)index, (unsigned long long)sizes[i],
                                (long long)(r->size - r->pos));
        *parts[i] = r->p + r->pos;
        *part_sizes[i] = (int64_t)sizes[i];
        r->pos += (int64_t)sizes[i];
    }
    if ((rc = get_le(r, 4, &crc, "chunk.crc32")))
        return rc;
    *stored_crc = (uint32_t)crc;
    return KVX_OK;
}

/* Every chunk's frame, in order, and nothing after the last: what can be verified of the blob
 * without reading its contents, so that a forged header cannot make a reader allocate the
 * decoded size before the first chunk is found missing. */
static int32_t walk_chunks(const void *src, int64_t src_size, const layout *lo)
{
    int32_t rc;
    reader r = {src, header_bytes(lo->rows), src_size};
    for (int64_t k = 0; k < lo->num_chunks; k++) {
        chunk_view c;
        uint32_t crc;
        if ((rc = read_chunk_frame(&r, lo, k, &c, &crc)))
            return rc;
    }
    if (r.pos != src_size)
        return FAIL_CORRUPT("src_size: %lld bytes follow the last chunk",
                            (long long)(src_size - r.pos));
    return KVX_OK;
}

static int32_t check_source(const void *src, int64_t src_size)
{
    int32_t rc;
    if ((rc = kvx_check_range("src_size", src_size, 0, INT64_MAX)) ||
        (rc = kvx_check_pointer("src", src, src_size)))
        return rc;
    return KVX_OK;
}

int32_t kvx_codec_inspect(const void *src, int64_t src_size, kvx_codec_info *info,
                          int32_t *bins, int64_t bins_capacity)
{
    int32_t rc;
    layout *lo;
    kvx_clear_error();
    uint32_t info_size;
    if ((rc = check_source(src, src_size)) ||
        (rc = kvx_struct_size("info", "kvx_codec_info", info, sizeof *info, &info_size)))
        return rc;
    if ((rc = parse_header(src, src_size, &lo)))
        return rc;
    if ((rc = walk_chunks(src, src_size, lo))) {
        free(lo);
        return rc;
    }
    if (bins && bins_capacity < lo->rows) {
        rc = FAIL_ARG("bins_capacity: expected >= %lld (num_kv * num_layers), got %lld",
                      (long long)lo->rows, (long long)bins_capacity);
    } else if (!(rc = fill_info(lo, info)) && bins) {
        memcpy(bins, lo->bins, (size_t)lo->rows * sizeof *bins);
    }
    free(lo);
    return rc;
}

/* ---------------------------------------------------------------- decompress */

/* Walks the counts of every stream: each a varint, summing to the chunk's tokens per stream.
 * With `counts` non-NULL also stores them (uint16, [streams, num_bins], zero-filled). */
static int32_t read_counts(const layout *lo, int64_t index, const chunk_view *c, uint16_t *counts)
{
    int32_t rc;
    reader r = {c->counts, 0, c->counts_size};
    for (int64_t i = 0; i < lo->rows * lo->channels; i++) {
        int32_t symbols = row_symbols(lo, i / lo->channels);
        uint64_t sum = 0;
        uint32_t first = 0, n = 0;
        if (counts)
            memset(counts + i * lo->num_bins, 0, (size_t)lo->num_bins * sizeof *counts);
        if ((rc = get_varint(&r, &first, "chunk.counts")) ||
            (rc = get_varint(&r, &n, "chunk.counts")))
            return rc;
        if ((uint64_t)first + n > (uint64_t)symbols)
            return FAIL_CORRUPT("chunk[%lld].counts[%lld]: expected a run of symbols within "
                                "0..%d, got %u counts from symbol %u",
                                (long long)index, (long long)i, (int)symbols - 1, (unsigned)n,
                                (unsigned)first);
        for (uint32_t s = first; s < first + n; s++) {
            uint32_t v = 0;
            if ((rc = get_varint(&r, &v, "chunk.counts")))
                return rc;
            sum += v;
            if (counts)
                counts[i * lo->num_bins + s] = (uint16_t)v;
        }
        if (sum != (uint64_t)c->tokens)
            return FAIL_CORRUPT("chunk[%lld].counts[%lld]: expected symbol counts summing to %lld "
                                "tokens, got %llu",
                                (long long)index, (long long)i, (long long)c->tokens,
                                (unsigned long long)sum);
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

/* Scales are max |x| of values of the KV dtype: finite, >= 0 and at most the dtype's largest
 * value, which keeps every decoded value (|value| <= scale) finite in that dtype. */
static int32_t check_scales(const layout *lo, int64_t index, const chunk_view *c)
{
    float largest = lo->dtype == KVX_DTYPE_FLOAT16    ? 65504.0f
                    : lo->dtype == KVX_DTYPE_BFLOAT16 ? 3.3895313892515355e38f
                                                      : 3.4028234663852886e38f;
    for (int64_t i = 0; i < lo->rows * c->tokens; i++) {
        uint32_t bits = (uint32_t)le_at(c->scales + 4 * i, 4);
        float f;
        memcpy(&f, &bits, sizeof f);
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
    if ((rc = read_chunk_frame(r, lo, index, c, &crc)))
        return rc;
    uint32_t computed = kvx_codec_crc32(r->p + start, r->pos - CRC_SIZE - start);
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
        (rc = check_kv_desc("out", out)))
        return rc;
#define SAME(field, value)                                                                     \
    if ((int64_t)out->field != (int64_t)(value))                                               \
        return FAIL_ARG("out->" #field ": expected %lld (the container's), got %lld",          \
                        (long long)(value), (long long)out->field);
    SAME(dtype, lo->dtype) SAME(num_kv, lo->num_kv) SAME(num_layers, lo->num_layers)
    SAME(num_heads, lo->num_heads) SAME(head_size, lo->head_size)
    SAME(num_tokens, lo->num_tokens)
#undef SAME
    return KVX_OK;
}

static void scales_from_le(const uint8_t *p, int64_t n, float *out)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)le_at(p + 4 * i, 4);
        memcpy(&out[i], &bits, sizeof bits);
    }
}

typedef struct cdf_build_job {
    const layout *lo;
    const uint16_t *counts;
    int64_t tokens;
    uint16_t *cdf;
} cdf_build_job;

static void cdf_build_range(void *ctx, int64_t begin, int64_t end)
{
    const cdf_build_job *job = ctx;
    int32_t nb = job->lo->num_bins;
    for (int64_t i = begin; i < end; i++)
        cdf_from_counts(job->counts + i * nb, nb, job->tokens, job->cdf + i * (nb + 1));
}

/* Pass 2 for one chunk: tables, range decoding, dequantization into out. */
static int32_t decode_chunk(const kvx_backend *be, const layout *lo, int64_t index,
                            const chunk_view *c, chunk_buffers *b, const kvx_dense_desc *out,
                            const kvx_stream *stream)
{
    int32_t rc;
    int64_t streams = lo->rows * lo->channels, t0 = index * lo->chunk_tokens;
    if ((rc = read_counts(lo, index, c, b->counts)) ||
        (rc = read_lengths(lo, index, c, b->end_offsets)))
        return rc;
    cdf_build_job job = {lo, b->counts, c->tokens, b->cdf};
    kvx_parallel_for(streams, 256, cdf_build_range, &job);
    scales_from_le(c->scales, lo->rows * c->tokens, b->scales);
    kvx_codec_decode_args coded = {.cdf = b->cdf, .cdf_len = lo->num_bins + 1,
        .bytes = c->payload, .num_bytes = c->payload_size, .end_offsets = b->end_offsets,
        .num_layers = lo->rows, .num_tokens = c->tokens, .num_channels = lo->channels,
        .symbols = b->symbols};
    if ((rc = be->codec_decode(&coded, stream)))
        return rc;
    int64_t es = kvx_dtype_size(lo->dtype), plane = lo->num_layers * c->tokens;
    for (int32_t p = 0; p < lo->num_kv; p++) {
        uint8_t *dst = (uint8_t *)out->base + (p * out->kv_stride + t0 * out->token_stride) * es;
        kvx_codec_dequantize_args args = {.symbols = b->symbols + p * plane * lo->channels,
            .scales = b->scales + p * plane, .bins = lo->bins + p * lo->num_layers,
            .num_rows = lo->num_layers, .num_tokens = c->tokens, .num_channels = lo->channels,
            .dtype = lo->dtype, .out = dst, .row_stride = out->layer_stride,
            .token_stride = out->token_stride};
        rc = be->codec_dequantize(&args, stream);
        if (rc)
            return rc;
    }
    return KVX_OK;
}

static int32_t decompress_chunks(const kvx_backend *be, const void *src, int64_t src_size,
                                 const layout *lo, const kvx_dense_desc *out,
                                 const kvx_stream *stream)
{
    int32_t rc = KVX_OK;
    reader r = {src, header_bytes(lo->rows), src_size};
    /* num_chunks is backed by the blob (parse_header checked its least size). */
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
        rc = buffers_alloc(&b, lo, views[0].tokens, 0);
    for (int64_t k = 0; !rc && k < lo->num_chunks; k++)
        rc = decode_chunk(be, lo, k, &views[k], &b, out, stream);
    buffers_free(&b);
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
    if ((rc = check_source(src, src_size)))
        return rc;
    const kvx_backend *be = kvx_backend_for(stream);
    if (!be)
        return KVX_ERR_NOT_AVAILABLE;
    if (be->device_type != KVX_DEVICE_CPU || !be->codec_decode || !be->codec_dequantize)
        return kvx_fail(KVX_ERR_UNSUPPORTED, "codec_decompress: the container is read in host "
                        "memory; the %s backend is not supported yet", be->name);
    if ((rc = parse_header(src, src_size, &lo)))
        return rc;
    if (!(rc = read_out_desc(out_user, lo, &out)))
        rc = decompress_chunks(be, src, src_size, lo, &out, stream);
    free(lo);
    return rc;
}
