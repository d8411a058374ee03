/* cnrt_backend.h - what the CNRT backend's files share. Never installed. */
#ifndef KVX_CNRT_BACKEND_H
#define KVX_CNRT_BACKEND_H

#include "../core/kvx_internal.h"
#include "../core/runtime_loader.h"
#include "cnrt_api.h"

/* The loaded CNRT runtime, or NULL after kvx_fail(KVX_ERR_NOT_AVAILABLE, reason). */
const kvx_cnrt_api *kvx_cnrt_load(void);

/* KVX_ERR_DEVICE naming the CNRT function and its error code, plus what kvx was doing. */
int32_t kvx_cnrt_fail(const char *function, kvx_cnrt_ret code, const char *doing);

int32_t kvx_cnrt_transfer(const kvx_transfer_args *args, const kvx_stream *stream);
int32_t kvx_cnrt_synchronize(const kvx_stream *stream);

/* Makes MLU `mlu` current on this thread (cnrtSetDevice only when it is not); undo with
 * kvx_cnrt_leave_device. */
int32_t kvx_cnrt_enter_device(const kvx_cnrt_api *cnrt, int mlu, kvx_device_guard *guard);
void kvx_cnrt_leave_device(const kvx_cnrt_api *cnrt, const kvx_device_guard *guard);
/* *device = the MLU holding ptr, or -1 for host memory (pinned or not). */
int32_t kvx_cnrt_locate(const void *ptr, const char *what, int32_t *device);

/* The host-staged codec's operations on CNRT (staging.c). */
extern const struct kvx_staging_ops kvx_cnrt_staging;

#endif /* KVX_CNRT_BACKEND_H */
