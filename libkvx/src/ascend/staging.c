/* staging.c - the host-staged codec's operations on AscendCL (src/core/codec_staged.h). */
#include "../core/codec_staged.h"
#include "ascend_backend.h"

static int32_t enter(const kvx_stream *stream, kvx_device_guard *guard)
{
    return kvx_acl_enter_device(kvx_acl_load(), stream->device_index, guard);
}

static void leave(const kvx_device_guard *guard) { kvx_acl_leave_device(kvx_acl_load(), guard); }

/* Pinned memory where the runtime has both functions (else the staged codec uses malloc). */
static int32_t host_alloc(size_t bytes, void **ptr)
{
    const kvx_acl_api *acl = kvx_acl_load();
    if (!acl->aclrtMallocHost || !acl->aclrtFreeHost)
        return KVX_STAGING_NO_PINNED;
    kvx_acl_error rc = acl->aclrtMallocHost(ptr, bytes);
    if (rc != KVX_ACL_SUCCESS)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "aclrtMallocHost failed with AscendCL error %d for "
                        "%zu bytes of staging memory for the host-staged codec", (int)rc, bytes);
    return KVX_OK;
}

static void host_free(void *ptr) { kvx_acl_load()->aclrtFreeHost(ptr); }

static int32_t copy(void *dst, const void *src, size_t bytes, int to_device,
                    const kvx_stream *stream, const char *doing)
{
    const kvx_acl_api *acl = kvx_acl_load();
    kvx_acl_error rc = acl->aclrtMemcpyAsync(
        dst, bytes, src, bytes,
        to_device ? KVX_ACL_MEMCPY_HOST_TO_DEVICE : KVX_ACL_MEMCPY_DEVICE_TO_HOST, stream->handle);
    return rc == KVX_ACL_SUCCESS ? KVX_OK : kvx_acl_fail("aclrtMemcpyAsync", rc, doing);
}

const kvx_staging_ops kvx_ascend_staging = {
    .device_name = "NPU",
    .enter = enter,
    .leave = leave,
    .locate = kvx_acl_locate,
    .host_alloc = host_alloc,
    .host_free = host_free,
    .copy = copy,
    .wait = kvx_ascend_synchronize,
};
