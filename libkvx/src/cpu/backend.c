/* backend.c - the CPU backend's table: always compiled in, always available. Each entry is
 * defined in the file of its operation (transfer.c, codec_*.c, rope.c, copy.c). */
#include "cpu_backend.h"

int32_t kvx_cpu_transfer(const kvx_transfer_args *args, const kvx_stream *stream);
int32_t kvx_cpu_codec_quantize(const kvx_codec_quantize_args *args, const kvx_stream *stream);
int32_t kvx_cpu_codec_dequantize(const kvx_codec_dequantize_args *args, const kvx_stream *stream);
int32_t kvx_cpu_codec_calculate_cdf(const kvx_codec_cdf_args *args, const kvx_stream *stream);
int32_t kvx_cpu_codec_encode(const kvx_codec_encode_args *args, const kvx_stream *stream);
int32_t kvx_cpu_codec_decode(const kvx_codec_decode_args *args, const kvx_stream *stream);
int32_t kvx_cpu_codec_quantize_rotated(const kvx_codec_quantize_rotated_args *args,
                                       const kvx_stream *stream);
int32_t kvx_cpu_codec_dequantize_rotated(const kvx_codec_dequantize_rotated_args *args,
                                         const kvx_stream *stream);
/* Positions are the checked int64 copies src/ops/rope.c makes, never the caller's array. */
int32_t kvx_cpu_rope_rerotate(const kvx_rope_rerotate_args *args, const kvx_stream *stream);
int32_t kvx_cpu_rope_apply(const kvx_rope_apply_args *args, const kvx_stream *stream);
int32_t kvx_cpu_copy_batch(const kvx_copy_batch_args *args, const kvx_stream *stream);
int32_t kvx_cpu_host_alloc(const kvx_host_alloc_args *args, const kvx_stream *device);
int32_t kvx_cpu_host_free(const kvx_host_free_args *args, const kvx_stream *device);

static int32_t cpu_available(void) { return 1; }

const kvx_backend kvx_cpu_backend = {
    .name = "cpu",
    .device_type = KVX_DEVICE_CPU,
    .available = cpu_available,
    .transfer = kvx_cpu_transfer,
    .codec_quantize = kvx_cpu_codec_quantize,
    .codec_dequantize = kvx_cpu_codec_dequantize,
    .codec_calculate_cdf = kvx_cpu_codec_calculate_cdf,
    .codec_encode = kvx_cpu_codec_encode,
    .codec_decode = kvx_cpu_codec_decode,
    .codec_quantize_rotated = kvx_cpu_codec_quantize_rotated,
    .codec_dequantize_rotated = kvx_cpu_codec_dequantize_rotated,
    .rope_rerotate = kvx_cpu_rope_rerotate,
    .rope_apply = kvx_cpu_rope_apply,
    .copy_batch = kvx_cpu_copy_batch,
    .host_alloc = kvx_cpu_host_alloc,
    .host_free = kvx_cpu_host_free,
    .host_alloc_page_aligned = 1,
};
