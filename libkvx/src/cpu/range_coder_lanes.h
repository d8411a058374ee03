/*
 * range_coder_lanes.h - the range coder run over KVX_CODEC_GROUP streams at once, one stream per
 * 32-bit lane of AVX2 vectors (codec_range_coder_lanes_avx2.c) or, on 64-bit ARM, of NEON ones
 * (codec_range_coder_lanes_neon.c; the same interface, with the suffix _neon). It gives the
 * scalar coder's bytes and symbols; the scalar loops in codec_range_coder.c do the rest (narrow
 * groups, the final flush, anything the lanes decline).
 */
#ifndef KVX_CPU_RANGE_CODER_LANES_H
#define KVX_CPU_RANGE_CODER_LANES_H

#include "codec_cpu.h"
#include "range_coder_scalar.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define KVX_CODER_LANES 1

/*
 * Advances the KVX_CODEC_GROUP encoders enc[] (fresh ones; their tables are cdf + g * cdf_len)
 * through the num_tokens symbols of their streams, symbol t of stream g at
 * symbols[t * stride + g]; encode_finish is left to the caller. Needs AVX2
 * (kvx_cpu_avx2_allowed).
 */
void kvx_cpu_encode_lanes_avx2(const uint16_t *cdf, int32_t cdf_len, const uint8_t *symbols,
                               int64_t stride, int64_t num_tokens, encoder enc[KVX_CODEC_GROUP]);

/*
 * Decodes num_tokens symbols of each of the KVX_CODEC_GROUP streams src[g] (len[g] bytes, bytes
 * past the end read as zero) with tables cdf + g * cdf_len into symbols[t * stride + g]. Returns
 * 0, writing nothing, when it declines (streams too long for its 32-bit bit positions, or no
 * memory for its padded copy of the streams): the scalar decoder then does the work.
 */
int kvx_cpu_decode_lanes_avx2(const uint16_t *cdf, int32_t cdf_len,
                              const uint8_t *const src[KVX_CODEC_GROUP],
                              const int64_t len[KVX_CODEC_GROUP], int64_t num_tokens,
                              uint8_t *symbols, int64_t stride);

#elif defined(__aarch64__) && defined(__GNUC__) && defined(__ARM_NEON)
#define KVX_CODER_LANES_NEON 1

/* kvx_cpu_encode_lanes_avx2 and kvx_cpu_decode_lanes_avx2 with NEON, which every 64-bit ARM CPU
 * has (kvx_cpu_neon_allowed says whether KVX_CPU_ISA lets them run). */
void kvx_cpu_encode_lanes_neon(const uint16_t *cdf, int32_t cdf_len, const uint8_t *symbols,
                               int64_t stride, int64_t num_tokens, encoder enc[KVX_CODEC_GROUP]);
int kvx_cpu_decode_lanes_neon(const uint16_t *cdf, int32_t cdf_len,
                              const uint8_t *const src[KVX_CODEC_GROUP],
                              const int64_t len[KVX_CODEC_GROUP], int64_t num_tokens,
                              uint8_t *symbols, int64_t stride);
#endif

#if KVX_CODER_LANES || KVX_CODER_LANES_NEON
/* What both lane coders share (codec_range_coder_lanes.c). */

/* Pending bits above which a lane's next append might not fit its 32-bit buffer: one symbol
 * shifts out at most 18 bits (see range_coder_scalar.h), and 14 + 18 = 32. */
#define KVX_LANE_MAX_PENDING 14

/* Zero bytes after each stream in the decoder's padded copy: one 32-bit read past any position
 * up to the stream's end stays inside the copy. */
#define KVX_LANE_PADDING 4

/* The encoders' state as the lanes hold it, stream g at index g: the output bits not yet stored
 * MSB-aligned in `buffer`, `buffered` of them (0 .. 31). */
typedef struct kvx_encoder_words {
    uint32_t low[KVX_CODEC_GROUP], high[KVX_CODEC_GROUP], pending[KVX_CODEC_GROUP];
    uint32_t buffer[KVX_CODEC_GROUP], buffered[KVX_CODEC_GROUP];
} kvx_encoder_words;

/* The encoders (pending bits <= KVX_LANE_MAX_PENDING) in lane form, and back. */
void kvx_cpu_lanes_from_encoders(const encoder enc[KVX_CODEC_GROUP], kvx_encoder_words *words);
void kvx_cpu_lanes_to_encoders(const kvx_encoder_words *words, encoder enc[KVX_CODEC_GROUP]);

/* One token's symbols row[g] through the scalar encoders (tables cdf + g * cdf_len); returns
 * whether every stream's pending bits are back within what a lane holds. */
int kvx_cpu_lanes_encode_token(encoder enc[KVX_CODEC_GROUP], const uint16_t *cdf, int32_t cdf_len,
                               const uint8_t *row);

/* The decoder's input for num_tokens symbols per stream: the streams back to back, each
 * followed by KVX_LANE_PADDING zero bytes, stream g from start[g]. NULL when the lanes decline:
 * out of memory, or offsets or bit positions that would not fit 32 bits. */
uint8_t *kvx_cpu_lanes_padded_copy(const uint8_t *const src[KVX_CODEC_GROUP],
                                   const int64_t len[KVX_CODEC_GROUP], int64_t num_tokens,
                                   uint32_t start[KVX_CODEC_GROUP]);
#endif

#endif /* KVX_CPU_RANGE_CODER_LANES_H */
