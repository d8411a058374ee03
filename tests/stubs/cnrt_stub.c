/*
 * cnrt_stub.c - a test-only stand-in for libcnrt.so: the CNRT functions libkvx calls, on host
 * memory (see stub_common.h). Types written from the CNRT documentation, independently of
 * libkvx's cnrt_api.h.
 *
 * Variants (compile-time): -DSTUB_NO_V3 drops cnrtMemcpyAsync_V3, -DSTUB_NO_V2 drops _V2 too,
 * -DSTUB_NO_2D drops cnrtMemcpy2DAsync, -DSTUB_NO_PINNED drops cnrtHostMalloc/cnrtFreeHost.
 */
#include <stddef.h>
#include <stdint.h>

#include "stub_common.h"

typedef enum {
    cnrtSuccess = 0,
    cnrtErrorArgsInvalid = 100006,
    cnrtErrorMemcpyDirectionInvalid = 632013,
} cnrtRet_t;
typedef struct cnrtQueue *cnrtQueue_t;
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
