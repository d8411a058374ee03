/* runtime_ops.c - the helpers every part of the engine uses to reach a backend's runtime ops
 * and to report a failed vendor call. */
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
