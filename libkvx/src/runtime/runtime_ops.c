/* runtime_ops.c - the helpers every part of the engine uses to reach a backend's runtime ops
 * and to report a failed vendor call, and page-locked host memory for kvx_host_alloc. */
#include "runtime_ops.h"

const kvx_runtime_ops *kvx_runtime_ops_for(const kvx_stream *stream)
{
    const kvx_backend *backend = kvx_backend_for(stream);
    if (!backend)
        return NULL;
    if (!backend->staging) {
        kvx_fail(KVX_ERR_INTERNAL, "the %s backend has no runtime operations", backend->name);
        return NULL;
    }
    return backend->staging;
}

int32_t kvx_runtime_enter(const kvx_runtime_ops *ops, const kvx_stream *stream,
                          kvx_device_guard *guard)
{
    const char *function = "";
    int64_t code = ops->enter(stream->device_index, guard, &function);
    if (code == 0)
        return KVX_OK;
    return kvx_fail(KVX_ERR_DEVICE, "%s failed with %s error %lld while selecting the %s's %s",
                    function, ops->words.runtime, (long long)code, ops->words.stream,
                    ops->words.device);
}

int32_t kvx_runtime_fail(const kvx_runtime_ops *ops, const char *function, int64_t code,
                         const char *doing)
{
    return kvx_fail(KVX_ERR_DEVICE, "%s failed with %s error %lld while %s", function,
                    ops->words.runtime, (long long)code, doing);
}

int32_t kvx_runtime_host_alloc(const kvx_host_alloc_args *args, const kvx_stream *device)
{
    unsigned features = 0;
    const kvx_runtime_ops *ops = kvx_runtime_ops_for(device);
    if (!ops || !ops->load(&features))
        return KVX_ERR_NOT_AVAILABLE;
    /* The staged codec falls back to malloc there; this entry promises page-locked memory. */
    if (!(features & KVX_RUNTIME_HAS_PINNED))
        return kvx_fail(KVX_ERR_UNSUPPORTED,
                        "host_alloc: the loaded %s runtime lacks %s or its free function, so the "
                        "%s backend cannot allocate page-locked host memory",
                        ops->words.runtime, ops->calls.host_alloc, ops->words.backend);
    kvx_device_guard guard;
    int32_t rc = kvx_runtime_enter(ops, device, &guard);
    if (rc)
        return rc;
    int64_t code = ops->host_alloc(args->bytes, args->ptr);
    ops->leave(&guard);
    if (code != 0)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY,
                        "%s failed with %s error %lld while allocating %zu bytes of page-locked "
                        "host memory",
                        ops->calls.host_alloc, ops->words.runtime, (long long)code, args->bytes);
    return KVX_OK;
}

int32_t kvx_runtime_host_free(const kvx_host_free_args *args, const kvx_stream *device)
{
    unsigned features = 0;
    const kvx_runtime_ops *ops = kvx_runtime_ops_for(device);
    if (!ops || !ops->load(&features))
        return KVX_ERR_NOT_AVAILABLE;
    kvx_device_guard guard;
    int32_t rc = kvx_runtime_enter(ops, device, &guard);
    if (rc)
        return rc;
    ops->host_free(args->ptr);
    ops->leave(&guard);
    return KVX_OK;
}
