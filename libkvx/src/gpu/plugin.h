/*
 * plugin.h - how libkvx loads its GPU backend.
 *
 * The kernels and everything that links the vendor runtime (CUDA's static runtime, libamdhip64)
 * live in a separate module, libkvx_cuda.so or libkvx_hip.so, installed next to libkvx. libkvx
 * opens it the first time the GPU backend is asked for (loader.c), so a machine without the
 * runtime, or without a driver, still loads libkvx and its CPU backend, and the GPU backend
 * reports why it is unavailable instead of `import kvx` failing.
 *
 * The module and libkvx come from one build: the module refuses a host of another version or
 * table layout, since the two share internal structs (core/backend.h).
 */
#ifndef KVX_GPU_PLUGIN_H
#define KVX_GPU_PLUGIN_H

#include <stdarg.h>

#include "../core/kvx_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Raised whenever this struct or the meaning of a kvx_backend slot changes. */
#define KVX_GPU_PLUGIN_ABI 1
#define KVX_GPU_PLUGIN_VERSION                                                                   \
    ((uint32_t)KVX_VERSION_MAJOR << 16 | (uint32_t)KVX_VERSION_MINOR << 8 | KVX_VERSION_PATCH)

/* What libkvx lends the module: its error reporting (the thread-local last error lives in
 * libkvx, where kvx_last_error() reads it). */
typedef struct kvx_gpu_plugin_host {
    uint32_t abi;         /* KVX_GPU_PLUGIN_ABI */
    uint32_t table_size;  /* sizeof(kvx_backend) */
    uint32_t version;     /* KVX_GPU_PLUGIN_VERSION */
    int32_t (*vfail)(int32_t status, const char *fmt, va_list args);
} kvx_gpu_plugin_host;

/* The module's one exported function: its backend table, or NULL with `reason` filled when the
 * host does not match. */
typedef const kvx_backend *(*kvx_gpu_plugin_open_fn)(const kvx_gpu_plugin_host *host, char *reason,
                                                     size_t reason_size);
#define KVX_GPU_PLUGIN_OPEN "kvx_gpu_plugin_open"

#ifdef __cplusplus
}
#endif

#endif /* KVX_GPU_PLUGIN_H */
