/* ascend_backend.h - what the Ascend backend's files share. Never installed. */
#ifndef KVX_ASCEND_BACKEND_H
#define KVX_ASCEND_BACKEND_H

#include "../core/kvx_internal.h"
#include "../core/runtime_loader.h"
#include "acl_api.h"

/* The loaded AscendCL runtime, or NULL after kvx_fail(KVX_ERR_NOT_AVAILABLE, reason). */
const kvx_acl_api *kvx_acl_load(void);

/* KVX_ERR_DEVICE naming the AscendCL function and its error code, plus what kvx was doing. */
int32_t kvx_acl_fail(const char *function, kvx_acl_error code, const char *doing);

int32_t kvx_ascend_transfer(const kvx_transfer_args *args, const kvx_stream *stream);
int32_t kvx_ascend_synchronize(const kvx_stream *stream);

/* Makes NPU `npu` current on this thread (aclrtSetDevice only when it is not); undo with
 * kvx_acl_leave_device. */
int32_t kvx_acl_enter_device(const kvx_acl_api *acl, int32_t npu, kvx_device_guard *guard);
void kvx_acl_leave_device(const kvx_acl_api *acl, const kvx_device_guard *guard);
/* *device = the NPU holding ptr, or -1 for host memory (pinned or not). */
int32_t kvx_acl_locate(const void *ptr, const char *what, int32_t *device);

/* The host-staged codec's operations on AscendCL (staging.c). */
extern const struct kvx_staging_ops kvx_ascend_staging;

#endif /* KVX_ASCEND_BACKEND_H */
