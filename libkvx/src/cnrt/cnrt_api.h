/*
 * cnrt_api.h - the few Cambricon CNRT types, constants and functions the CNRT backend uses,
 * declared here so that libkvx builds without the Neuware SDK and loads libcnrt.so at run time.
 * Written from CNRT's API reference, not copied from Cambricon's headers.
 *
 * No CNRT header can be fetched by the test suite, so each declaration was checked by hand
 * against cnrt.h of CNRT 6.14.1 (the "@file cnrt.h" of CNRT_MAJOR/MINOR/PATCH_VERSION 6/14/1, as
 * vendored in public repositories), and the older 5.x/6.x prototypes where they differ:
 *   - cnrtRet_t: enum, cnrtSuccess = 0, cnrtErrorNotSupport = 100050, cnrtErrorArgsInvalid =
 *     100006 (checked: 6.14.1 "Describes the return values of CNRT APIs").
 *   - cnrtMemTransDir_t: cnrtMemcpyHostToDev = 0, cnrtMemcpyDevToDev = 1, cnrtMemcpyDevToHost = 2,
 *     cnrtMemcpyHostToHost = 3, cnrtMemcpyPeerToPeer = 4, cnrtMemcpyNoDirection = 5 (checked:
 *     6.14.1; the older CNRT_MEM_TRANS_DIR_HOST2DEV.. names have the same values 0..2).
 *   - cnrtMemType_t: cnrtMemTypeUnregistered = 0, cnrtMemTypeHost = 1, cnrtMemTypeDevice = 2
 *     (checked: 6.14.1).
 *   - cnrtPointerAttributes_t: {cnrtMemType_t type; int device; size_t size; void *devicePointer;
 *     void *hostPointer; cnrtUvaCacheMode_t cacheMode; void *deviceBasePointer} (checked: 6.14.1;
 *     only type and device are read, and the buffer handed to CNRT is larger than the struct so
 *     that a runtime with a longer struct cannot write past it).
 *   - cnrtQueue_t: pointer to an opaque struct (checked: 6.14.1).
 *   - cnrtMemcpyAsync, cnrtMemcpyAsync_V2, cnrtMemcpyAsync_V3: (void *dst, void *src, size_t bytes,
 *     cnrtQueue_t queue, cnrtMemTransDir_t dir): the queue comes BEFORE the direction (checked:
 *     6.14.1, all three identical; _V3 is the recommended one, the plain call is deprecated).
 *   - cnrtMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
 *     size_t height, cnrtMemTransDir_t direction, cnrtQueue_t queue): here the direction comes
 *     BEFORE the queue; pitches >= width, no parameter may be 0 (checked: 6.14.1 notes).
 *   - cnrtPointerGetAttributes(cnrtPointerAttributes_t *attr, const void *ptr): attributes first
 *     (checked: 6.14.1 and the CNRT developer guide).
 *   - cnrtGetDevice(int *pOrdinal), cnrtSetDevice(int ordinal), cnrtQueueSync(cnrtQueue_t queue)
 *     (checked: 6.14.1).
 *   - cnrtHostMalloc(void **pPtr, size_t bytes), cnrtFreeHost(void *ptr): page-locked host
 *     memory for the host-staged codec (checked: 6.x cnrt.h; optional here, plain malloc when
 *     missing).
 *   - cnrtNotifier_t: pointer to an opaque struct; cnrtNotifierCreate(cnrtNotifier_t *pNotifier)
 *     ("for the current device"), cnrtPlaceNotifier(cnrtNotifier_t notifier, cnrtQueue_t queue),
 *     cnrtQueryNotifier(cnrtNotifier_t notifier) (cnrtSuccess once the queue passed it,
 *     cnrtErrorBusy = 632014 while not; cnrtErrorBusy is marked deprecated in favour of
 *     cnrtErrorNotReady = 1, taken as "not yet" too), cnrtWaitNotifier(cnrtNotifier_t),
 *     cnrtNotifierDestroy(cnrtNotifier_t) (checked: 6.14.1 and 6.0.2; optional here: a runtime
 *     without them has no stream marks).
 */
#ifndef KVX_CNRT_API_H
#define KVX_CNRT_API_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t kvx_cnrt_ret;  /* cnrtRet_t: an enum of non-negative values */
typedef void *kvx_cnrt_queue;   /* cnrtQueue_t */
typedef uint32_t kvx_cnrt_enum; /* cnrtMemTransDir_t */
typedef void *kvx_cnrt_notifier; /* cnrtNotifier_t */

enum {
    KVX_CNRT_SUCCESS = 0,
    KVX_CNRT_ERROR_NOT_READY = 1,
    KVX_CNRT_ERROR_ARGS_INVALID = 100006,
    KVX_CNRT_ERROR_NOT_SUPPORT = 100050,
    KVX_CNRT_ERROR_BUSY = 632014
};

/* cnrtMemTransDir_t */
enum {
    KVX_CNRT_MEMCPY_HOST_TO_DEV = 0,
    KVX_CNRT_MEMCPY_DEV_TO_DEV = 1,
    KVX_CNRT_MEMCPY_DEV_TO_HOST = 2
};

/* cnrtMemType_t */
enum {
    KVX_CNRT_MEM_TYPE_UNREGISTERED = 0,
    KVX_CNRT_MEM_TYPE_HOST = 1,
    KVX_CNRT_MEM_TYPE_DEVICE = 2
};

/* cnrtPointerAttributes_t (48 bytes on LP64), padded: see above. */
typedef struct kvx_cnrt_pointer_attributes {
    int32_t type;
    int32_t device;
    size_t size;
    void *device_pointer;
    void *host_pointer;
    int32_t cache_mode;
    void *device_base_pointer;
    unsigned char spare[208]; /* room for fields a newer CNRT may add */
} kvx_cnrt_pointer_attributes;

/* X(name, required, parameter list); all return cnrtRet_t. Of the three 1D copies at least one
 * must exist (checked by the loader). */
#define KVX_CNRT_FUNCTIONS(X)                                                                   \
    X(cnrtMemcpyAsync_V3, 0,                                                                    \
      (void *dst, void *src, size_t bytes, kvx_cnrt_queue queue, kvx_cnrt_enum dir))            \
    X(cnrtMemcpyAsync_V2, 0,                                                                    \
      (void *dst, void *src, size_t bytes, kvx_cnrt_queue queue, kvx_cnrt_enum dir))            \
    X(cnrtMemcpyAsync, 0,                                                                       \
      (void *dst, void *src, size_t bytes, kvx_cnrt_queue queue, kvx_cnrt_enum dir))            \
    X(cnrtMemcpy2DAsync, 0,                                                                     \
      (void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,   \
       kvx_cnrt_enum direction, kvx_cnrt_queue queue))                                         \
    X(cnrtPointerGetAttributes, 1, (kvx_cnrt_pointer_attributes *attr, const void *ptr))       \
    X(cnrtGetDevice, 1, (int *ordinal))                                                         \
    X(cnrtSetDevice, 1, (int ordinal))                                                          \
    X(cnrtQueueSync, 1, (kvx_cnrt_queue queue))                                                \
    X(cnrtHostMalloc, 0, (void **ptr, size_t bytes))                                            \
    X(cnrtFreeHost, 0, (void *ptr))                                                             \
    X(cnrtNotifierCreate, 0, (kvx_cnrt_notifier *notifier))                                     \
    X(cnrtPlaceNotifier, 0, (kvx_cnrt_notifier notifier, kvx_cnrt_queue queue))                 \
    X(cnrtQueryNotifier, 0, (kvx_cnrt_notifier notifier))                                       \
    X(cnrtWaitNotifier, 0, (kvx_cnrt_notifier notifier))                                        \
    X(cnrtNotifierDestroy, 0, (kvx_cnrt_notifier notifier))

#define KVX_CNRT_FN_TYPEDEF(name, required, params) typedef kvx_cnrt_ret(*kvx_##name##_fn) params;
KVX_CNRT_FUNCTIONS(KVX_CNRT_FN_TYPEDEF)
#undef KVX_CNRT_FN_TYPEDEF

typedef struct kvx_cnrt_api {
#define KVX_CNRT_FN_FIELD(name, required, params) kvx_##name##_fn name;
    KVX_CNRT_FUNCTIONS(KVX_CNRT_FN_FIELD)
#undef KVX_CNRT_FN_FIELD
    /* the best 1D async copy the runtime has (_V3, else _V2, else the plain one) and its name */
    kvx_cnrtMemcpyAsync_fn memcpy_async;
    const char *memcpy_async_name;
} kvx_cnrt_api;

#endif /* KVX_CNRT_API_H */
