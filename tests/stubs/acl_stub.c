/*
 * acl_stub.c - a test-only stand-in for libascendcl.so: exactly the AscendCL functions libkvx
 * calls (plus what the tests need to allocate memory and make streams), on host memory (see
 * stub_common.h). Its types are written from the AscendCL documentation independently of
 * libkvx's acl_api.h, so a wrong declaration there shows up as a wrong copy here.
 *
 * It enforces the rules of the AscendCL reference that a backend can get wrong, answering as the
 * real runtime does, so that breaking one fails a test:
 *   - aclrtMemcpy2dAsync copies between host and device only: a device-to-device one is
 *     ACL_ERROR_INVALID_PARAM (not only "feature not supported").
 *   - an on-chip device-to-device aclrtMemcpyAsync needs 64-byte-aligned source and
 *     destination: ACL_ERROR_RT_PARAM_INVALID otherwise.
 *   - an event belongs to the device whose context was current when it was created; recording
 *     it on a stream of another device is ACL_ERROR_RT_STREAM_CONTEXT.
 *   - aclrtSetDevice counts references per device (aclrtResetDevice gives one back) and makes
 *     the device's default context current; contexts are per thread (aclrtGetCurrentContext,
 *     aclrtSetCurrentContext, aclrtCreateContext). stub_acl_device_refs() shows the count.
 *   - aclrtPointerGetAttributes knows AscendCL allocations only: plain malloc memory fails it.
 *   - a NULL stream is the default stream of the current context's device, and needs one.
 *
 * Variants (compile-time): -DSTUB_NO_BATCH_V2 drops aclrtMemcpyBatchAsyncV2, -DSTUB_NO_BATCH
 * drops both batch functions (a runtime older than the batch API), -DSTUB_NO_2D drops
 * aclrtMemcpy2dAsync, -DSTUB_2D_HOST_REFUSED makes it refuse host <-> device copies too (with
 * ACL_ERROR_INVALID_PARAM, as a chip without 2D copies does), -DSTUB_NO_PINNED drops
 * aclrtMallocHost/aclrtFreeHost.
 */
#include <stdint.h>
#include <stdlib.h>

#include "stub_common.h"

typedef int aclError;
typedef void *aclrtStream;
typedef void *aclrtEvent;
typedef void *aclrtContext;
typedef enum { HOST_TO_HOST, HOST_TO_DEVICE, DEVICE_TO_HOST, DEVICE_TO_DEVICE } aclrtMemcpyKind;
typedef enum {
    LOC_HOST = 0,
    LOC_DEVICE = 1,
    LOC_UNREGISTERED = 2,
    LOC_HOST_NUMA = 4
} aclrtMemLocationType;
typedef struct {
    uint32_t id;
    aclrtMemLocationType type;
} aclrtMemLocation;
typedef struct {
    aclrtMemLocation location;
    uint32_t pageSize;
    uint32_t rsv[4];
} aclrtPtrAttributes;
typedef struct {
    aclrtMemLocation dstLoc;
    aclrtMemLocation srcLoc;
    uint8_t rsv[16];
} aclrtMemcpyBatchAttr;

enum {
    ACL_SUCCESS = 0,
    ACL_ERROR_INVALID_PARAM = 100000,
    ACL_ERROR_RT_PARAM_INVALID = 107000,
    ACL_ERROR_RT_CONTEXT_NULL = 107002,
    ACL_ERROR_RT_STREAM_CONTEXT = 107003,
};

#define API __attribute__((visibility("default")))
#define ENTER(name)                                                                            \
    do {                                                                                       \
        int injected_ = stub_enter(name);                                                      \
        if (injected_)                                                                         \
            return injected_;                                                                  \
    } while (0)

/* ---- contexts: one default context per device, made current by aclrtSetDevice */

enum { DEVICES = 8 };

typedef struct context {
    int device;
} context;

static context default_contexts[DEVICES] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};
static long device_refs[DEVICES];
static _Thread_local context *current_context;

static void make_current(context *c)
{
    current_context = c;
    stub_set_current_device(c ? c->device : -1);
}

/* aclrtSetDevice references of `device` that no aclrtResetDevice gave back. */
API long stub_acl_device_refs(int device)
{
    return device < 0 || device >= DEVICES
               ? -1
               : __atomic_load_n(&device_refs[device], __ATOMIC_RELAXED);
}

/* Work may only be enqueued from a thread whose current device is the stream's (AscendCL's
 * per-thread context): this is what makes libkvx's device selection observable. */
static aclError stream_for(aclrtStream handle, stub_stream **out)
{
    if (stub_current_device() < 0)
        return ACL_ERROR_RT_CONTEXT_NULL;
    *out = stub_resolve_stream(handle);
    if (handle && stub_stream_device(*out) != stub_current_device())
        return ACL_ERROR_RT_STREAM_CONTEXT;
    return ACL_SUCCESS;
}

/* stub_where() value a memcpy kind promises for each side (-1: host, pinned or not). */
static int kind_sides(aclrtMemcpyKind kind, int *dst, int *src)
{
    switch (kind) {
    case HOST_TO_DEVICE:
        *dst = 2;
        *src = -1;
        return 1;
    case DEVICE_TO_HOST:
        *dst = -1;
        *src = 2;
        return 1;
    case DEVICE_TO_DEVICE:
        *dst = 2;
        *src = 2;
        return 1;
    default: return 0; /* host-to-host is not allowed asynchronously */
    }
}

/* Stub status -> AscendCL error. */
static aclError status(int rc)
{
    return rc == STUB_BAD_ARGS       ? ACL_ERROR_INVALID_PARAM
           : rc == STUB_WRONG_DEVICE ? ACL_ERROR_RT_STREAM_CONTEXT
           : rc == STUB_NO_CONTEXT   ? ACL_ERROR_RT_CONTEXT_NULL
                                     : rc;
}

/* A 1D or 2D copy, from a thread with a current device (see stream_for). */
static aclError submit_copy(aclrtStream stream, aclrtMemcpyKind kind, stub_task *t)
{
    if (stub_current_device() < 0)
        return ACL_ERROR_RT_CONTEXT_NULL;
    if (!kind_sides(kind, &t->expect_dst, &t->expect_src))
        return ACL_ERROR_INVALID_PARAM;
    return status(stub_submit_copy(stream, stub_current_device(), t));
}

API aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count,
                              aclrtMemcpyKind kind, aclrtStream stream)
{
    ENTER("aclrtMemcpyAsync");
    if (destMax < count)
        return ACL_ERROR_INVALID_PARAM;
    if (kind == DEVICE_TO_DEVICE && (((uintptr_t)dst | (uintptr_t)src) & 63))
        return ACL_ERROR_RT_PARAM_INVALID; /* on-chip copies need 64-byte alignment */
    stub_task t = {.kind = STUB_TASK_COPY,
                   .function = "aclrtMemcpyAsync",
                   .dst = dst,
                   .src = src,
                   .bytes = count};
    return submit_copy(stream, kind, &t);
}

#ifndef STUB_NO_BATCH
#ifndef STUB_NO_2D
API aclError aclrtMemcpy2dAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                                size_t width, size_t height, aclrtMemcpyKind kind,
                                aclrtStream stream)
{
    ENTER("aclrtMemcpy2dAsync");
    /* "between host and device": the runtime calls any other kind an invalid parameter */
    if (kind != HOST_TO_DEVICE && kind != DEVICE_TO_HOST)
        return ACL_ERROR_INVALID_PARAM;
#ifdef STUB_2D_HOST_REFUSED
    return ACL_ERROR_INVALID_PARAM;
#endif
    if (height > 5242880)
        return ACL_ERROR_INVALID_PARAM;
    stub_task t = {.kind = STUB_TASK_COPY_2D,
                   .function = "aclrtMemcpy2dAsync",
                   .dst = dst,
                   .src = src,
                   .bytes = width,
                   .dpitch = dpitch,
                   .spitch = spitch,
                   .height = height};
    return submit_copy(stream, kind, &t);
}
#endif

static int location_side(aclrtMemLocation loc)
{
    if (loc.type == LOC_DEVICE)
        return 2;
    return loc.type == LOC_HOST ? -1 : -2;
}

static int attr_expects(const void *attrs, size_t k, int *dst, int *src)
{
    const aclrtMemcpyBatchAttr *a = (const aclrtMemcpyBatchAttr *)attrs + k;
    for (int i = 0; i < 16; i++)
        if (a->rsv[i])
            return 0;
    *dst = location_side(a->dstLoc);
    *src = location_side(a->srcLoc);
    /* batch copies are host <-> device only */
    return *dst != -2 && *src != -2 && (*dst == 2) != (*src == 2);
}

static aclError batch(const char *name, void **dsts, size_t *destMaxs, void **srcs, size_t *sizes,
                      size_t numBatches, aclrtMemcpyBatchAttr *attrs, size_t *attrsIndexes,
                      size_t numAttrs, aclrtStream stream)
{
    stub_stream *s;
    aclError rc = stream_for(stream, &s);
    if (rc)
        return rc;
    if (!dsts || !destMaxs || !srcs || !sizes || !numBatches || !attrs || !attrsIndexes ||
        !numAttrs || numAttrs > numBatches || attrsIndexes[0] != 0)
        return ACL_ERROR_INVALID_PARAM;
    stub_task t = {.kind = STUB_TASK_BATCH, .function = name, .attr_expects = attr_expects};
    t.batch = (stub_batch){dsts, destMaxs, srcs, sizes, numBatches, attrs, attrsIndexes, numAttrs};
    stub_enqueue(s, &t);
    return ACL_SUCCESS;
}

API aclError aclrtMemcpyBatchAsync(void **dsts, size_t *destMaxs, void **srcs, size_t *sizes,
                                   size_t numBatches, aclrtMemcpyBatchAttr *attrs,
                                   size_t *attrsIndexes, size_t numAttrs, size_t *failIndex,
                                   aclrtStream stream)
{
    ENTER("aclrtMemcpyBatchAsync");
    if (!failIndex)
        return ACL_ERROR_INVALID_PARAM;
    *failIndex = SIZE_MAX;
    return batch("aclrtMemcpyBatchAsync", dsts, destMaxs, srcs, sizes, numBatches, attrs,
                 attrsIndexes, numAttrs, stream);
}

#ifndef STUB_NO_BATCH_V2
API aclError aclrtMemcpyBatchAsyncV2(void **dsts, size_t *destMaxs, void **srcs, size_t *sizes,
                                     size_t numBatches, aclrtMemcpyBatchAttr *attrs,
                                     size_t *attrsIndexes, size_t numAttrs, aclrtStream stream)
{
    ENTER("aclrtMemcpyBatchAsyncV2");
    return batch("aclrtMemcpyBatchAsyncV2", dsts, destMaxs, srcs, sizes, numBatches, attrs,
                 attrsIndexes, numAttrs, stream);
}
#endif
#endif

API aclError aclrtPointerGetAttributes(const void *ptr, aclrtPtrAttributes *attributes)
{
    ENTER("aclrtPointerGetAttributes");
    if (!ptr || !attributes)
        return ACL_ERROR_INVALID_PARAM;
    int device = 0;
    int where = stub_where(ptr, &device);
    if (where == 0)
        return ACL_ERROR_RT_PARAM_INVALID; /* not an AscendCL allocation */
    attributes->location.type = where == 2 ? LOC_DEVICE : LOC_HOST;
    attributes->location.id = where == 2 ? (uint32_t)device : 0;
    attributes->pageSize = 4096;
    return ACL_SUCCESS;
}

API aclError aclrtGetDevice(int32_t *deviceId)
{
    return status(stub_call_get_device("aclrtGetDevice", deviceId, -1));
}

API aclError aclrtSetDevice(int32_t deviceId)
{
    ENTER("aclrtSetDevice");
    if (deviceId < 0 || deviceId >= DEVICES)
        return ACL_ERROR_INVALID_PARAM;
    __atomic_add_fetch(&device_refs[deviceId], 1, __ATOMIC_RELAXED);
    make_current(&default_contexts[deviceId]);
    return ACL_SUCCESS;
}

API aclError aclrtResetDevice(int32_t deviceId)
{
    ENTER("aclrtResetDevice");
    if (deviceId < 0 || deviceId >= DEVICES || stub_acl_device_refs(deviceId) <= 0)
        return ACL_ERROR_INVALID_PARAM;
    __atomic_sub_fetch(&device_refs[deviceId], 1, __ATOMIC_RELAXED);
    if (current_context == &default_contexts[deviceId])
        make_current(NULL);
    return ACL_SUCCESS;
}

API aclError aclrtGetCurrentContext(aclrtContext *ctx)
{
    ENTER("aclrtGetCurrentContext");
    if (!ctx)
        return ACL_ERROR_INVALID_PARAM;
    if (!current_context)
        return ACL_ERROR_RT_CONTEXT_NULL;
    *ctx = current_context;
    return ACL_SUCCESS;
}

API aclError aclrtSetCurrentContext(aclrtContext ctx)
{
    ENTER("aclrtSetCurrentContext");
    if (!ctx)
        return ACL_ERROR_INVALID_PARAM;
    make_current(ctx);
    return ACL_SUCCESS;
}

/* for the tests: a context of the caller's own, as an application may create */
API aclError aclrtCreateContext(aclrtContext *ctx, int32_t deviceId)
{
    ENTER("aclrtCreateContext");
    if (!ctx || deviceId < 0 || deviceId >= DEVICES)
        return ACL_ERROR_INVALID_PARAM;
    context *c = malloc(sizeof *c);
    if (!c)
        return ACL_ERROR_INVALID_PARAM;
    c->device = deviceId;
    make_current(c);
    *ctx = c;
    return ACL_SUCCESS;
}

/* ---- events: each belongs to the device whose context was current at its creation */

typedef struct event {
    stub_event *done;
    int device;
} event;

API aclError aclrtCreateEvent(aclrtEvent *out)
{
    ENTER("aclrtCreateEvent");
    if (!out)
        return ACL_ERROR_INVALID_PARAM;
    if (stub_current_device() < 0)
        return ACL_ERROR_RT_CONTEXT_NULL;
    event *e = malloc(sizeof *e);
    if (!e || !(e->done = stub_event_new())) {
        free(e);
        return ACL_ERROR_INVALID_PARAM;
    }
    e->device = stub_current_device();
    *out = e;
    return ACL_SUCCESS;
}

API aclError aclrtRecordEvent(aclrtEvent handle, aclrtStream stream)
{
    ENTER("aclrtRecordEvent");
    stub_stream *s;
    aclError rc = stream_for(stream, &s);
    if (rc)
        return rc;
    event *e = handle;
    if (!e)
        return ACL_ERROR_INVALID_PARAM;
    if (e->device != stub_stream_device(s))
        return ACL_ERROR_RT_STREAM_CONTEXT; /* an event of another device */
    stub_event_record(e->done, s);
    return ACL_SUCCESS;
}

API aclError aclrtQueryEventStatus(aclrtEvent handle, int *status)
{
    ENTER("aclrtQueryEventStatus");
    event *e = handle;
    if (!e || !status)
        return ACL_ERROR_INVALID_PARAM;
    *status = stub_event_done(e->done) ? 1 : 0;
    return ACL_SUCCESS;
}

API aclError aclrtSynchronizeEvent(aclrtEvent handle)
{
    ENTER("aclrtSynchronizeEvent");
    event *e = handle;
    if (!e)
        return ACL_ERROR_INVALID_PARAM;
    stub_event_wait(e->done);
    return ACL_SUCCESS;
}

API aclError aclrtDestroyEvent(aclrtEvent handle)
{
    ENTER("aclrtDestroyEvent");
    event *e = handle;
    if (!e)
        return ACL_ERROR_INVALID_PARAM;
    if (stub_event_pending(e->done)) {
        stub_error("aclrtDestroyEvent: event %p destroyed while still pending", handle);
        return ACL_SUCCESS; /* leaked on purpose: the stream still writes to it */
    }
    stub_event_free(e->done);
    free(e);
    return ACL_SUCCESS;
}

API aclError aclrtSynchronizeStream(aclrtStream stream)
{
    ENTER("aclrtSynchronizeStream");
    if (!stream && stub_current_device() < 0)
        return ACL_ERROR_RT_CONTEXT_NULL; /* the default stream of which device? */
    return stub_stream_sync(stream);
}

/* ---- pinned host memory (the host-staged codec's staging buffers) */
#ifndef STUB_NO_PINNED

API aclError aclrtMallocHost(void **hostPtr, size_t size)
{
    return status(stub_call_alloc("aclrtMallocHost", hostPtr, size, -1));
}

API aclError aclrtFreeHost(void *hostPtr)
{
    return status(stub_call_free("aclrtFreeHost", hostPtr, 0));
}
#endif

/* ---- for the tests: memory and streams, as an application would make them */

static int current_or_0(void) { return stub_current_device() < 0 ? 0 : stub_current_device(); }

API aclError aclrtMalloc(void **devPtr, size_t size, int policy)
{
    (void)policy;
    return status(stub_call_alloc("aclrtMalloc", devPtr, size, current_or_0()));
}

API aclError aclrtFree(void *devPtr) { return status(stub_call_free("aclrtFree", devPtr, 1)); }

API aclError aclrtCreateStream(aclrtStream *stream)
{
    return status(stub_call_stream_create("aclrtCreateStream", stream, current_or_0()));
}

API aclError aclrtDestroyStream(aclrtStream stream)
{
    return status(stub_call_stream_destroy("aclrtDestroyStream", stream));
}
