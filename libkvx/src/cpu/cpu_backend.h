/* cpu_backend.h - entry points of the CPU backend, gathered into its vtable in backend.c. */
#ifndef KVX_CPU_BACKEND_H
#define KVX_CPU_BACKEND_H

#include "../core/kvx_internal.h"

int32_t kvx_cpu_transfer(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                         const int64_t *slot_mapping, int32_t direction,
                         const kvx_stream *stream);

/* Whether AVX2 variants may run: the CPU has AVX2 and KVX_CPU_ISA does not ask for
 * "baseline" (the tests set it to run the baseline variants on any machine). isa.c. */
int kvx_cpu_avx2_allowed(void);
/* Name of the RoPE variant this process runs (rope.c). */
const char *kvx_cpu_rope_variant(void);
/* Says once per process, on stderr, when KVX_CPU_ISA names no variant or one this CPU cannot
 * run, and which variants run instead. Both choices above call it once they are made. isa.c. */
void kvx_cpu_check_isa_setting(void);

/* codec_*.c */
int32_t kvx_cpu_codec_quantize(const void *x, int32_t dtype, int64_t num_rows,
                               int64_t num_tokens, int64_t num_channels, int64_t row_stride,
                               int64_t token_stride, const int32_t *bins, uint8_t *symbols,
                               float *scales, const kvx_stream *stream);
int32_t kvx_cpu_codec_dequantize(const uint8_t *symbols, const float *scales,
                                 const int32_t *bins, int64_t num_rows, int64_t num_tokens,
                                 int64_t num_channels, int32_t dtype, void *out,
                                 int64_t row_stride, int64_t token_stride,
                                 const kvx_stream *stream);
int32_t kvx_cpu_codec_calculate_cdf(const uint8_t *symbols, int64_t num_layers,
                                    int64_t num_tokens, int64_t num_channels, int32_t num_bins,
                                    uint16_t *cdf, const kvx_stream *stream);
int32_t kvx_cpu_codec_encode(const uint16_t *cdf, int32_t cdf_len, const uint8_t *symbols,
                             int64_t num_layers, int64_t num_tokens, int64_t num_channels,
                             uint8_t *streams, int64_t stream_capacity, int32_t *lengths,
                             const kvx_stream *stream);
int32_t kvx_cpu_codec_decode(const uint16_t *cdf, int32_t cdf_len, const uint8_t *bytes,
                             int64_t num_bytes, int64_t stream_capacity, const int32_t *lengths,
                             const int64_t *end_offsets, int64_t num_layers, int64_t num_tokens,
                             int64_t num_channels, uint8_t *symbols, const kvx_stream *stream);
/* rope.c: positions are the checked int64 copies src/core/rope.c makes (positions_dtype
 * KVX_DTYPE_INT64), never the caller's array. */
int32_t kvx_cpu_rope_rerotate(const kvx_rope_tensor *keys, const kvx_rope_cache *cache,
                              const void *old_positions, const void *new_positions,
                              int32_t positions_dtype, const kvx_stream *stream);
int32_t kvx_cpu_rope_apply(const kvx_rope_tensor *query, const kvx_rope_tensor *key,
                           const kvx_rope_cache *cache, const void *positions,
                           int32_t positions_dtype, const kvx_stream *stream);

#endif /* KVX_CPU_BACKEND_H */
