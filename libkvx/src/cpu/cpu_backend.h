/* cpu_backend.h - entry points of the CPU backend, gathered into its vtable in backend.c. */
#ifndef KVX_CPU_BACKEND_H
#define KVX_CPU_BACKEND_H

#include "../core/kvx_internal.h"

int32_t kvx_cpu_transfer(const kvx_transfer_args *args, const kvx_stream *stream);

/* Whether AVX2 variants may run: the CPU has AVX2 and KVX_CPU_ISA does not ask for
 * "baseline" (the tests set it to run the baseline variants on any machine). isa.c. */
int kvx_cpu_avx2_allowed(void);
/* Name of the RoPE variant this process runs (rope.c). */
const char *kvx_cpu_rope_variant(void);
/* Says once per process, on stderr, when KVX_CPU_ISA names no variant or one this CPU cannot
 * run, and which variants run instead. Both choices above call it once they are made. isa.c. */
void kvx_cpu_check_isa_setting(void);

/* codec_*.c */
int32_t kvx_cpu_codec_quantize(const kvx_codec_quantize_args *args, const kvx_stream *stream);
int32_t kvx_cpu_codec_dequantize(const kvx_codec_dequantize_args *args, const kvx_stream *stream);
int32_t kvx_cpu_codec_calculate_cdf(const kvx_codec_cdf_args *args, const kvx_stream *stream);
int32_t kvx_cpu_codec_encode(const kvx_codec_encode_args *args, const kvx_stream *stream);
int32_t kvx_cpu_codec_decode(const kvx_codec_decode_args *args, const kvx_stream *stream);
/* rope.c: positions are the checked int64 copies src/core/rope.c makes (positions_dtype
 * KVX_DTYPE_INT64), never the caller's array. */
int32_t kvx_cpu_rope_rerotate(const kvx_rope_rerotate_args *args, const kvx_stream *stream);
int32_t kvx_cpu_rope_apply(const kvx_rope_apply_args *args, const kvx_stream *stream);

#endif /* KVX_CPU_BACKEND_H */
