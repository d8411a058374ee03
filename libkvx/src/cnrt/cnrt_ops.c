/*
 * cnrt_ops.c - CNRT as the copy engine sees it (runtime_ops.h): each operation one CNRT call.
 * 1D copies take the queue BEFORE the direction, cnrtMemcpy2DAsync the direction BEFORE the
 * queue (cnrt_api.h); 2D copies go every way, within CNRT's limits (no zero parameter, pitch >=
 * width), which the planner meets. Every argument is passed by value, so nothing has to outlive
 * a call: no batch copies. Notifiers are CNRT's events; only stream marks use them.
 */
#include <string.h>

#include "../runtime/codec_staged.h"
#include "cnrt_backend.h"

static int load(unsigned *features)
{
    const kvx_cnrt_api *cnrt = kvx_cnrt_load();
    if (!cnrt)
        return 0;
    *features = 0;
    if (cnrt->cnrtMemcpy2DAsync)
        *features |= KVX_RUNTIME_HAS_2D;
    if (cnrt->cnrtHostMalloc && cnrt->cnrtFreeHost)
        *features |= KVX_RUNTIME_HAS_PINNED;
    if (cnrt->cnrtNotifierCreate && cnrt->cnrtPlaceNotifier && cnrt->cnrtQueryNotifier &&
        cnrt->cnrtWaitNotifier && cnrt->cnrtNotifierDestroy)
        *features |= KVX_RUNTIME_HAS_EVENTS;
    return 1;
}

/* Anything CNRT does not call device memory (pinned or unregistered host memory) is host
 * memory. A failed query fails the call: CNRT answers for any pointer. */
static int32_t locate(const void *ptr, const char *what, int32_t *device)
{
    kvx_cnrt_pointer_attributes attr;
    memset(&attr, 0, sizeof attr);
    kvx_cnrt_ret rc = kvx_cnrt_load()->cnrtPointerGetAttributes(&attr, ptr);
    if (rc != KVX_CNRT_SUCCESS)
        return kvx_fail(KVX_ERR_DEVICE,
                        "cnrtPointerGetAttributes failed with CNRT error %u for "
                        "%s",
                        (unsigned)rc, what);
    *device = attr.type == KVX_CNRT_MEM_TYPE_DEVICE ? attr.device : -1;
    return KVX_OK;
}

static int64_t copy_1d(void *dst, const void *src, size_t bytes, uint32_t direction, void *queue,
                       const char **function)
{
    const kvx_cnrt_api *cnrt = kvx_cnrt_load();
    *function = cnrt->memcpy_async_name;
    return cnrt->memcpy_async(dst, (void *)src, bytes, queue, direction);
}

static int64_t copy_2d(const kvx_copy_grid *g, uint32_t direction, void *queue)
{
    return kvx_cnrt_load()->cnrtMemcpy2DAsync(g->dst, g->dst_pitch, g->src, g->src_pitch, g->width,
                                              g->height, direction, queue);
}

static int64_t host_alloc(size_t bytes, void **ptr)
{
    return kvx_cnrt_load()->cnrtHostMalloc(ptr, bytes);
}

static void host_free(void *ptr) { kvx_cnrt_load()->cnrtFreeHost(ptr); }

static int64_t event_create(void **notifier)
{
    return kvx_cnrt_load()->cnrtNotifierCreate(notifier);
}

static int64_t event_record(void *notifier, void *queue)
{
    return kvx_cnrt_load()->cnrtPlaceNotifier(notifier, queue);
}

static int64_t event_query(void *notifier, int *passed)
{
    kvx_cnrt_ret rc = kvx_cnrt_load()->cnrtQueryNotifier(notifier);
    *passed = rc == KVX_CNRT_SUCCESS;
    return rc == KVX_CNRT_ERROR_BUSY || rc == KVX_CNRT_ERROR_NOT_READY ? KVX_CNRT_SUCCESS : rc;
}

static int event_wait(void *notifier)
{
    return kvx_cnrt_load()->cnrtWaitNotifier(notifier) == KVX_CNRT_SUCCESS;
}

static void event_destroy(void *notifier) { kvx_cnrt_load()->cnrtNotifierDestroy(notifier); }

static int64_t sync_queue(void *queue) { return kvx_cnrt_load()->cnrtQueueSync(queue); }

/* Makes the queue's MLU current on this thread when it is not; leave() selects the one that
 * was. */
static int64_t enter(int32_t mlu, kvx_device_guard *guard, const char **function)
{
    const kvx_cnrt_api *cnrt = kvx_cnrt_load();
    int current = -1;
    int have_current = cnrt->cnrtGetDevice(&current) == KVX_CNRT_SUCCESS;
    *guard = (kvx_device_guard){current, NULL, 0};
    if (have_current && current == mlu)
        return KVX_CNRT_SUCCESS;
    *function = "cnrtSetDevice";
    kvx_cnrt_ret rc = cnrt->cnrtSetDevice(mlu);
    guard->restore = rc == KVX_CNRT_SUCCESS && have_current;
    return rc;
}

static void leave(const kvx_device_guard *guard)
{
    if (guard->restore)
        kvx_cnrt_load()->cnrtSetDevice(guard->previous);
}

const kvx_runtime_ops kvx_cnrt_ops = {
    KVX_RUNTIME_OPS_FUNCTIONS,
    .words = {.backend = "cnrt", .runtime = "CNRT", .device = "MLU", .stream = "queue"},
    .calls = {.copy_2d = "cnrtMemcpy2DAsync",
              .host_alloc = "cnrtHostMalloc",
              .event_create = "cnrtNotifierCreate",
              .event_record = "cnrtPlaceNotifier",
              .event_query = "cnrtQueryNotifier",
              .sync_stream = "cnrtQueueSync"},
    .kind_codes = {[KVX_COPY_HOST_TO_DEVICE] = KVX_CNRT_MEMCPY_HOST_TO_DEV,
                   [KVX_COPY_DEVICE_TO_HOST] = KVX_CNRT_MEMCPY_DEV_TO_HOST,
                   [KVX_COPY_DEVICE_TO_DEVICE] = KVX_CNRT_MEMCPY_DEV_TO_DEV},
    .copy_2d_kinds = KVX_COPY_KIND_BIT(KVX_COPY_HOST_TO_DEVICE) |
                     KVX_COPY_KIND_BIT(KVX_COPY_DEVICE_TO_HOST) |
                     KVX_COPY_KIND_BIT(KVX_COPY_DEVICE_TO_DEVICE),
    .max_2d_height = INT64_MAX,
    .device_copy_alignment = 1,
    .event_create = event_create,
    .event_record = event_record,
    .event_query = event_query,
    .event_wait = event_wait,
    .event_destroy = event_destroy,
    .sync_stream = sync_queue,
    .state = &(kvx_runtime_state){0},
};

static int32_t available(void) { return kvx_cnrt_load() != NULL; }

const kvx_backend kvx_cnrt_backend = KVX_RUNTIME_BACKEND("cnrt", KVX_DEVICE_CNRT, available,
                                                         kvx_cnrt_ops);
