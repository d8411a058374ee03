/* plugin.c - the GPU module's entry point (see plugin.h) and its link to libkvx's errors. */
#include <stdio.h>

#include "gpu_backend.h"
#include "plugin.h"

static int32_t (*host_vfail)(int32_t status, const char *fmt, va_list args);

/* The kernels' host code reports through kvx_fail(), as everywhere in libkvx; in the module it
 * hands the message to libkvx, whose thread-local last error kvx_last_error() reads. */
int32_t kvx_fail(int32_t status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    host_vfail(status, fmt, args);
    va_end(args);
    return status;
}

__attribute__((visibility("default"))) const kvx_backend *kvx_gpu_plugin_open(
    const kvx_gpu_plugin_host *host, char *reason, size_t reason_size)
{
    if (host->abi != KVX_GPU_PLUGIN_ABI || host->table_size != sizeof(kvx_backend) ||
        host->version != KVX_GPU_PLUGIN_VERSION) {
        snprintf(reason, reason_size,
                 "it was built with another libkvx (module interface %u, version %06x; libkvx "
                 "has %u, %06x): install both from one build",
                 KVX_GPU_PLUGIN_ABI, (unsigned)KVX_GPU_PLUGIN_VERSION, (unsigned)host->abi,
                 (unsigned)host->version);
        return NULL;
    }
    host_vfail = host->vfail;
    return &kvx_gpu_module_backend;
}
