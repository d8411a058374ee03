/* gpu_backend.h - host entry points of the GPU backend (CUDA or HIP), implemented in the .cu
 * files and gathered into the vtable in backend.c. */
#ifndef KVX_GPU_BACKEND_H
#define KVX_GPU_BACKEND_H

#include "../core/kvx_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

int32_t kvx_gpu_available(void);
int32_t kvx_gpu_transfer(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                         const int64_t *slot_mapping, int32_t direction, const kvx_stream *stream);
int32_t kvx_gpu_synchronize(const kvx_stream *stream);
int32_t kvx_gpu_rope_rerotate(const kvx_rope_tensor *keys, const kvx_rope_cache *cache,
                              const void *old_positions, const void *new_positions,
                              int32_t positions_dtype, const kvx_stream *stream);
int32_t kvx_gpu_rope_apply(const kvx_rope_tensor *query, const kvx_rope_tensor *key,
                           const kvx_rope_cache *cache, const void *positions,
                           int32_t positions_dtype, const kvx_stream *stream);

#ifdef __cplusplus
}
#endif

#endif /* KVX_GPU_BACKEND_H */
