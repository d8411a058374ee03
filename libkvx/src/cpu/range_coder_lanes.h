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

#endif /* KVX_CPU_RANGE_CODER_LANES_H */
