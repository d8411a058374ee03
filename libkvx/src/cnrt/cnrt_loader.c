/*
 * cnrt_loader.c - resolves the CNRT functions of cnrt_api.h from libcnrt.so, found at run time
 * by runtime/runtime_loader.c (an already-loaded copy first).
 */
#include <stddef.h>
#include <stdio.h>

#include "../runtime/runtime_loader.h"
#include "cnrt_backend.h"

static kvx_cnrt_api api;

static const kvx_runtime_symbol symbols[] = {
#define KVX_CNRT_SYMBOL(name, required, params) {#name, (required), offsetof(kvx_cnrt_api, name)},
    KVX_CNRT_FUNCTIONS(KVX_CNRT_SYMBOL)
#undef KVX_CNRT_SYMBOL
};

/* The newest 1D async copy the runtime has; all three share one signature (cnrt_api.h). */
static int pick_memcpy(void *table, char *reason, size_t size)
{
    kvx_cnrt_api *cnrt = table;
    const struct {
        kvx_cnrtMemcpyAsync_fn fn;
        const char *name;
    } choices[] = {{cnrt->cnrtMemcpyAsync_V3, "cnrtMemcpyAsync_V3"},
                   {cnrt->cnrtMemcpyAsync_V2, "cnrtMemcpyAsync_V2"},
                   {cnrt->cnrtMemcpyAsync, "cnrtMemcpyAsync"}};
    for (size_t i = 0; i < sizeof choices / sizeof choices[0]; i++)
        if (choices[i].fn) {
            cnrt->memcpy_async = choices[i].fn;
            cnrt->memcpy_async_name = choices[i].name;
            return 1;
        }
    snprintf(reason, size, "libcnrt.so lacks cnrtMemcpyAsync_V3, _V2 and cnrtMemcpyAsync");
    return 0;
}

static kvx_runtime runtime = KVX_RUNTIME_INIT(
    "cnrt", "libcnrt.so",
    "install Cambricon Neuware (and add its lib64 to LD_LIBRARY_PATH), or import torch_mlu first",
    "Neuware too old?", symbols, pick_memcpy, &api);

const kvx_cnrt_api *kvx_cnrt_load(void) { return kvx_runtime_load(&runtime); }
