/*
 * transfer.c - KV transfer on Ascend NPUs through AscendCL copies.
 *
 * The slot mapping is read on the host (kvx.transfer hands over a host copy), the transfer is
 * planned there with the CPU backend's run planning (src/core/transfer_plan.c), and the runs are
 * submitted on the caller's aclrtStream:
 *   - host <-> device: one aclrtMemcpyBatchAsyncV2 call (else aclrtMemcpyBatchAsync) for the
 *     whole transfer. Batch copies exist on A2/A3-class chips only; where the runtime answers
 *     ACL_ERROR_RT_FEATURE_NOT_SUPPORT (310P, older chips) the backend remembers it and uses
 *     the loop below from then on. Host memory that is not pinned (aclrtMallocHost) makes
 *     AscendCL copy synchronously: correct, just not asynchronous.
 *   - runs that are not contiguous rows (HND layouts, padded heads): one aclrtMemcpy2dAsync per
 *     (run, head) grid where the runtime has it (at most KVX_ACL_MEMCPY_2D_MAX_HEIGHT rows each),
 *     instead of a copy per token and head. Older CANN documents 2D copies for host <-> device
 *     only; if a device <-> device one is refused with ACL_ERROR_RT_FEATURE_NOT_SUPPORT, the
 *     backend remembers it and resubmits the whole plan as 1D copies (replaying the copies
 *     already queued is harmless: the same bytes land in the same order).
 *   - device <-> device, or no batch API: one aclrtMemcpyAsync per run.
 * Out-of-range slots are rejected on the host before anything is enqueued (stronger than the
 * "skip and report at synchronisation" that docs/design.md allows asynchronous backends).
 *
 * The descriptor arrays of a batch call are owned by libkvx until an event recorded after the
 * call has completed (AscendCL may read them when the stream reaches the copy, after the call
 * returned): they sit in a pending list that every later call and kvx_synchronize reap.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../core/transfer_plan.h"
#include "ascend_backend.h"

/* ---------------------------------------------------------------- where memory lives */

enum where { WHERE_HOST, WHERE_DEVICE };

typedef struct location {
    enum where where;
    uint32_t device;
} location;

/* AscendCL reports device memory as DEVICE, pinned host memory as HOST and plain malloc memory
 * as UNREGISTERED; the last two both mean "host" here. A failed query fails the call. */
static int32_t locate(const kvx_acl_api *acl, const void *ptr, const char *what, location *out)
{
    kvx_acl_ptr_attributes attr;
    memset(&attr, 0, sizeof attr);
    kvx_acl_error rc = acl->aclrtPointerGetAttributes(ptr, &attr);
    if (rc != KVX_ACL_SUCCESS)
        return kvx_fail(KVX_ERR_DEVICE, "aclrtPointerGetAttributes failed with AscendCL error %d "
                        "for %s", (int)rc, what);
    if (attr.location.type == KVX_ACL_MEM_LOCATION_TYPE_DEVICE)
        *out = (location){WHERE_DEVICE, attr.location.id};
    else
        *out = (location){WHERE_HOST, 0};
    return KVX_OK;
}

static int32_t check_locations(const kvx_acl_api *acl, const kvx_paged_desc *paged,
                               const kvx_dense_desc *dense, const int64_t *slots,
                               const kvx_stream *stream, location *dense_loc)
{
    int32_t npu = stream->device_index, rc;
    location p = {WHERE_HOST, 0}, s = {WHERE_HOST, 0};
    if ((rc = locate(acl, paged->bases[0], "paged->bases[0]", &p)))
        return rc;
    if (p.where != WHERE_DEVICE)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "paged->bases[0]: expected NPU memory for the ascend backend, got host "
                        "memory");
    if ((int64_t)p.device != npu)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "paged->bases[0]: expected memory of NPU %d (the stream's), got NPU %u",
                        (int)npu, (unsigned)p.device);
    if ((rc = locate(acl, dense->base, "dense->base", dense_loc)))
        return rc;
    if (dense_loc->where == WHERE_DEVICE && (int64_t)dense_loc->device != npu)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "dense->base: expected host memory or memory of NPU %d, got NPU %u",
                        (int)npu, (unsigned)dense_loc->device);
    if ((rc = locate(acl, slots, "slot_mapping", &s)))
        return rc;
    if (s.where == WHERE_DEVICE)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "slot_mapping: expected host memory (the ascend backend plans on the "
                        "host), got NPU memory");
    return KVX_OK;
}

int32_t kvx_acl_locate(const void *ptr, const char *what, int32_t *device)
{
    const kvx_acl_api *acl = kvx_acl_load();
    if (!acl)
        return KVX_ERR_NOT_AVAILABLE;
    location where = {WHERE_HOST, 0};
    int32_t rc = locate(acl, ptr, what, &where);
    if (!rc)
        *device = where.where == WHERE_DEVICE ? (int32_t)where.device : -1;
    return rc;
}

/* ---------------------------------------------------------------- device guard */

int32_t kvx_acl_enter_device(const kvx_acl_api *acl, int32_t npu, kvx_device_guard *guard)
{
    guard->restore = 0;
    int32_t current = -1;
    int have_current = acl->aclrtGetDevice(&current) == KVX_ACL_SUCCESS;
    if (have_current && current == npu)
        return KVX_OK;
    kvx_acl_error rc = acl->aclrtSetDevice(npu);
    if (rc != KVX_ACL_SUCCESS)
        return kvx_acl_fail("aclrtSetDevice", rc, "selecting the stream's NPU");
    guard->previous = current;
    guard->restore = have_current;
    return KVX_OK;
}

void kvx_acl_leave_device(const kvx_acl_api *acl, const kvx_device_guard *guard)
{
    if (guard->restore)
        acl->aclrtSetDevice(guard->previous);
}

/* ---------------------------------------------------------------- descriptor lifetime */

typedef struct pending {
    kvx_acl_event event;
    void *block;
    struct pending *next;
} pending;

enum { MAX_PENDING = 64, MAX_SPARE_EVENTS = 16 };

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static pending *pending_head; /* oldest first */
static int pending_count;
static kvx_acl_event spare_events[MAX_SPARE_EVENTS];
static int spare_count;

static void retire_event(const kvx_acl_api *acl, kvx_acl_event event)
{
    if (spare_count < MAX_SPARE_EVENTS)
        spare_events[spare_count++] = event;
    else
        acl->aclrtDestroyEvent(event);
}

/* Frees the blocks whose events have completed; with `wait`, waits for the oldest ones too
 * until at most MAX_PENDING - 1 remain. Call with pending_lock held. */
static void reap_locked(const kvx_acl_api *acl, int wait)
{
    pending **link = &pending_head;
    while (*link) {
        pending *p = *link;
        kvx_acl_enum status = KVX_ACL_EVENT_RECORDED_STATUS_NOT_READY;
        int done = acl->aclrtQueryEventStatus(p->event, &status) == KVX_ACL_SUCCESS &&
                   status == KVX_ACL_EVENT_RECORDED_STATUS_COMPLETE;
        if (!done && wait && pending_count >= MAX_PENDING && link == &pending_head)
            done = acl->aclrtSynchronizeEvent(p->event) == KVX_ACL_SUCCESS;
        if (!done) {
            link = &p->next;
            continue;
        }
        *link = p->next;
        pending_count--;
        retire_event(acl, p->event);
        free(p->block);
        free(p);
    }
}

static void reap(const kvx_acl_api *acl, int wait)
{
    pthread_mutex_lock(&pending_lock);
    reap_locked(acl, wait);
    pthread_mutex_unlock(&pending_lock);
}

/* Synchronises the stream, then frees `block`, which queued copies may still read. If the
 * synchronisation fails they may still run: the block is then left allocated (a leak, after a
 * runtime failure) rather than freed under them. */
static kvx_acl_error free_after_sync(const kvx_acl_api *acl, kvx_acl_stream stream, void *block)
{
    kvx_acl_error sync = acl->aclrtSynchronizeStream(stream);
    if (sync == KVX_ACL_SUCCESS)
        free(block);
    return sync;
}

/* Keeps `block` alive until the stream has passed this point. If no event can be recorded the
 * stream is synchronised instead, so the block is never freed while the runtime may read it. */
static int32_t keep_until_done(const kvx_acl_api *acl, kvx_acl_stream stream, void *block)
{
    pending *p = malloc(sizeof *p);
    kvx_acl_error rc = KVX_ACL_SUCCESS;
    pthread_mutex_lock(&pending_lock);
    kvx_acl_event event = spare_count > 0 ? spare_events[--spare_count] : NULL;
    if (!event)
        rc = acl->aclrtCreateEvent(&event);
    if (p && rc == KVX_ACL_SUCCESS && (rc = acl->aclrtRecordEvent(event, stream)) ==
                                          KVX_ACL_SUCCESS) {
        *p = (pending){event, block, NULL};
        pending **tail = &pending_head;
        while (*tail)
            tail = &(*tail)->next;
        *tail = p;
        pending_count++;
        pthread_mutex_unlock(&pending_lock);
        return KVX_OK;
    }
    if (event)
        retire_event(acl, event);
    pthread_mutex_unlock(&pending_lock);
    free(p);
    kvx_acl_error sync = free_after_sync(acl, stream, block);
    if (rc != KVX_ACL_SUCCESS)
        return kvx_acl_fail("aclrtCreateEvent/aclrtRecordEvent", rc,
                            "tracking a batch copy (the stream was synchronised instead)");
    if (sync != KVX_ACL_SUCCESS)
        return kvx_acl_fail("aclrtSynchronizeStream", sync, "waiting for a batch copy");
    return KVX_OK;
}

/* ---------------------------------------------------------------- submission */

typedef struct submit {
    const kvx_acl_api *acl;
    kvx_acl_stream stream;
    int32_t direction;
    int32_t npu;
    location dense;
    const kvx_copy_plan *plan;
} submit;

static void endpoints(const submit *s, const kvx_copy *c, void **dst, void **src)
{
    int to_dense = s->direction == KVX_PAGED_TO_DENSE;
    *dst = to_dense ? c->dense : c->paged;
    *src = to_dense ? c->paged : c->dense;
}

static kvx_acl_mem_location mem_location(const submit *s, int paged_side)
{
    if (paged_side || s->dense.where == WHERE_DEVICE)
        return (kvx_acl_mem_location){(uint32_t)s->npu, KVX_ACL_MEM_LOCATION_TYPE_DEVICE};
    return (kvx_acl_mem_location){0, KVX_ACL_MEM_LOCATION_TYPE_HOST};
}

static atomic_int batch_unsupported; /* set once the runtime said the chip lacks batch copies */
static atomic_int d2d_2d_unsupported; /* set once it refused a device <-> device 2D copy */

enum { SUBMIT_FALL_BACK = 1 };

/* One batch call for every copy; returns SUBMIT_FALL_BACK when the chip has no batch copies. */
static int32_t submit_batch(const submit *s)
{
    size_t n = (size_t)s->plan->num_copies;
    /* One block: pointers, sizes, then the single attribute that covers every copy. */
    size_t bytes = n * (2 * sizeof(void *) + 2 * sizeof(size_t)) + sizeof(size_t) +
                   sizeof(kvx_acl_batch_attr);
    char *block = malloc(bytes);
    if (!block)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "transfer: cannot allocate %zu bytes of batch "
                        "descriptors", bytes);
    void **dsts = (void **)block, **srcs = dsts + n;
    size_t *dest_maxs = (size_t *)(srcs + n), *sizes = dest_maxs + n, *attr_index = sizes + n;
    kvx_acl_batch_attr *attr = (kvx_acl_batch_attr *)(attr_index + 1);
    for (size_t i = 0; i < n; i++) {
        endpoints(s, &s->plan->copies[i], &dsts[i], &srcs[i]);
        dest_maxs[i] = sizes[i] = (size_t)s->plan->copies[i].bytes;
    }
    int to_dense = s->direction == KVX_PAGED_TO_DENSE;
    memset(attr, 0, sizeof *attr);
    attr->dst_loc = mem_location(s, !to_dense);
    attr->src_loc = mem_location(s, to_dense);
    *attr_index = 0;
    const char *name = s->acl->aclrtMemcpyBatchAsyncV2 ? "aclrtMemcpyBatchAsyncV2"
                                                        : "aclrtMemcpyBatchAsync";
    size_t fail_index = SIZE_MAX;
    kvx_acl_error rc =
        s->acl->aclrtMemcpyBatchAsyncV2
            ? s->acl->aclrtMemcpyBatchAsyncV2(dsts, dest_maxs, srcs, sizes, n, attr, attr_index,
                                              1, s->stream)
            : s->acl->aclrtMemcpyBatchAsync(dsts, dest_maxs, srcs, sizes, n, attr, attr_index, 1,
                                            &fail_index, s->stream);
    if (rc == KVX_ACL_ERROR_RT_FEATURE_NOT_SUPPORT) {
        atomic_store(&batch_unsupported, 1);
        free(block);
        return SUBMIT_FALL_BACK;
    }
    if (rc != KVX_ACL_SUCCESS) {
        /* Part of the batch may have been queued: wait before the block is freed. */
        free_after_sync(s->acl, s->stream, block);
        if (fail_index != SIZE_MAX)
            return kvx_fail(KVX_ERR_DEVICE, "%s failed with AscendCL error %d at copy %zu of %zu",
                            name, (int)rc, fail_index, n);
        return kvx_acl_fail(name, rc, "submitting the transfer's copies");
    }
    return keep_until_done(s->acl, s->stream, block);
}

static int32_t submit_loop(const submit *s)
{
    kvx_acl_enum kind = s->dense.where == WHERE_DEVICE ? KVX_ACL_MEMCPY_DEVICE_TO_DEVICE
                        : s->direction == KVX_PAGED_TO_DENSE ? KVX_ACL_MEMCPY_DEVICE_TO_HOST
                                                             : KVX_ACL_MEMCPY_HOST_TO_DEVICE;
    int to_dense = s->direction == KVX_PAGED_TO_DENSE;
    for (int64_t i = 0; i < s->plan->num_copies; i++) {
        void *dst, *src;
        const kvx_copy *c = &s->plan->copies[i];
        endpoints(s, c, &dst, &src);
        kvx_acl_error rc;
        const char *name = "aclrtMemcpyAsync";
        if (c->height > 1) {
            name = "aclrtMemcpy2dAsync";
            size_t dpitch = (size_t)(to_dense ? c->dense_pitch : c->paged_pitch);
            size_t spitch = (size_t)(to_dense ? c->paged_pitch : c->dense_pitch);
            rc = s->acl->aclrtMemcpy2dAsync(dst, dpitch, src, spitch, (size_t)c->bytes,
                                            (size_t)c->height, kind, s->stream);
        } else {
            rc = s->acl->aclrtMemcpyAsync(dst, (size_t)c->bytes, src, (size_t)c->bytes, kind,
                                          s->stream);
        }
        if (rc == KVX_ACL_ERROR_RT_FEATURE_NOT_SUPPORT && c->height > 1 &&
            kind == KVX_ACL_MEMCPY_DEVICE_TO_DEVICE) {
            atomic_store(&d2d_2d_unsupported, 1);
            return SUBMIT_FALL_BACK;
        }
        if (rc != KVX_ACL_SUCCESS)
            return kvx_fail(KVX_ERR_DEVICE,
                            "%s failed with AscendCL error %d at copy %lld of %lld (the earlier "
                            "ones are queued)",
                            name, (int)rc, (long long)i, (long long)s->plan->num_copies);
    }
    return KVX_OK;
}

static int has_2d_copies(const kvx_copy_plan *plan)
{
    for (int64_t i = 0; i < plan->num_copies; i++)
        if (plan->copies[i].height > 1)
            return 1;
    return 0;
}

static int batch_usable(const submit *s)
{
    return s->dense.where == WHERE_HOST && !atomic_load(&batch_unsupported) &&
           !has_2d_copies(s->plan) &&
           (s->acl->aclrtMemcpyBatchAsyncV2 || s->acl->aclrtMemcpyBatchAsync);
}

/* The transfer proper, with the stream's NPU current. */
static int32_t transfer_on_device(submit *s, const kvx_paged_desc *paged,
                                  const kvx_dense_desc *dense, const int64_t *slot_mapping,
                                  const kvx_stream *stream)
{
    const kvx_acl_api *acl = s->acl;
    int32_t rc = check_locations(acl, paged, dense, slot_mapping, stream, &s->dense);
    if (rc)
        return rc;
    int use_2d = acl->aclrtMemcpy2dAsync &&
                 (s->dense.where == WHERE_HOST || !atomic_load(&d2d_2d_unsupported));
    kvx_copy_plan plan;
    if ((rc = kvx_plan_copies(paged, dense, slot_mapping, use_2d ? KVX_ACL_MEMCPY_2D_MAX_HEIGHT : 1,
                              &plan)))
        return rc;
    s->plan = &plan;
    if (plan.num_copies > 0) {
        reap(acl, 1);
        rc = batch_usable(s) ? submit_batch(s) : SUBMIT_FALL_BACK;
        if (rc == SUBMIT_FALL_BACK)
            rc = submit_loop(s);
        if (rc == SUBMIT_FALL_BACK) { /* device <-> device 2D refused: replay as 1D copies */
            free(plan.copies);
            if (!(rc = kvx_plan_copies(paged, dense, slot_mapping, 1, &plan)))
                rc = submit_loop(s);
        }
    }
    free(plan.copies);
    return rc;
}

int32_t kvx_ascend_transfer(const kvx_transfer_args *args, const kvx_stream *stream)
{
    const kvx_acl_api *acl = kvx_acl_load();
    if (!acl)
        return KVX_ERR_NOT_AVAILABLE;
    submit s = {acl, stream->handle, args->direction, stream->device_index, {WHERE_HOST, 0}, NULL};
    kvx_device_guard guard;
    int32_t rc = kvx_acl_enter_device(acl, s.npu, &guard);
    if (rc)
        return rc;
    rc = transfer_on_device(&s, args->paged, args->dense, args->slot_mapping, stream);
    kvx_acl_leave_device(acl, &guard);
    return rc;
}

int32_t kvx_ascend_synchronize(const kvx_stream *stream)
{
    const kvx_acl_api *acl = kvx_acl_load();
    if (!acl)
        return KVX_ERR_NOT_AVAILABLE;
    kvx_acl_error rc = acl->aclrtSynchronizeStream(stream ? stream->handle : NULL);
    reap(acl, 0);
    if (rc != KVX_ACL_SUCCESS)
        return kvx_acl_fail("aclrtSynchronizeStream", rc, "waiting for the stream");
    return KVX_OK;
}
