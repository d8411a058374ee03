/*
 * ascend_ops.c - AscendCL as the copy engine sees it (runtime_ops.h): each operation one
 * AscendCL call, plus the rules of the AscendCL reference the engine plans around:
 *   - aclrtMemcpy2dAsync copies between host and device only, and answers any other kind with
 *     ACL_ERROR_INVALID_PARAM (a chip without 2D copies answers so, or with
 *     ACL_ERROR_RT_FEATURE_NOT_SUPPORT, for every kind);
 *   - on-chip device-to-device aclrtMemcpyAsync needs 64-byte-aligned endpoints;
 *   - batch copies are host <-> device only, and chips without them (310P and older) answer
 *     ACL_ERROR_RT_FEATURE_NOT_SUPPORT;
 *   - an event belongs to the device current when it was created;
 *   - aclrtSetDevice takes a reference on the device (given back only by aclrtResetDevice) and
 *     makes the device's default context current;
 *   - aclrtPointerGetAttributes is documented for AscendCL allocations only.
 */
#include <pthread.h>
#include <string.h>

#include "../runtime/codec_staged.h"
#include "ascend_backend.h"

static int load(unsigned *features)
{
    const kvx_acl_api *acl = kvx_acl_load();
    if (!acl)
        return 0;
    *features = KVX_RUNTIME_HAS_EVENTS;
    if (acl->aclrtMemcpy2dAsync)
        *features |= KVX_RUNTIME_HAS_2D;
    if (acl->aclrtMemcpyBatchAsyncV2 || acl->aclrtMemcpyBatchAsync)
        *features |= KVX_RUNTIME_HAS_BATCH;
    if (acl->aclrtMallocHost && acl->aclrtFreeHost)
        *features |= KVX_RUNTIME_HAS_PINNED;
    return 1;
}

/* Only what AscendCL reports as device memory is; a failed query (plain malloc memory may fail
 * it), HOST (pinned) and UNREGISTERED are host memory. Never fails. */
static int32_t locate(const void *ptr, const char *what, int32_t *device)
{
    (void)what;
    kvx_acl_ptr_attributes attr;
    memset(&attr, 0, sizeof attr);
    int known = kvx_acl_load()->aclrtPointerGetAttributes(ptr, &attr) == KVX_ACL_SUCCESS;
    *device = known && attr.location.type == KVX_ACL_MEM_LOCATION_TYPE_DEVICE
                  ? (int32_t)attr.location.id
                  : -1;
    return KVX_OK;
}

/* ---------------------------------------------------------------- device selection */

enum { REMEMBERED_DEVICES = 64 };

static pthread_mutex_t context_lock = PTHREAD_MUTEX_INITIALIZER;
static kvx_acl_context device_contexts[REMEMBERED_DEVICES]; /* NULL: not selected yet */

/* Makes the default context of `npu` current. aclrtSetDevice takes a reference on the device
 * every time, so libkvx calls it once per device and process and afterwards makes the context
 * it created current again (beyond REMEMBERED_DEVICES: aclrtSetDevice each time). */
static kvx_acl_error select_device(const kvx_acl_api *acl, int32_t npu, const char **function)
{
    int remembered = npu >= 0 && npu < REMEMBERED_DEVICES;
    pthread_mutex_lock(&context_lock);
    kvx_acl_context context = remembered ? device_contexts[npu] : NULL;
    kvx_acl_error rc = KVX_ACL_SUCCESS;
    if (!context) {
        *function = "aclrtSetDevice";
        rc = acl->aclrtSetDevice(npu);
        if (rc == KVX_ACL_SUCCESS && remembered &&
            acl->aclrtGetCurrentContext(&context) == KVX_ACL_SUCCESS)
            device_contexts[npu] = context;
        context = NULL;
    }
    pthread_mutex_unlock(&context_lock);
    if (context) {
        *function = "aclrtSetCurrentContext";
        rc = acl->aclrtSetCurrentContext(context);
    }
    return rc;
}

/* A thread already on `npu` is left alone (its context may be one of its own); otherwise its
 * context is noted and put back by leave(). */
static int64_t enter(int32_t npu, kvx_device_guard *guard, const char **function)
{
    const kvx_acl_api *acl = kvx_acl_load();
    *guard = (kvx_device_guard){-1, NULL, 0};
    int32_t current = -1;
    if (acl->aclrtGetDevice(&current) == KVX_ACL_SUCCESS && current == npu)
        return KVX_ACL_SUCCESS;
    kvx_acl_context saved = NULL;
    int have_saved = acl->aclrtGetCurrentContext(&saved) == KVX_ACL_SUCCESS && saved;
    kvx_acl_error rc = select_device(acl, npu, function);
    if (rc == KVX_ACL_SUCCESS)
        *guard = (kvx_device_guard){current, saved, have_saved};
    return rc;
}

static void leave(const kvx_device_guard *guard)
{
    if (guard->restore)
        kvx_acl_load()->aclrtSetCurrentContext(guard->context);
}

/* ---------------------------------------------------------------- copies */

static int64_t copy_1d(void *dst, const void *src, size_t bytes, uint32_t kind, void *stream,
                       const char **function)
{
    *function = "aclrtMemcpyAsync";
    return kvx_acl_load()->aclrtMemcpyAsync(dst, bytes, src, bytes, kind, stream);
}

static int64_t copy_2d(const kvx_copy_grid *g, uint32_t kind, void *stream)
{
    return kvx_acl_load()->aclrtMemcpy2dAsync(g->dst, g->dst_pitch, g->src, g->src_pitch, g->width,
                                              g->height, kind, stream);
}

/* An unsupported kind is ACL_ERROR_INVALID_PARAM, a chip without 2D copies may say
 * ACL_ERROR_RT_FEATURE_NOT_SUPPORT: either way nothing was queued. */
static int refuses_2d(int64_t code)
{
    return code == KVX_ACL_ERROR_INVALID_PARAM || code == KVX_ACL_ERROR_RT_FEATURE_NOT_SUPPORT;
}

static int refuses_batch(int64_t code) { return code == KVX_ACL_ERROR_RT_FEATURE_NOT_SUPPORT; }

static kvx_acl_mem_location side(int device_side, int32_t device)
{
    if (device_side)
        return (kvx_acl_mem_location){(uint32_t)device, KVX_ACL_MEM_LOCATION_TYPE_DEVICE};
    return (kvx_acl_mem_location){0, KVX_ACL_MEM_LOCATION_TYPE_HOST};
}

/* One attribute record covers every copy (all go the same way). */
static int64_t copy_batch(const kvx_batch_desc *b, void *stream, const char **function,
                          size_t *fail_index)
{
    const kvx_acl_api *acl = kvx_acl_load();
    kvx_acl_batch_attr *attr = b->attrs;
    int to_device = b->kind == KVX_COPY_HOST_TO_DEVICE;
    attr->dst_loc = side(to_device, b->device);
    attr->src_loc = side(!to_device, b->device);
    if (acl->aclrtMemcpyBatchAsyncV2) {
        *function = "aclrtMemcpyBatchAsyncV2";
        return acl->aclrtMemcpyBatchAsyncV2(b->dsts, b->dest_maxs, b->srcs, b->sizes, b->count,
                                            attr, b->attr_indexes, 1, stream);
    }
    *function = "aclrtMemcpyBatchAsync";
    return acl->aclrtMemcpyBatchAsync(b->dsts, b->dest_maxs, b->srcs, b->sizes, b->count, attr,
                                      b->attr_indexes, 1, fail_index, stream);
}

/* ---------------------------------------------------------------- host memory, events, waits */

static int64_t host_alloc(size_t bytes, void **ptr)
{
    return kvx_acl_load()->aclrtMallocHost(ptr, bytes);
}

static void host_free(void *ptr) { kvx_acl_load()->aclrtFreeHost(ptr); }

static int64_t event_create(void **event) { return kvx_acl_load()->aclrtCreateEvent(event); }

static int64_t event_record(void *event, void *stream)
{
    return kvx_acl_load()->aclrtRecordEvent(event, stream);
}

static int event_done(void *event)
{
    kvx_acl_enum status = KVX_ACL_EVENT_RECORDED_STATUS_NOT_READY;
    return kvx_acl_load()->aclrtQueryEventStatus(event, &status) == KVX_ACL_SUCCESS &&
           status == KVX_ACL_EVENT_RECORDED_STATUS_COMPLETE;
}

static int event_wait(void *event)
{
    return kvx_acl_load()->aclrtSynchronizeEvent(event) == KVX_ACL_SUCCESS;
}

static void event_destroy(void *event) { kvx_acl_load()->aclrtDestroyEvent(event); }

static int64_t sync_stream(void *stream) { return kvx_acl_load()->aclrtSynchronizeStream(stream); }

const kvx_runtime_ops kvx_ascend_ops = {
    KVX_RUNTIME_OPS_FUNCTIONS,
    .words = {.backend = "ascend", .runtime = "AscendCL", .device = "NPU", .stream = "stream"},
    .calls = {.copy_2d = "aclrtMemcpy2dAsync",
              .host_alloc = "aclrtMallocHost",
              .event_create = "aclrtCreateEvent",
              .event_record = "aclrtRecordEvent",
              .sync_stream = "aclrtSynchronizeStream"},
    .kind_codes = {[KVX_COPY_HOST_TO_DEVICE] = KVX_ACL_MEMCPY_HOST_TO_DEVICE,
                   [KVX_COPY_DEVICE_TO_HOST] = KVX_ACL_MEMCPY_DEVICE_TO_HOST,
                   [KVX_COPY_DEVICE_TO_DEVICE] = KVX_ACL_MEMCPY_DEVICE_TO_DEVICE},
    /* documented between host and device only */
    .copy_2d_kinds = KVX_COPY_KIND_BIT(KVX_COPY_HOST_TO_DEVICE) |
                     KVX_COPY_KIND_BIT(KVX_COPY_DEVICE_TO_HOST),
    .max_2d_height = KVX_ACL_MEMCPY_2D_MAX_HEIGHT,
    .copy_batch = copy_batch,
    .batch_attr_bytes = sizeof(kvx_acl_batch_attr),
    .refuses_2d = refuses_2d,
    .refuses_batch = refuses_batch,
    .device_copy_alignment = KVX_ACL_ON_CHIP_COPY_ALIGNMENT,
    .event_create = event_create,
    .event_record = event_record,
    .event_done = event_done,
    .event_wait = event_wait,
    .event_destroy = event_destroy,
    .sync_stream = sync_stream,
    .state = &(kvx_runtime_state){0},
};

static int32_t available(void) { return kvx_acl_load() != NULL; }

const kvx_backend kvx_ascend_backend = KVX_RUNTIME_BACKEND("ascend", KVX_DEVICE_ASCEND, available,
                                                           kvx_ascend_ops);
