/* backend.c - the CPU backend's vtable: always compiled in, always available. */
#include "cpu_backend.h"

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
    .rope_rerotate = kvx_cpu_rope_rerotate,
    .rope_apply = kvx_cpu_rope_apply,
};
