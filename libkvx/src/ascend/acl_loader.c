/*
 * acl_loader.c - resolves the AscendCL functions of acl_api.h from libascendcl.so, found at run
 * time by core/runtime_loader.c (an already-loaded copy first).
 */
#include <dlfcn.h>
#include <stdio.h>

#include "../core/runtime_loader.h"

#include "ascend_backend.h"

#define ACL_LIBRARY "libascendcl.so"

static kvx_acl_api api;

/* Resolves every function; fails on a missing required one, leaves optional ones NULL. */
static int resolve(void *handle, void *table, char *reason, size_t size)
{
    kvx_acl_api *out = table;
    void *sym;
#define KVX_ACL_RESOLVE(name, required, params)                                               \
    sym = dlsym(handle, #name);                                                                \
    if (!sym && (required)) {                                                                  \
        snprintf(reason, size, ACL_LIBRARY " lacks " #name " (CANN too old?)");               \
        return 0;                                                                              \
    }                                                                                          \
    out->name = (kvx_##name##_fn)sym;
    KVX_ACL_FUNCTIONS(KVX_ACL_RESOLVE, kvx_acl_batch_attr, kvx_acl_ptr_attributes)
#undef KVX_ACL_RESOLVE
    return 1;
}

static kvx_runtime runtime = KVX_RUNTIME_INIT(
    "ascend", ACL_LIBRARY,
    "install the CANN toolkit and source its set_env.sh, or import torch_npu first", resolve, &api);

const kvx_acl_api *kvx_acl_load(void) { return kvx_runtime_load(&runtime); }

int32_t kvx_acl_fail(const char *function, kvx_acl_error code, const char *doing)
{
    return kvx_fail(KVX_ERR_DEVICE, "%s failed with AscendCL error %d while %s", function,
                    (int)code, doing);
}
