/*
 * container.h - what the container's stages (compress.c, inspect.c, decompress.c) share:
 * kvx's CacheGen container (docs/codec-container.md), written and parsed on the host with every
 * byte of a blob treated as hostile.
 *
 * Backend-independent: quantization, range coding and dequantization go through the backend's
 * codec entries; the container adds the per-chunk symbol counts (from which both sides derive
 * LMCache's CDF tables), the byte layout (layout.h, bytes.h) and the checksums (crc32.h).
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
#include "crc32.h"
#include "layout.h"

/* Damage in the blob, as opposed to a bad argument. */
#define FAIL_CORRUPT(...) kvx_fail(KVX_ERR_CORRUPT_INPUT, __VA_ARGS__)

/* ---------------------------------------------------------------- per-chunk work (chunk.c) */

typedef struct chunk_buffers {
    uint8_t *symbols;     /* [rows, tokens, channels] */
    float *scales;        /* [rows, tokens] */
    uint16_t *counts;     /* [rows, channels, num_bins] */
    uint16_t *cdf;        /* [rows, channels, num_bins + 1] */
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
