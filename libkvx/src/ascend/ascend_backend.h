/* ascend_backend.h - what the Ascend backend's files share. Never installed. */
#ifndef KVX_ASCEND_BACKEND_H
#define KVX_ASCEND_BACKEND_H

#include "../runtime/runtime_ops.h"
#include "acl_api.h"

/* The loaded AscendCL runtime, or NULL after kvx_fail(KVX_ERR_NOT_AVAILABLE, reason). */
const kvx_acl_api *kvx_acl_load(void);

/* The copy engine's view of AscendCL (ascend_ops.c). */
extern const kvx_runtime_ops kvx_ascend_ops;

#endif /* KVX_ASCEND_BACKEND_H */
