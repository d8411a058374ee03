/* cnrt_backend.h - what the CNRT backend's files share. Never installed. */
#ifndef KVX_CNRT_BACKEND_H
#define KVX_CNRT_BACKEND_H

#include "../runtime/runtime_ops.h"
#include "cnrt_api.h"

/* The loaded CNRT runtime, or NULL after kvx_fail(KVX_ERR_NOT_AVAILABLE, reason). */
const kvx_cnrt_api *kvx_cnrt_load(void);

/* The copy engine's view of CNRT (cnrt_ops.c). */
extern const kvx_runtime_ops kvx_cnrt_ops;

#endif /* KVX_CNRT_BACKEND_H */
