/*
 * acl_loader.c - resolves the AscendCL functions of acl_api.h from libascendcl.so, found at run
 * time by runtime/runtime_loader.c (an already-loaded copy first).
 */
#include <stddef.h>

#include "../runtime/runtime_loader.h"
#include "ascend_backend.h"

static kvx_acl_api api;

static const kvx_runtime_symbol symbols[] = {
#define KVX_ACL_SYMBOL(name, required, params) {#name, (required), offsetof(kvx_acl_api, name)},
    KVX_ACL_FUNCTIONS(KVX_ACL_SYMBOL, kvx_acl_batch_attr, kvx_acl_ptr_attributes)
#undef KVX_ACL_SYMBOL
};

static kvx_runtime runtime = KVX_RUNTIME_INIT(
    "ascend", "libascendcl.so",
    "install the CANN toolkit and source its set_env.sh, or import torch_npu first",
    "CANN too old?", symbols, NULL, &api);

const kvx_acl_api *kvx_acl_load(void) { return kvx_runtime_load(&runtime); }
