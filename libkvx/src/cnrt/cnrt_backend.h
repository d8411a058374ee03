/* cnrt_backend.h - what the CNRT backend's files share. Never installed. */
#ifndef KVX_CNRT_BACKEND_H
#define KVX_CNRT_BACKEND_H

#include "../core/kvx_internal.h"
#include "cnrt_api.h"

/* The loaded CNRT runtime, or NULL after kvx_fail(KVX_ERR_NOT_AVAILABLE, reason). */
const kvx_cnrt_api *kvx_cnrt_load(void);

/* KVX_ERR_DEVICE naming the CNRT function and its error code, plus what kvx was doing. */
int32_t kvx_cnrt_fail(const char *function, kvx_cnrt_ret code, const char *doing);

int32_t kvx_cnrt_transfer(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                          const int64_t *slot_mapping, int32_t direction,
                          const kvx_stream *stream);
int32_t kvx_cnrt_synchronize(const kvx_stream *stream);

#endif /* KVX_CNRT_BACKEND_H */
