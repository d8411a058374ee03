/*
 * transfer.c - KV transfer on Cambricon MLUs through CNRT async copies.
 *
 * As on Ascend, the slot mapping is read on the host and the transfer planned there
 * (src/core/transfer_plan.c). Each run becomes one cnrtMemcpyAsync_V3 (else _V2, else the plain
 * call) on the caller's queue; where a run is made of per-token (or per-head) pieces at a fixed
 * pitch on both sides (HND layouts, padded rows), it becomes one cnrtMemcpy2DAsync instead,
 * within CNRT's documented limits (no zero parameter, pitch >= width). Every argument is passed
 * by value, so nothing has to outlive the call. Out-of-range slots are rejected on the host
 * before anything is enqueued.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/transfer_plan.h"
#include "cnrt_backend.h"

typedef struct location {
    int device_memory;
    int device;
} location;

/* Anything CNRT does not call device memory (pinned or unregistered host memory) is host memory
 * here. A failed query fails the call. */
static int32_t locate(const kvx_cnrt_api *cnrt, const void *ptr, const char *what, location *out)
{
    kvx_cnrt_pointer_attributes attr;
    memset(&attr, 0, sizeof attr);
    kvx_cnrt_ret rc = cnrt->cnrtPointerGetAttributes(&attr, ptr);
    if (rc != KVX_CNRT_SUCCESS)
        return kvx_fail(KVX_ERR_DEVICE, "cnrtPointerGetAttributes failed with CNRT error %u for "
                        "%s", (unsigned)rc, what);
    *out = attr.type == KVX_CNRT_MEM_TYPE_DEVICE ? (location){1, attr.device} : (location){0, 0};
    return KVX_OK;
}

static int32_t check_locations(const kvx_cnrt_api *cnrt, const kvx_paged_desc *paged,
                               const kvx_dense_desc *dense, const int64_t *slots,
                               const kvx_stream *stream, location *dense_loc)
{
    int mlu = stream->device_index;
    int32_t rc;
    location p = {0, 0}, s = {0, 0};
    if ((rc = locate(cnrt, paged->bases[0], "paged->bases[0]", &p)))
        return rc;
    if (!p.device_memory)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "paged->bases[0]: expected MLU memory for the cnrt backend, got host "
                        "memory");
    if (p.device != mlu)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "paged->bases[0]: expected memory of MLU %d (the queue's), got MLU %d",
                        mlu, p.device);
    if ((rc = locate(cnrt, dense->base, "dense->base", dense_loc)))
        return rc;
    if (dense_loc->device_memory && dense_loc->device != mlu)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "dense->base: expected host memory or memory of MLU %d, got MLU %d", mlu,
                        dense_loc->device);
    if ((rc = locate(cnrt, slots, "slot_mapping", &s)))
        return rc;
    if (s.device_memory)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "slot_mapping: expected host memory (the cnrt backend plans on the "
                        "host), got MLU memory");
    return KVX_OK;
}

int32_t kvx_cnrt_locate(const void *ptr, const char *what, int32_t *device)
{
    const kvx_cnrt_api *cnrt = kvx_cnrt_load();
    if (!cnrt)
        return KVX_ERR_NOT_AVAILABLE;
    location where = {0, 0};
    int32_t rc = locate(cnrt, ptr, what, &where);
    if (!rc)
        *device = where.device_memory ? where.device : -1;
    return rc;
}

/* Makes the queue's MLU current on this thread when it is not. */
int32_t kvx_cnrt_enter_device(const kvx_cnrt_api *cnrt, int mlu, kvx_device_guard *guard)
{
    int current = -1;
    guard->restore = 0;
    int have_current = cnrt->cnrtGetDevice(&current) == KVX_CNRT_SUCCESS;
    if (have_current && current == mlu)
        return KVX_OK;
    kvx_cnrt_ret rc = cnrt->cnrtSetDevice(mlu);
    if (rc != KVX_CNRT_SUCCESS)
        return kvx_cnrt_fail("cnrtSetDevice", rc, "selecting the queue's MLU");
    guard->previous = current;
    guard->restore = have_current;
    return KVX_OK;
}

void kvx_cnrt_leave_device(const kvx_cnrt_api *cnrt, const kvx_device_guard *guard)
{
    if (guard->restore)
        cnrt->cnrtSetDevice(guard->previous);
}

static kvx_cnrt_enum direction_of(int dense_on_device, int32_t direction)
{
    if (dense_on_device)
        return KVX_CNRT_MEMCPY_DEV_TO_DEV;
    return direction == KVX_PAGED_TO_DENSE ? KVX_CNRT_MEMCPY_DEV_TO_HOST
                                           : KVX_CNRT_MEMCPY_HOST_TO_DEV;
}

static int32_t submit(const kvx_cnrt_api *cnrt, kvx_cnrt_queue queue, const kvx_copy_plan *plan,
                      int32_t direction, kvx_cnrt_enum dir)
{
    int to_dense = direction == KVX_PAGED_TO_DENSE;
    for (int64_t i = 0; i < plan->num_copies; i++) {
        const kvx_copy *c = &plan->copies[i];
        void *dst = to_dense ? c->dense : c->paged, *src = to_dense ? c->paged : c->dense;
        kvx_cnrt_ret rc;
        const char *name;
        if (c->height > 1) {
            size_t dpitch = (size_t)(to_dense ? c->dense_pitch : c->paged_pitch);
            size_t spitch = (size_t)(to_dense ? c->paged_pitch : c->dense_pitch);
            name = "cnrtMemcpy2DAsync";
            /* 2D: the direction comes before the queue. */
            rc = cnrt->cnrtMemcpy2DAsync(dst, dpitch, src, spitch, (size_t)c->bytes,
                                         (size_t)c->height, dir, queue);
        } else {
            name = cnrt->memcpy_async_name;
            /* 1D: the queue comes before the direction. */
            rc = cnrt->memcpy_async(dst, src, (size_t)c->bytes, queue, dir);
        }
        if (rc != KVX_CNRT_SUCCESS)
            return kvx_fail(KVX_ERR_DEVICE,
                            "%s failed with CNRT error %u at copy %lld of %lld (the earlier ones "
                            "are queued)",
                            name, (unsigned)rc, (long long)i, (long long)plan->num_copies);
    }
    return KVX_OK;
}

/* The transfer proper, with the queue's MLU current. */
static int32_t transfer_on_device(const kvx_cnrt_api *cnrt, const kvx_paged_desc *paged,
                                  const kvx_dense_desc *dense, const int64_t *slot_mapping,
                                  int32_t direction, const kvx_stream *stream)
{
    location dense_loc = {0, 0};
    int32_t rc = check_locations(cnrt, paged, dense, slot_mapping, stream, &dense_loc);
    if (rc)
        return rc;
    kvx_copy_plan plan;
    if ((rc = kvx_plan_copies(paged, dense, slot_mapping, cnrt->cnrtMemcpy2DAsync ? INT64_MAX : 1,
                              &plan)))
        return rc;
    rc = submit(cnrt, stream->handle, &plan, direction,
                direction_of(dense_loc.device_memory, direction));
    free(plan.copies);
    return rc;
}

int32_t kvx_cnrt_transfer(const kvx_transfer_args *args, const kvx_stream *stream)
{
    const kvx_cnrt_api *cnrt = kvx_cnrt_load();
    if (!cnrt)
        return KVX_ERR_NOT_AVAILABLE;
    kvx_device_guard guard;
    int32_t rc = kvx_cnrt_enter_device(cnrt, stream->device_index, &guard);
    if (rc)
        return rc;
    rc = transfer_on_device(cnrt, args->paged, args->dense, args->slot_mapping, args->direction, stream);
    kvx_cnrt_leave_device(cnrt, &guard);
    return rc;
}

int32_t kvx_cnrt_synchronize(const kvx_stream *stream)
{
    const kvx_cnrt_api *cnrt = kvx_cnrt_load();
    if (!cnrt)
        return KVX_ERR_NOT_AVAILABLE;
    kvx_cnrt_ret rc = cnrt->cnrtQueueSync(stream ? stream->handle : NULL);
    if (rc != KVX_CNRT_SUCCESS)
        return kvx_cnrt_fail("cnrtQueueSync", rc, "waiting for the queue");
    return KVX_OK;
}
