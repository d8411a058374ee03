/*
 * cnrt_stub.c - a test-only stand-in for libcnrt.so: the CNRT functions libkvx calls, on host
 * memory (see stub_common.h). Types written from the CNRT documentation, independently of
 * libkvx's cnrt_api.h.
 *
 * A notifier belongs to the device current when it was created (cnrtNotifierCreate: "for the
 * current device"); placing it on a queue of another device is refused with cnrtErrorDevice.
 * The reference documents no such refusal: the stub assumes the strictest reading, as AscendCL
 * has it for events.
 *
 * Variants (compile-time): -DSTUB_NO_V3 drops cnrtMemcpyAsync_V3, -DSTUB_NO_V2 drops _V2 too,
 * -DSTUB_NO_2D drops cnrtMemcpy2DAsync, -DSTUB_NO_PINNED drops cnrtHostMalloc/cnrtFreeHost,
 * -DSTUB_NO_NOTIFIER drops the notifier functions.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "stub_common.h"

typedef enum {
    cnrtSuccess = 0,
    cnrtErrorArgsInvalid = 100006,
    cnrtErrorDevice = 632006,
    cnrtErrorMemcpyDirectionInvalid = 632013,
    cnrtErrorBusy = 632014,
} cnrtRet_t;
typedef struct cnrtQueue *cnrtQueue_t;
typedef struct cnrtNotifier *cnrtNotifier_t;
typedef enum {
    cnrtMemcpyHostToDev = 0,
    cnrtMemcpyDevToDev,
    cnrtMemcpyDevToHost,
    cnrtMemcpyHostToHost,
    cnrtMemcpyPeerToPeer,
    cnrtMemcpyNoDirection,
} cnrtMemTransDir_t;
typedef enum { cnrtMemTypeUnregistered = 0, cnrtMemTypeHost, cnrtMemTypeDevice } cnrtMemType_t;
typedef struct {
    cnrtMemType_t type;
    int device;
    size_t size;
    void *devicePointer;
    void *hostPointer;
    int cacheMode;
    void *deviceBasePointer;
} cnrtPointerAttributes_t;

#define API __attribute__((visibility("default")))
#define ENTER(name)                                                                            \
    do {                                                                                       \
        int injected_ = stub_enter(name);                                                      \
        if (injected_)                                                                         \
            return (cnrtRet_t)injected_;                                                       \
    } while (0)

static int dir_sides(cnrtMemTransDir_t dir, int *dst, int *src)
{
    switch (dir) {
    case cnrtMemcpyHostToDev:
        *dst = 2;
        *src = -1;
        return 1;
    case cnrtMemcpyDevToHost:
        *dst = -1;
        *src = 2;
        return 1;
    case cnrtMemcpyDevToDev:
        *dst = 2;
        *src = 2;
        return 1;
    default: return 0;
    }
}

/* CNRT has an implicit context on device 0 for threads that never chose one. */
static int current(void) { return stub_current_device() < 0 ? 0 : stub_current_device(); }

/* Stub status -> CNRT error. */
static cnrtRet_t status(int rc) { return rc < 0 ? cnrtErrorArgsInvalid : (cnrtRet_t)rc; }

static cnrtRet_t submit_copy(cnrtQueue_t queue, cnrtMemTransDir_t dir, stub_task *t)
{
    if (!dir_sides(dir, &t->expect_dst, &t->expect_src))
        return cnrtErrorMemcpyDirectionInvalid;
    return status(stub_submit_copy(queue, current(), t));
}

static cnrtRet_t copy(const char *name, void *dst, void *src, size_t bytes, cnrtQueue_t queue,
                      cnrtMemTransDir_t dir)
{
    stub_task t = {
        .kind = STUB_TASK_COPY, .function = name, .dst = dst, .src = src, .bytes = bytes};
    return submit_copy(queue, dir, &t);
}

#ifndef STUB_NO_V3
API cnrtRet_t cnrtMemcpyAsync_V3(void *dst, void *src, size_t bytes, cnrtQueue_t queue,
                                 cnrtMemTransDir_t dir)
{
    ENTER("cnrtMemcpyAsync_V3");
    return copy("cnrtMemcpyAsync_V3", dst, src, bytes, queue, dir);
}
#endif

#if !defined(STUB_NO_V2) && !defined(STUB_NO_V3_V2)
API cnrtRet_t cnrtMemcpyAsync_V2(void *dst, void *src, size_t bytes, cnrtQueue_t queue,
                                 cnrtMemTransDir_t dir)
{
    ENTER("cnrtMemcpyAsync_V2");
    return copy("cnrtMemcpyAsync_V2", dst, src, bytes, queue, dir);
}
#endif

API cnrtRet_t cnrtMemcpyAsync(void *dst, void *src, size_t bytes, cnrtQueue_t queue,
                              cnrtMemTransDir_t dir)
{
    ENTER("cnrtMemcpyAsync");
    return copy("cnrtMemcpyAsync", dst, src, bytes, queue, dir);
}

#ifndef STUB_NO_2D
API cnrtRet_t cnrtMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                                size_t width, size_t height, cnrtMemTransDir_t direction,
                                cnrtQueue_t queue)
{
    ENTER("cnrtMemcpy2DAsync");
    stub_task t = {.kind = STUB_TASK_COPY_2D,
                   .function = "cnrtMemcpy2DAsync",
                   .dst = (void *)dst,
                   .src = src,
                   .bytes = width,
                   .dpitch = dpitch,
                   .spitch = spitch,
                   .height = height};
    return submit_copy(queue, direction, &t);
}
#endif

API cnrtRet_t cnrtPointerGetAttributes(cnrtPointerAttributes_t *attr, const void *ptr)
{
    ENTER("cnrtPointerGetAttributes");
    if (!attr || !ptr)
        return cnrtErrorArgsInvalid;
    int device = 0;
    int where = stub_where(ptr, &device);
    attr->type = where == 2   ? cnrtMemTypeDevice
                 : where == 1 ? cnrtMemTypeHost
                              : cnrtMemTypeUnregistered;
    attr->device = where == 2 ? device : -1;
    attr->devicePointer = where == 2 ? (void *)ptr : NULL;
    attr->hostPointer = where == 2 ? NULL : (void *)ptr;
    return cnrtSuccess;
}

API cnrtRet_t cnrtGetDevice(int *ordinal)
{
    return status(stub_call_get_device("cnrtGetDevice", ordinal, 0)); /* implicit device 0 */
}

API cnrtRet_t cnrtSetDevice(int ordinal)
{
    return status(stub_call_set_device("cnrtSetDevice", ordinal));
}

API cnrtRet_t cnrtQueueSync(cnrtQueue_t queue)
{
    ENTER("cnrtQueueSync");
    return (cnrtRet_t)stub_stream_sync(queue);
}

/* ---- notifiers: each belongs to the device current at its creation */
#ifndef STUB_NO_NOTIFIER

struct cnrtNotifier {
    stub_event *done;
    int device;
};

API cnrtRet_t cnrtNotifierCreate(cnrtNotifier_t *pNotifier)
{
    ENTER("cnrtNotifierCreate");
    if (!pNotifier)
        return cnrtErrorArgsInvalid;
    cnrtNotifier_t n = malloc(sizeof *n);
    if (!n || !(n->done = stub_event_new())) {
        free(n);
        return cnrtErrorArgsInvalid;
    }
    n->device = current();
    *pNotifier = n;
    return cnrtSuccess;
}

API cnrtRet_t cnrtPlaceNotifier(cnrtNotifier_t notifier, cnrtQueue_t queue)
{
    ENTER("cnrtPlaceNotifier");
    stub_stream *s = stub_resolve_stream(queue);
    if (!notifier || !s)
        return cnrtErrorArgsInvalid;
    if (notifier->device != stub_stream_device(s))
        return cnrtErrorDevice;
    stub_event_record(notifier->done, s);
    return cnrtSuccess;
}

API cnrtRet_t cnrtQueryNotifier(cnrtNotifier_t notifier)
{
    ENTER("cnrtQueryNotifier");
    if (!notifier)
        return cnrtErrorArgsInvalid;
    return stub_event_done(notifier->done) ? cnrtSuccess : cnrtErrorBusy;
}

API cnrtRet_t cnrtWaitNotifier(cnrtNotifier_t notifier)
{
    ENTER("cnrtWaitNotifier");
    if (!notifier)
        return cnrtErrorArgsInvalid;
    stub_event_wait(notifier->done);
    return cnrtSuccess;
}

/* CNRT frees a notifier the queue has not reached once it has; the stub leaks it instead, since
 * its queue still writes to it. */
API cnrtRet_t cnrtNotifierDestroy(cnrtNotifier_t notifier)
{
    ENTER("cnrtNotifierDestroy");
    if (!notifier)
        return cnrtErrorArgsInvalid;
    if (stub_event_pending(notifier->done))
        return cnrtSuccess;
    stub_event_free(notifier->done);
    free(notifier);
    return cnrtSuccess;
}
#endif

/* ---- page-locked host memory (the host-staged codec's staging buffers) */
#ifndef STUB_NO_PINNED

API cnrtRet_t cnrtHostMalloc(void **pPtr, size_t bytes)
{
    return status(stub_call_alloc("cnrtHostMalloc", pPtr, bytes, -1));
}

API cnrtRet_t cnrtFreeHost(void *ptr) { return status(stub_call_free("cnrtFreeHost", ptr, 0)); }
#endif

/* ---- for the tests */

API cnrtRet_t cnrtMalloc(void **pPtr, size_t bytes)
{
    return status(stub_call_alloc("cnrtMalloc", pPtr, bytes, current()));
}

API cnrtRet_t cnrtFree(void *ptr) { return status(stub_call_free("cnrtFree", ptr, 1)); }

API cnrtRet_t cnrtQueueCreate(cnrtQueue_t *queue)
{
    return status(stub_call_stream_create("cnrtQueueCreate", (void **)queue, current()));
}

API cnrtRet_t cnrtQueueDestroy(cnrtQueue_t queue)
{
    return status(stub_call_stream_destroy("cnrtQueueDestroy", queue));
}
