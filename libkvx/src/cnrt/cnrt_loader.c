/*
 * cnrt_loader.c - resolves the CNRT functions of cnrt_api.h from libcnrt.so, found at run time by
 * core/runtime_loader.c (an already-loaded copy first).
 */
#include <dlfcn.h>
#include <stdio.h>

#include "../core/runtime_loader.h"

#include "cnrt_backend.h"

#define CNRT_LIBRARY "libcnrt.so"

static kvx_cnrt_api api;

/* Resolves every function; fails on a missing required one, leaves optional ones NULL. */
static int resolve(void *handle, void *table, char *reason, size_t size)
{
    kvx_cnrt_api *out = table;
    void *sym;
#define KVX_CNRT_RESOLVE(name, required, params)                                               \
    sym = dlsym(handle, #name);                                                                \
    if (!sym && (required)) {                                                                  \
        snprintf(reason, size, CNRT_LIBRARY " lacks " #name " (Neuware too old?)");               \
        return 0;                                                                              \
    }                                                                                          \
    out->name = (kvx_##name##_fn)sym;
    KVX_CNRT_FUNCTIONS(KVX_CNRT_RESOLVE)
#undef KVX_CNRT_RESOLVE
    /* Prefer the newest 1D async copy; all three share one signature (cnrt_api.h). */
    out->memcpy_async = out->cnrtMemcpyAsync_V3;
    out->memcpy_async_name = "cnrtMemcpyAsync_V3";
    if (!out->memcpy_async) {
        out->memcpy_async = out->cnrtMemcpyAsync_V2;
        out->memcpy_async_name = "cnrtMemcpyAsync_V2";
    }
    if (!out->memcpy_async) {
        out->memcpy_async = out->cnrtMemcpyAsync;
        out->memcpy_async_name = "cnrtMemcpyAsync";
    }
    if (!out->memcpy_async) {
        snprintf(reason, size, CNRT_LIBRARY " lacks cnrtMemcpyAsync_V3, _V2 and cnrtMemcpyAsync");
        return 0;
    }
    return 1;
}

static kvx_runtime runtime = KVX_RUNTIME_INIT(
    "cnrt", CNRT_LIBRARY,
    "install Cambricon Neuware (and add its lib64 to LD_LIBRARY_PATH), or import torch_mlu first", resolve, &api);

const kvx_cnrt_api *kvx_cnrt_load(void) { return kvx_runtime_load(&runtime); }

int32_t kvx_cnrt_fail(const char *function, kvx_cnrt_ret code, const char *doing)
{
    return kvx_fail(KVX_ERR_DEVICE, "%s failed with CNRT error %u while %s", function,
                    (unsigned)code, doing);
}
