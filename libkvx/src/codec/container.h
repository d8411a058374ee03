/*
 * container.h - what the container's stages (compress.c, inspect.c, decompress.c) share:
 * kvx's CacheGen container (docs/codec-container.md), written and parsed on the host with every
 * byte of a blob treated as hostile.
 *
 * Backend-independent: quantization, range coding and dequantization go through the backend's
 * codec entries; the container adds the per-chunk symbol counts (from which both sides derive
 * LMCache's CDF tables), the byte layout (layout.h, bytes.h) and the checksums (kvx_crc32).
 *
 * Decoding validates in two passes so that damage is reported before the output is written:
 * pass 1 walks every chunk, bounds-checks every size against the bytes that are really there,
 * verifies each CRC-32, the scales and the stream lengths; pass 2 parses each chunk's symbol
 * counts (checked again: they must sum to the chunk's tokens) and decodes. Nothing is allocated
 * from a declared size before the blob is known to be large enough to hold what it declares.
 */
#ifndef KVX_CODEC_CONTAINER_H
#define KVX_CODEC_CONTAINER_H

#include "bytes.h"
#include "layout.h"

/* Damage in the blob, as opposed to a bad argument. */
#define FAIL_CORRUPT(...) kvx_fail(KVX_ERR_CORRUPT_INPUT, __VA_ARGS__)

/* ---------------------------------------------------------------- per-chunk work (chunk.c) */

/* A stream's table in the rotated method: its counts (gaussian = 0) or a Gaussian of centre
 * center / 16 and deviation 2^(spread / 16 - 4) symbols (stream_tables.c). */
typedef struct stream_model {
    uint16_t center;
    uint8_t spread;
    uint8_t gaussian;
} stream_model;

typedef struct chunk_buffers {
    uint8_t *symbols;     /* [rows, tokens, channels] */
    float *scales;        /* [rows, tokens] */
    uint16_t *counts;     /* [rows, channels, num_bins] */
    uint16_t *cdf;        /* [rows, channels, num_bins + 1] */
    stream_model *models; /* [rows * channels] (the rotated method) */
    int64_t *end_offsets; /* [rows * channels]; compress: where each stream's counts start */
    int32_t *lengths;     /* [rows * channels] */
    uint8_t *streams;     /* [rows * channels, stream_capacity] (compress only) */
    int64_t stream_capacity;
} chunk_buffers;

/* Buffers for chunks of up to `tokens` tokens (with_streams: the encoder's stream slots too);
 * on failure nothing is left allocated. kvx_codec_buffers_free zeroes *b. */
int32_t kvx_codec_buffers_alloc(chunk_buffers *b, const layout *lo, int64_t tokens,
                                int with_streams);
void kvx_codec_buffers_free(chunk_buffers *b);

/* cdf[s] = (65535 - num_bins) * (symbols below s) / tokens + s: LMCache's calculate_cdf. */
void kvx_codec_cdf_from_counts(const uint16_t *counts, int32_t num_bins, int64_t tokens,
                               uint16_t *cdf);

/* The run of symbols a stream's counts cover: from the first to the last non-zero count (a
 * stream's values sit in a few symbols around the middle, so this halves the counts section).
 * An all-zero histogram (no tokens) gives an empty run. */
void kvx_codec_count_span(const uint16_t *counts, int32_t symbols, int32_t *first, int32_t *n);

/* ---------------------------------------------------------------- stream tables (stream_tables.c)
 */

/* Bytes of a stream's counts as stored: first symbol (times first_scale: 2 in the rotated
 * method, whose low bit tells counts from a model), run length, then the run's counts. */
int64_t kvx_codec_counts_bytes(const uint16_t *counts, int32_t symbols, int32_t first_scale);

/* The rotated method's CDF of a Gaussian model, over symbols 0 .. top (those above get the
 * least share, as unused symbols of a counted table do). */
void kvx_codec_cdf_from_model(stream_model m, int32_t top, int32_t num_bins, uint16_t *cdf);

/* The rotated method's writer: the table that codes this stream's counts in fewer bits, its own
 * bytes included; fills cdf and *model, returns the table's bytes. */
int64_t kvx_codec_choose_table(const layout *lo, int64_t row, const uint16_t *counts,
                               int64_t tokens, uint16_t *cdf, stream_model *model);

/* ---------------------------------------------------------------- reading (inspect.c) */

/* A chunk's sections, pointing into the blob. */
typedef struct chunk_view {
    int64_t tokens;
    const uint8_t *scales, *counts, *lengths, *payload;
    int64_t counts_size, lengths_size, payload_size;
} chunk_view;

/* src_size >= 0 and src non-NULL when it has bytes. */
int32_t kvx_codec_check_source(const void *src, int64_t src_size);
/* The whole header, its CRC, and a size check so that nothing is allocated from a declared size
 * the blob cannot back. *out is allocated here; the caller frees it. */
int32_t kvx_codec_parse_header(const void *src, int64_t src_size, layout **out);
/* One chunk's frame at r->pos: its index and token count as expected, its sections within the
 * blob; fills *c, stores the chunk's CRC in *stored_crc and leaves r after it. */
int32_t kvx_codec_read_chunk_frame(reader *r, const layout *lo, int64_t index, chunk_view *c,
                                   uint32_t *stored_crc);

/* ---------------------------------------------------------------- the rotated method (rotated.c)
 */

/* The largest |x| the rotated method encodes (and the largest scale a reader accepts): half of
 * float32's largest over head_size, so that no sum of the inverse transform overflows. */
float kvx_codec_rotated_limit(const layout *lo);

/* Tokens t0 .. t0 + tokens - 1 of kv: rotated, scaled (bfloat16-representable scales) and
 * quantized into symbols [rows, tokens, channels] and scales [rows, tokens]. Fails, naming the
 * first offending token, when a value is not finite or above the limit. */
int32_t kvx_codec_rotated_quantize(const layout *lo, const kvx_dense_desc *kv, int64_t t0,
                                   int64_t tokens, uint8_t *symbols, float *scales);

/* The inverse, into those tokens of out (values saturate at the dtype's largest). */
int32_t kvx_codec_rotated_dequantize(const layout *lo, const kvx_dense_desc *out, int64_t t0,
                                     int64_t tokens, const uint8_t *symbols, const float *scales);

#endif /* KVX_CODEC_CONTAINER_H */
