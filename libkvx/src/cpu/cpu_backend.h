/* cpu_backend.h - entry points of the CPU backend, gathered into its vtable in backend.c. */
#ifndef KVX_CPU_BACKEND_H
#define KVX_CPU_BACKEND_H

#include "../core/kvx_internal.h"

int32_t kvx_cpu_transfer(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                         const int64_t *slot_mapping, int32_t direction,
                         const kvx_stream *stream);

/* KVX-CPU-CODEC-FUNCTIONS */
/* KVX-CPU-ROPE-FUNCTIONS */

#endif /* KVX_CPU_BACKEND_H */
