/*
 * acl_api.h - the few AscendCL (CANN runtime) types, constants and functions the Ascend backend
 * uses, declared here so that libkvx builds without the CANN SDK and loads libascendcl.so at run
 * time. Written from the AscendCL API reference; not copied from Huawei's headers.
 *
 * Checked against the real thing: tests/test_ascend_headers.py downloads the torch-npu wheel
 * (which ships torch_npu/include/acl/acl_rt.h and what it includes) and compiles
 * tests/stubs/acl_header_check.c, which includes both that header and this one and
 * _Static_asserts every function type (through KVX_ACL_FUNCTIONS), every constant and every
 * struct's size and field offsets below. Names here carry a kvx_/KVX_ prefix so that both can be
 * seen at once.
 */
#ifndef KVX_ACL_API_H
#define KVX_ACL_API_H

#include <stddef.h>
#include <stdint.h>

typedef int32_t kvx_acl_error;  /* aclError (int); 0 = ACL_SUCCESS */
typedef void *kvx_acl_stream;   /* aclrtStream */
typedef void *kvx_acl_event;    /* aclrtEvent */
typedef void *kvx_acl_context;  /* aclrtContext */
typedef uint32_t kvx_acl_enum;  /* every AscendCL enum we pass has non-negative values */

/* aclrtMemcpyKind */
enum {
    KVX_ACL_MEMCPY_HOST_TO_HOST = 0,
    KVX_ACL_MEMCPY_HOST_TO_DEVICE = 1,
    KVX_ACL_MEMCPY_DEVICE_TO_HOST = 2,
    KVX_ACL_MEMCPY_DEVICE_TO_DEVICE = 3
};

/* aclrtMemLocationType. HOST is what batch copies take for the host side, pinned or not;
 * aclrtPointerGetAttributes reports plain malloc memory as UNREGISTERED. */
enum {
    KVX_ACL_MEM_LOCATION_TYPE_HOST = 0,
    KVX_ACL_MEM_LOCATION_TYPE_DEVICE = 1,
    KVX_ACL_MEM_LOCATION_TYPE_UNREGISTERED = 2,
    KVX_ACL_MEM_LOCATION_TYPE_HOST_NUMA = 4
};

/* aclrtEventRecordedStatus */
enum { KVX_ACL_EVENT_RECORDED_STATUS_NOT_READY = 0, KVX_ACL_EVENT_RECORDED_STATUS_COMPLETE = 1 };

/* aclrtMemcpy2dAsync: at most this many rows per call (AscendCL reference). */
enum { KVX_ACL_MEMCPY_2D_MAX_HEIGHT = 5242880 };

/* aclrtMemcpyAsync: on-chip device-to-device copies need source and destination aligned so
 * (AscendCL reference, "Restriction"). */
enum { KVX_ACL_ON_CHIP_COPY_ALIGNMENT = 64 };

/* Error codes the backend acts on (acl_base_rt.h, error_codes/rt_error_codes.h). */
enum {
    KVX_ACL_SUCCESS = 0,
    /* also what aclrtMemcpy2dAsync answers for a kind it does not copy */
    KVX_ACL_ERROR_INVALID_PARAM = 100000,
    KVX_ACL_ERROR_RT_PARAM_INVALID = 107000,
    /* what batch copies return on chips without them (310P and older) */
    KVX_ACL_ERROR_RT_FEATURE_NOT_SUPPORT = 207000
};

/* aclrtMemLocation */
typedef struct kvx_acl_mem_location {
    uint32_t id;   /* device id for DEVICE */
    kvx_acl_enum type;
} kvx_acl_mem_location;

/* aclrtPtrAttributes */
typedef struct kvx_acl_ptr_attributes {
    kvx_acl_mem_location location;
    uint32_t page_size;
    uint32_t rsv[4];
} kvx_acl_ptr_attributes;

/* aclrtMemcpyBatchAttr: note the destination comes first. rsv must be zero. */
typedef struct kvx_acl_batch_attr {
    kvx_acl_mem_location dst_loc;
    kvx_acl_mem_location src_loc;
    uint8_t rsv[16];
} kvx_acl_batch_attr;

/*
 * Every function the backend resolves: X(name, required, parameter list). BATCH_ATTR and
 * PTR_ATTR name the struct types so that the header check can substitute AscendCL's own and
 * compare whole function types. All return aclError.
 */
#define KVX_ACL_FUNCTIONS(X, BATCH_ATTR, PTR_ATTR)                                             \
    X(aclrtMemcpyAsync, 1,                                                                     \
      (void *dst, size_t dest_max, const void *src, size_t count, kvx_acl_enum kind,           \
       kvx_acl_stream stream))                                                                 \
    X(aclrtMemcpyBatchAsync, 0,                                                                \
      (void **dsts, size_t *dest_maxs, void **srcs, size_t *sizes, size_t num_batches,         \
       BATCH_ATTR *attrs, size_t *attrs_indexes, size_t num_attrs, size_t *fail_index,         \
       kvx_acl_stream stream))                                                                 \
    X(aclrtMemcpyBatchAsyncV2, 0,                                                              \
      (void **dsts, size_t *dest_maxs, void **srcs, size_t *sizes, size_t num_batches,         \
       BATCH_ATTR *attrs, size_t *attrs_indexes, size_t num_attrs, kvx_acl_stream stream))     \
    X(aclrtMemcpy2dAsync, 0,                                                                   \
      (void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,   \
       kvx_acl_enum kind, kvx_acl_stream stream))                                              \
    X(aclrtPointerGetAttributes, 1, (const void *ptr, PTR_ATTR *attributes))                   \
    X(aclrtGetDevice, 1, (int32_t *device_id))                                                 \
    X(aclrtSetDevice, 1, (int32_t device_id))                                                  \
    X(aclrtGetCurrentContext, 1, (kvx_acl_context *context))                                   \
    X(aclrtSetCurrentContext, 1, (kvx_acl_context context))                                    \
    X(aclrtCreateEvent, 1, (kvx_acl_event *event))                                             \
    X(aclrtRecordEvent, 1, (kvx_acl_event event, kvx_acl_stream stream))                       \
    X(aclrtQueryEventStatus, 1, (kvx_acl_event event, kvx_acl_enum *status))                   \
    X(aclrtSynchronizeEvent, 1, (kvx_acl_event event))                                         \
    X(aclrtDestroyEvent, 1, (kvx_acl_event event))                                             \
    X(aclrtSynchronizeStream, 1, (kvx_acl_stream stream))                                     \
    X(aclrtMallocHost, 0, (void **host_ptr, size_t size))                                      \
    X(aclrtFreeHost, 0, (void *host_ptr))

#define KVX_ACL_FN_TYPEDEF(name, required, params) typedef kvx_acl_error(*kvx_##name##_fn) params;
KVX_ACL_FUNCTIONS(KVX_ACL_FN_TYPEDEF, kvx_acl_batch_attr, kvx_acl_ptr_attributes)
#undef KVX_ACL_FN_TYPEDEF

/* The loaded runtime: one pointer per function (NULL where an optional one is missing). */
typedef struct kvx_acl_api {
#define KVX_ACL_FN_FIELD(name, required, params) kvx_##name##_fn name;
    KVX_ACL_FUNCTIONS(KVX_ACL_FN_FIELD, kvx_acl_batch_attr, kvx_acl_ptr_attributes)
#undef KVX_ACL_FN_FIELD
} kvx_acl_api;

#endif /* KVX_ACL_API_H */
