/* ascend_backend.h - what the Ascend backend's files share. Never installed. */
#ifndef KVX_ASCEND_BACKEND_H
#define KVX_ASCEND_BACKEND_H

#include "../core/kvx_internal.h"
#include "acl_api.h"

/* The loaded AscendCL runtime, or NULL after kvx_fail(KVX_ERR_NOT_AVAILABLE, reason). */
const kvx_acl_api *kvx_acl_load(void);

/* KVX_ERR_DEVICE naming the AscendCL function and its error code, plus what kvx was doing. */
int32_t kvx_acl_fail(const char *function, kvx_acl_error code, const char *doing);

int32_t kvx_ascend_transfer(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                            const int64_t *slot_mapping, int32_t direction,
                            const kvx_stream *stream);
int32_t kvx_ascend_synchronize(const kvx_stream *stream);

#endif /* KVX_ASCEND_BACKEND_H */
