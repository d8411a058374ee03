/*
 * acl_stub.c - a test-only stand-in for libascendcl.so: exactly the AscendCL functions libkvx
 * calls (plus what the tests need to allocate memory and make streams), on host memory (see
 * stub_common.h). Its types are written from the AscendCL documentation independently of
 * libkvx's acl_api.h, so a wrong declaration there shows up as a wrong copy here.
 *
 * Variants (compile-time): -DSTUB_NO_BATCH_V2 drops aclrtMemcpyBatchAsyncV2, -DSTUB_NO_BATCH
 * drops both batch functions (a runtime older than the batch API), -DSTUB_NO_2D drops
 * aclrtMemcpy2dAsync, -DSTUB_2D_NO_D2D makes it refuse device-to-device copies (older CANN),
 * -DSTUB_NO_PINNED drops aclrtMallocHost/aclrtFreeHost.
 */
#include <stdint.h>
#include <stdlib.h>

#include "stub_common.h"

typedef int aclError;
typedef void *aclrtStream;
typedef void *aclrtEvent;
typedef enum { HOST_TO_HOST, HOST_TO_DEVICE, DEVICE_TO_HOST, DEVICE_TO_DEVICE } aclrtMemcpyKind;
typedef enum { LOC_HOST = 0, LOC_DEVICE = 1, LOC_UNREGISTERED = 2, LOC_HOST_NUMA = 4 } aclrtMemLocationType;
typedef struct { uint32_t id; aclrtMemLocationType type; } aclrtMemLocation;
typedef struct { aclrtMemLocation location; uint32_t pageSize; uint32_t rsv[4]; } aclrtPtrAttributes;
typedef struct { aclrtMemLocation dstLoc; aclrtMemLocation srcLoc; uint8_t rsv[16]; } aclrtMemcpyBatchAttr;

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
    case HOST_TO_DEVICE: *dst = 2; *src = -1; return 1;
    case DEVICE_TO_HOST: *dst = -1; *src = 2; return 1;
    case DEVICE_TO_DEVICE: *dst = 2; *src = 2; return 1;
    default: return 0; /* host-to-host is not allowed asynchronously */
    }
}

/* Stub status -> AscendCL error. */
static aclError status(int rc)
{
    return rc == STUB_BAD_ARGS ? ACL_ERROR_INVALID_PARAM
           : rc == STUB_WRONG_DEVICE ? ACL_ERROR_RT_STREAM_CONTEXT
           : rc == STUB_NO_CONTEXT ? ACL_ERROR_RT_CONTEXT_NULL
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
    stub_task t = {.kind = STUB_TASK_COPY, .function = "aclrtMemcpyAsync", .dst = dst,
                   .src = src, .bytes = count};
    return submit_copy(stream, kind, &t);
}

#ifndef STUB_NO_BATCH
#ifndef STUB_NO_2D
API aclError aclrtMemcpy2dAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                                size_t height, aclrtMemcpyKind kind, aclrtStream stream)
{
    ENTER("aclrtMemcpy2dAsync");
#ifdef STUB_2D_NO_D2D
    if (kind == DEVICE_TO_DEVICE)
        return 207000; /* as documented for older CANN: host <-> device only */
#endif
    if (height > 5242880)
        return ACL_ERROR_INVALID_PARAM;
    stub_task t = {.kind = STUB_TASK_COPY_2D, .function = "aclrtMemcpy2dAsync", .dst = dst,
                   .src = src, .bytes = width, .dpitch = dpitch, .spitch = spitch, .height = height};
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
    attributes->location.type = where == 2 ? LOC_DEVICE : where == 1 ? LOC_HOST : LOC_UNREGISTERED;
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
    return status(stub_call_set_device("aclrtSetDevice", deviceId));
}

API aclError aclrtCreateEvent(aclrtEvent *event)
{
    ENTER("aclrtCreateEvent");
    if (!event)
        return ACL_ERROR_INVALID_PARAM;
    *event = stub_event_new();
    return *event ? ACL_SUCCESS : ACL_ERROR_INVALID_PARAM;
}

API aclError aclrtRecordEvent(aclrtEvent event, aclrtStream stream)
{
    ENTER("aclrtRecordEvent");
    stub_stream *s;
    aclError rc = stream_for(stream, &s);
    if (rc)
        return rc;
    if (!event)
        return ACL_ERROR_INVALID_PARAM;
    stub_event_record(event, s);
    return ACL_SUCCESS;
}

API aclError aclrtQueryEventStatus(aclrtEvent event, int *status)
{
    ENTER("aclrtQueryEventStatus");
    if (!event || !status)
        return ACL_ERROR_INVALID_PARAM;
    *status = stub_event_done(event) ? 1 : 0;
    return ACL_SUCCESS;
}

API aclError aclrtSynchronizeEvent(aclrtEvent event)
{
    ENTER("aclrtSynchronizeEvent");
    if (!event)
        return ACL_ERROR_INVALID_PARAM;
    stub_event_wait(event);
    return ACL_SUCCESS;
}

API aclError aclrtDestroyEvent(aclrtEvent event)
{
    ENTER("aclrtDestroyEvent");
    if (!event)
        return ACL_ERROR_INVALID_PARAM;
    if (stub_event_pending(event)) {
        stub_error("aclrtDestroyEvent: event %p destroyed while still pending", event);
        return ACL_SUCCESS; /* leaked on purpose: the stream still writes to it */
    }
    stub_event_free(event);
    return ACL_SUCCESS;
}

API aclError aclrtSynchronizeStream(aclrtStream stream)
{
    ENTER("aclrtSynchronizeStream");
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
