/*
 * layout.h - the container's fixed sizes and its layout: what a header describes, which both the
 * writer (from the caller's arguments) and the reader (from the bytes) build before touching a
 * chunk. docs/codec-container.md is the format; these are its numbers.
 */
#ifndef KVX_CODEC_LAYOUT_H
#define KVX_CODEC_LAYOUT_H

#include "../ops/codec_checks.h"

enum {
    HEADER_SIZE = 60,         /* fixed part of the file header, before the bins table */
    CHUNK_HEADER_SIZE = 32,   /* index, tokens, three section sizes */
    CRC_SIZE = 4,
    MAX_CHUNK_TOKENS = 65535 /* symbol counts stay uint16 */
};

/* header.magic: its 4 bytes, without the string's terminator. */
#define CONTAINER_MAGIC "KVXC"

typedef struct layout {
    int32_t dtype, num_kv, num_layers, num_heads, head_size, num_bins;
    int64_t rows, channels, num_tokens, chunk_tokens, num_chunks;
    int32_t method; /* enum kvx_codec_method */
    int32_t bins[]; /* rows entries (allocated with the struct) */
} layout;

/* Bytes of one stored scale: float32 for CacheGen, bfloat16 for the rotated method. */
static inline int64_t scale_bytes(const layout *lo)
{
    return lo->method == KVX_CODEC_METHOD_ROTATED ? 2 : 4;
}

/* Tokens of chunk `chunk`: chunk_tokens, except for a shorter last one. */
static inline int64_t chunk_len(const layout *lo, int64_t chunk)
{
    int64_t left = lo->num_tokens - chunk * lo->chunk_tokens;
    return left < lo->chunk_tokens ? left : lo->chunk_tokens;
}

/* Bytes before the first chunk: the fixed header, the bins table and its CRC. */
static inline int64_t header_bytes(int64_t rows) { return HEADER_SIZE + 2 * rows + CRC_SIZE; }

/* Symbols a row can produce: 0 .. bins - 2. */
static inline int32_t row_symbols(const layout *lo, int64_t row) { return lo->bins[row] - 1; }

/* The rotated method's largest symbol in a row: 2 * MAX, MAX = bins / 2 - 1. */
static inline int32_t rotated_top(const layout *lo, int64_t row)
{
    return 2 * (lo->bins[row] / 2 - 1);
}

/* The caller's `name` descriptor (kv, out) as the codec needs it: a float dtype, each token's
 * heads contiguous, strides that address less than 2^63 bytes. */
int32_t kvx_codec_check_kv_desc(const char *name, const kvx_dense_desc *d);
/* The caller's kv descriptor and parameters, read once into *kv and *params and checked. */
int32_t kvx_codec_read_kv_args(const kvx_dense_desc *kv_user, const kvx_codec_params *params_user,
                               kvx_dense_desc *kv, kvx_codec_params *params);

/* A zeroed layout with room for `rows` bins; NULL after kvx_fail when out of memory. */
layout *kvx_codec_layout_new(int64_t rows);
/* The layout of checked arguments (kvx_codec_read_kv_args); NULL when out of memory. */
layout *kvx_codec_layout_from_desc(const kvx_dense_desc *kv, const kvx_codec_params *p);

/* Bytes of a whole container of this layout: the most any can take (worst != 0), which
 * kvx_codec_compress_bound returns, or the least any valid one takes, which bounds what a
 * header may declare for the bytes a reader was given. */
int32_t kvx_codec_container_size(const layout *lo, int worst, int64_t *out);

#endif /* KVX_CODEC_LAYOUT_H */
