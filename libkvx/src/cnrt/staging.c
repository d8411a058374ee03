/* staging.c - the host-staged codec's operations on CNRT (src/core/codec_staged.h). */
#include "../core/codec_staged.h"
#include "cnrt_backend.h"

static int32_t enter(const kvx_stream *stream, kvx_device_guard *guard)
{
    return kvx_cnrt_enter_device(kvx_cnrt_load(), stream->device_index, guard);
}

static void leave(const kvx_device_guard *guard) { kvx_cnrt_leave_device(kvx_cnrt_load(), guard); }

/* Pinned memory where the runtime has both functions (else the staged codec uses malloc). */
static int32_t host_alloc(size_t bytes, void **ptr)
{
    const kvx_cnrt_api *cnrt = kvx_cnrt_load();
    if (!cnrt->cnrtHostMalloc || !cnrt->cnrtFreeHost)
        return KVX_STAGING_NO_PINNED;
    kvx_cnrt_ret rc = cnrt->cnrtHostMalloc(ptr, bytes);
    if (rc != KVX_CNRT_SUCCESS)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "cnrtHostMalloc failed with CNRT error %u for "
                        "%zu bytes of staging memory for the host-staged codec", (unsigned)rc,
                        bytes);
    return KVX_OK;
}

static void host_free(void *ptr) { kvx_cnrt_load()->cnrtFreeHost(ptr); }

static int32_t copy(void *dst, const void *src, size_t bytes, int to_device,
                    const kvx_stream *stream, const char *doing)
{
    const kvx_cnrt_api *cnrt = kvx_cnrt_load();
    /* 1D copies take the queue before the direction (cnrt_api.h). */
    kvx_cnrt_ret rc = cnrt->memcpy_async(
        dst, (void *)src, bytes, stream->handle,
        to_device ? KVX_CNRT_MEMCPY_HOST_TO_DEV : KVX_CNRT_MEMCPY_DEV_TO_HOST);
    return rc == KVX_CNRT_SUCCESS ? KVX_OK : kvx_cnrt_fail(cnrt->memcpy_async_name, rc, doing);
}

const kvx_staging_ops kvx_cnrt_staging = {
    .device_name = "MLU",
    .enter = enter,
    .leave = leave,
    .locate = kvx_cnrt_locate,
    .host_alloc = host_alloc,
    .host_free = host_free,
    .copy = copy,
    .wait = kvx_cnrt_synchronize,
};
