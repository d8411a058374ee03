/* backend.c - the GPU module's backend table (one source for CUDA and HIP; see gpu_runtime.h);
 * libkvx reaches it through loader.c. */
#include "gpu_backend.h"

const kvx_backend kvx_gpu_module_backend = {
#if defined(KVX_GPU_HIP)
    .name = "hip",
    .device_type = KVX_DEVICE_HIP,
#else
    .name = "cuda",
    .device_type = KVX_DEVICE_CUDA,
#endif
    .available = kvx_gpu_available,
    .transfer = kvx_gpu_transfer,
    .synchronize = kvx_gpu_synchronize,
    .codec_quantize = kvx_gpu_codec_quantize,
    .codec_dequantize = kvx_gpu_codec_dequantize,
    .codec_calculate_cdf = kvx_gpu_codec_calculate_cdf,
    .codec_encode = kvx_gpu_codec_encode,
    .codec_decode = kvx_gpu_codec_decode,
    .codec_quantize_rotated = kvx_gpu_codec_quantize_rotated,
    .codec_dequantize_rotated = kvx_gpu_codec_dequantize_rotated,
    .rope_rerotate = kvx_gpu_rope_rerotate,
    .rope_apply = kvx_gpu_rope_apply,
    .copy_batch = kvx_gpu_copy_batch,
    .host_alloc = kvx_gpu_host_alloc,
    .host_free = kvx_gpu_host_free,
    .mark_record = kvx_gpu_mark_record,
    .mark_passed = kvx_gpu_mark_passed,
    .mark_release = kvx_gpu_mark_release,
};
