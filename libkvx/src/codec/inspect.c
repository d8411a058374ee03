/*
 * inspect.c - the reading side's first steps, which decompress shares: the source checks, the
 * header (parsed into a layout) and the chunk frames; and kvx_codec_inspect, which stops there.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "container.h"

int32_t kvx_codec_check_source(const void *src, int64_t src_size)
{
    int32_t rc;
    if ((rc = kvx_check_range("src_size", src_size, 0, INT64_MAX)) ||
        (rc = kvx_check_pointer("src", src, src_size)))
        return rc;
    return KVX_OK;
}

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
        "header.version",    "header.header_size",  "header.dtype",      "header.num_kv",
        "header.num_layers", "header.num_heads",    "header.head_size",  "header.num_bins",
        "header.num_tokens", "header.chunk_tokens", "header.num_chunks", "header.method",
        "header.reserved"};
    if ((rc = need(r, 4, "header.magic")))
        return rc;
    if (memcmp(r->p, CONTAINER_MAGIC, 4) != 0)
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
                            "got %llu",
                            (unsigned long long)v[2]);
    if ((rc = field_range(names[3], v[3], 1, 2)) ||
        (rc = field_range(names[4], v[4], 1, INT32_MAX)) ||
        (rc = field_range(names[5], v[5], 1, INT32_MAX)) ||
        (rc = field_range(names[6], v[6], 1, INT32_MAX)) ||
        (rc = field_range(names[7], v[7], KVX_CODEC_MIN_BINS, KVX_CODEC_MAX_BINS)) ||
        (rc = field_range(names[8], v[8], 0, KVX_CODEC_MAX_TOKENS)) ||
        (rc = field_range(names[9], v[9], 1, MAX_CHUNK_TOKENS)) ||
        (rc = field_range(names[11], v[11], KVX_CODEC_METHOD_CACHEGEN, KVX_CODEC_METHOD_ROTATED)) ||
        (rc = field_range(names[12], v[12], 0, 0)))
        return rc;
    if (v[11] == KVX_CODEC_METHOD_ROTATED && (v[6] & (v[6] - 1) || v[6] > KVX_CODEC_MAX_HEAD_SIZE))
        return FAIL_CORRUPT("header.head_size: the rotated method expects a power of two up to "
                            "%d, got %llu",
                            KVX_CODEC_MAX_HEAD_SIZE, (unsigned long long)v[6]);
    if (v[5] * v[6] > INT32_MAX)
        return FAIL_CORRUPT("header.num_heads * header.head_size: expected <= %d, got %llu",
                            INT32_MAX, (unsigned long long)(v[5] * v[6]));
    uint64_t chunks = (v[8] + v[9] - 1) / v[9];
    if (v[10] != chunks)
        return FAIL_CORRUPT("header.num_chunks: expected %llu (num_tokens / chunk_tokens, "
                            "rounded up), got %llu",
                            (unsigned long long)chunks, (unsigned long long)v[10]);
    *lo = (layout){(int32_t)v[2], (int32_t)v[3], (int32_t)v[4],          (int32_t)v[5],
                   (int32_t)v[6], (int32_t)v[7], (int64_t)(v[3] * v[4]), (int64_t)(v[5] * v[6]),
                   (int64_t)v[8], (int64_t)v[9], (int64_t)v[10],         (int32_t)v[11]};
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

int32_t kvx_codec_parse_header(const void *src, int64_t src_size, layout **out)
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
    if (!(lo = kvx_codec_layout_new(head.rows)))
        return KVX_ERR_OUT_OF_MEMORY;
    memcpy(lo, &head, offsetof(layout, bins));
    uint64_t crc;
    if ((rc = parse_bins(&r, lo)) || (rc = get_le(&r, 4, &crc, "header.crc32")))
        goto fail;
    uint32_t computed = kvx_crc32(0, src, (size_t)(r.pos - CRC_SIZE));
    if (crc != computed) {
        rc = FAIL_CORRUPT("header.crc32: checksum mismatch (stored %08llx, computed %08x)",
                          (unsigned long long)crc, (unsigned)computed);
        goto fail;
    }
    int64_t least;
    if ((rc = kvx_codec_container_size(lo, 0, &least)))
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
    kvx_codec_info info = {sizeof(kvx_codec_info),
                           KVX_CODEC_FORMAT_VERSION,
                           lo->dtype,
                           lo->num_kv,
                           lo->num_layers,
                           lo->num_heads,
                           lo->head_size,
                           lo->num_bins,
                           lo->num_tokens,
                           lo->chunk_tokens,
                           lo->num_chunks,
                           bytes,
                           lo->method,
                           0};
    return kvx_write_struct("info", "kvx_codec_info", user, &info, sizeof info);
}

int32_t kvx_codec_read_chunk_frame(reader *r, const layout *lo, int64_t index, chunk_view *c,
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
    if ((rc = need(r, scale_bytes(lo) * lo->rows * c->tokens, "chunk.scales")))
        return rc;
    c->scales = r->p + r->pos;
    r->pos += scale_bytes(lo) * lo->rows * c->tokens;
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
        if ((rc = kvx_codec_read_chunk_frame(&r, lo, k, &c, &crc)))
            return rc;
    }
    if (r.pos != src_size)
        return FAIL_CORRUPT("src_size: %lld bytes follow the last chunk",
                            (long long)(src_size - r.pos));
    return KVX_OK;
}

int32_t kvx_codec_inspect(const void *src, int64_t src_size, kvx_codec_info *info, int32_t *bins,
                          int64_t bins_capacity)
{
    int32_t rc;
    layout *lo;
    kvx_clear_error();
    uint32_t info_size;
    if ((rc = kvx_codec_check_source(src, src_size)) ||
        (rc = kvx_struct_size("info", "kvx_codec_info", info, sizeof *info, &info_size)))
        return rc;
    if ((rc = kvx_codec_parse_header(src, src_size, &lo)))
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
