/*
 * acl_header_check.c - compiled by tests/test_ascend_headers.py against the real AscendCL
 * headers (from the torch-npu wheel) next to libkvx's own declarations: any mismatch in a
 * function type, a constant, or a struct's size or field offsets fails the compile (or, for the
 * two constants that are not constant expressions, the run).
 */
#include <stddef.h>

#include "acl/acl_rt.h"
#include "acl_api.h"

#define SAME_TYPE(a, b) __builtin_types_compatible_p(a, b)
#define CHECK_FN(name, required, params)                                                       \
    _Static_assert(SAME_TYPE(__typeof__(&name), aclError(*) params), #name ": function type");
KVX_ACL_FUNCTIONS(CHECK_FN, aclrtMemcpyBatchAttr, aclrtPtrAttributes)

/* Our scalar stand-ins are the runtime's types. */
_Static_assert(SAME_TYPE(kvx_acl_error, aclError), "aclError");
_Static_assert(SAME_TYPE(kvx_acl_stream, aclrtStream), "aclrtStream");
_Static_assert(SAME_TYPE(kvx_acl_event, aclrtEvent), "aclrtEvent");
_Static_assert(SAME_TYPE(kvx_acl_context, aclrtContext), "aclrtContext");
_Static_assert(SAME_TYPE(kvx_acl_enum, aclrtMemcpyKind),
               "aclrtMemcpyKind is a 32-bit unsigned enum");
_Static_assert(SAME_TYPE(kvx_acl_enum, aclrtMemLocationType), "aclrtMemLocationType");
_Static_assert(SAME_TYPE(kvx_acl_enum, aclrtEventRecordedStatus), "aclrtEventRecordedStatus");

#define CHECK_VALUE(ours, theirs) _Static_assert((long long)(ours) == (long long)(theirs), #theirs);
CHECK_VALUE(KVX_ACL_MEMCPY_HOST_TO_HOST, ACL_MEMCPY_HOST_TO_HOST)
CHECK_VALUE(KVX_ACL_MEMCPY_HOST_TO_DEVICE, ACL_MEMCPY_HOST_TO_DEVICE)
CHECK_VALUE(KVX_ACL_MEMCPY_DEVICE_TO_HOST, ACL_MEMCPY_DEVICE_TO_HOST)
CHECK_VALUE(KVX_ACL_MEMCPY_DEVICE_TO_DEVICE, ACL_MEMCPY_DEVICE_TO_DEVICE)
CHECK_VALUE(KVX_ACL_MEM_LOCATION_TYPE_HOST, ACL_MEM_LOCATION_TYPE_HOST)
CHECK_VALUE(KVX_ACL_MEM_LOCATION_TYPE_DEVICE, ACL_MEM_LOCATION_TYPE_DEVICE)
CHECK_VALUE(KVX_ACL_MEM_LOCATION_TYPE_UNREGISTERED, ACL_MEM_LOCATION_TYPE_UNREGISTERED)
CHECK_VALUE(KVX_ACL_MEM_LOCATION_TYPE_HOST_NUMA, ACL_MEM_LOCATION_TYPE_HOST_NUMA)
CHECK_VALUE(KVX_ACL_EVENT_RECORDED_STATUS_NOT_READY, ACL_EVENT_RECORDED_STATUS_NOT_READY)
CHECK_VALUE(KVX_ACL_EVENT_RECORDED_STATUS_COMPLETE, ACL_EVENT_RECORDED_STATUS_COMPLETE)
CHECK_VALUE(KVX_ACL_ERROR_RT_PARAM_INVALID, ACL_ERROR_RT_PARAM_INVALID)
CHECK_VALUE(KVX_ACL_ERROR_RT_FEATURE_NOT_SUPPORT, ACL_ERROR_RT_FEATURE_NOT_SUPPORT)

#define CHECK_SIZE(ours, theirs) _Static_assert(sizeof(ours) == sizeof(theirs), "sizeof " #theirs);
#define CHECK_FIELD(ours, of, theirs, tf)                                                      \
    _Static_assert(offsetof(ours, of) == offsetof(theirs, tf), #theirs "." #tf " offset");    \
    _Static_assert(sizeof(((ours *)0)->of) == sizeof(((theirs *)0)->tf), #theirs "." #tf " size");
CHECK_SIZE(kvx_acl_mem_location, aclrtMemLocation)
CHECK_FIELD(kvx_acl_mem_location, id, aclrtMemLocation, id)
CHECK_FIELD(kvx_acl_mem_location, type, aclrtMemLocation, type)
CHECK_SIZE(kvx_acl_ptr_attributes, aclrtPtrAttributes)
CHECK_FIELD(kvx_acl_ptr_attributes, location, aclrtPtrAttributes, location)
CHECK_FIELD(kvx_acl_ptr_attributes, page_size, aclrtPtrAttributes, pageSize)
CHECK_FIELD(kvx_acl_ptr_attributes, rsv, aclrtPtrAttributes, rsv)
CHECK_SIZE(kvx_acl_batch_attr, aclrtMemcpyBatchAttr)
CHECK_FIELD(kvx_acl_batch_attr, dst_loc, aclrtMemcpyBatchAttr, dstLoc)
CHECK_FIELD(kvx_acl_batch_attr, src_loc, aclrtMemcpyBatchAttr, srcLoc)
CHECK_FIELD(kvx_acl_batch_attr, rsv, aclrtMemcpyBatchAttr, rsv)

/* acl_base_rt.h declares these two as `static const int`, not constant expressions in C, so
 * they are compared when the program runs; the test runs it and expects exit status 0. */
#include <stdio.h>

int main(void)
{
    int bad = 0;
    if (KVX_ACL_SUCCESS != ACL_SUCCESS)
        bad = printf("ACL_SUCCESS: ours %d, theirs %d\n", KVX_ACL_SUCCESS, ACL_SUCCESS);
    if (KVX_ACL_ERROR_INVALID_PARAM != ACL_ERROR_INVALID_PARAM)
        bad = printf("ACL_ERROR_INVALID_PARAM: ours %d, theirs %d\n", KVX_ACL_ERROR_INVALID_PARAM,
                     ACL_ERROR_INVALID_PARAM);
    if (!bad)
        printf("acl header check: %d function types, constants and struct layouts match\n",
               (int)(sizeof(kvx_acl_api) / sizeof(void *)));
    return bad ? 1 : 0;
}
