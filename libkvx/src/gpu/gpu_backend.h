/* gpu_backend.h - host entry points of the GPU backend (CUDA or HIP), implemented in the .cu
 * files and gathered into the vtable in backend.c. */
#ifndef KVX_GPU_BACKEND_H
#define KVX_GPU_BACKEND_H

#include "../core/kvx_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* backend.c: the table below, which plugin.c hands to libkvx */
extern const kvx_backend kvx_gpu_module_backend;

int32_t kvx_gpu_available(void);
int32_t kvx_gpu_transfer(const kvx_transfer_args *args, const kvx_stream *stream);
int32_t kvx_gpu_synchronize(const kvx_stream *stream);
/* codec: arrays live where the stream's device can read them (device memory, or pinned host
 * memory), except bins, which src/ops/codec.c reads on the host. */
int32_t kvx_gpu_codec_quantize(const kvx_codec_quantize_args *args, const kvx_stream *stream);
int32_t kvx_gpu_codec_dequantize(const kvx_codec_dequantize_args *args, const kvx_stream *stream);
int32_t kvx_gpu_codec_calculate_cdf(const kvx_codec_cdf_args *args, const kvx_stream *stream);
int32_t kvx_gpu_codec_encode(const kvx_codec_encode_args *args, const kvx_stream *stream);
int32_t kvx_gpu_codec_decode(const kvx_codec_decode_args *args, const kvx_stream *stream);
/* codec_rotated.cu: head_size up to 8192 (one head in shared memory) */
int32_t kvx_gpu_codec_quantize_rotated(const kvx_codec_quantize_rotated_args *args,
                                       const kvx_stream *stream);
int32_t kvx_gpu_codec_dequantize_rotated(const kvx_codec_dequantize_rotated_args *args,
                                         const kvx_stream *stream);
int32_t kvx_gpu_rope_rerotate(const kvx_rope_rerotate_args *args, const kvx_stream *stream);
int32_t kvx_gpu_rope_apply(const kvx_rope_apply_args *args, const kvx_stream *stream);
/* copy.cu: one cudaMemcpyAsync / hipMemcpyAsync (Default kind) per range, and page-locked
 * host memory */
int32_t kvx_gpu_copy_batch(const kvx_copy_batch_args *args, const kvx_stream *stream);
int32_t kvx_gpu_host_alloc(const kvx_host_alloc_args *args, const kvx_stream *device);
int32_t kvx_gpu_host_free(const kvx_host_free_args *args, const kvx_stream *device);
/* mark.cu: stream marks as events without timing */
int32_t kvx_gpu_mark_record(const kvx_mark_args *args, const kvx_stream *stream);
int32_t kvx_gpu_mark_passed(const kvx_mark_args *args, const kvx_stream *stream);
int32_t kvx_gpu_mark_release(const kvx_mark_args *args, const kvx_stream *stream);

#ifdef __cplusplus
}
#endif

#endif /* KVX_GPU_BACKEND_H */
