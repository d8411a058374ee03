/* backends.c - the registry of compiled-in backends and stream -> backend dispatch. */
#include <stddef.h>

#include "kvx_internal.h"

/* Device backends add themselves here behind their meson option's define. */
static const kvx_backend *const compiled_backends[] = {
    &kvx_cpu_backend,
#if defined(KVX_WITH_CUDA) || defined(KVX_WITH_HIP)
    &kvx_gpu_backend,
#endif
/* runtime-loaded backends, each behind #ifdef KVX_WITH_<NAME> */
#ifdef KVX_WITH_ASCEND
    &kvx_ascend_backend,
#endif
#ifdef KVX_WITH_CNRT
    &kvx_cnrt_backend,
#endif
};

static const kvx_backend *find_compiled(int32_t device_type)
{
    for (size_t i = 0; i < sizeof compiled_backends / sizeof compiled_backends[0]; i++)
        if (compiled_backends[i]->device_type == device_type)
            return compiled_backends[i];
    return NULL;
}

const kvx_backend *kvx_backend_for(const kvx_stream *stream)
{
    int32_t device_type = stream ? stream->device_type : KVX_DEVICE_CPU;
    const kvx_backend *backend = find_compiled(device_type);
    if (!backend) {
        kvx_fail(KVX_ERR_NOT_AVAILABLE,
                 "stream->device_type: no backend for device type %d is compiled into this "
                 "libkvx (rebuild with its meson option)",
                 (int)device_type);
        return NULL;
    }
    return backend->available() ? backend : NULL;
}

int32_t kvx_backend_compiled(int32_t device_type)
{
    kvx_clear_error();
    return find_compiled(device_type) != NULL;
}

int kvx_backend_runs_container(const kvx_backend *b)
{
    return b->device_type == KVX_DEVICE_CPU && b->codec_quantize && b->codec_encode &&
           b->codec_decode && b->codec_dequantize;
}

/* 1 if backend b has the slot that runs `op` (KVX_OP_SLOTS), 0 if not, -1 for no kvx_op. */
static int has_entry(const kvx_backend *b, int32_t op)
{
#define SLOT_SET(kvx_op, slot)                                                                 \
    case kvx_op: return b->slot != NULL;
    switch (op) {
        KVX_OP_SLOTS(SLOT_SET)
    case KVX_OP_CODEC_CONTAINER: return kvx_backend_runs_container(b);
    default: return -1;
    }
#undef SLOT_SET
}

static int is_codec_op(int32_t op)
{
    return (op >= KVX_OP_CODEC_QUANTIZE && op <= KVX_OP_CODEC_DECODE) ||
           op == KVX_OP_CODEC_QUANTIZE_ROTATED || op == KVX_OP_CODEC_DEQUANTIZE_ROTATED;
}

int32_t kvx_backend_supports(int32_t device_type, int32_t op)
{
    kvx_clear_error();
    if (has_entry(&kvx_cpu_backend, op) < 0)
        return FAIL_ARG("op: expected a kvx_op, got %d", (int)op);
    const kvx_backend *backend = find_compiled(device_type);
    if (!backend || !has_entry(backend, op))
        return KVX_SUPPORT_NONE;
    return backend->staging && is_codec_op(op) ? KVX_SUPPORT_HOST_STAGED : KVX_SUPPORT_NATIVE;
}

int32_t kvx_backend_available(int32_t device_type)
{
    kvx_clear_error();
    kvx_stream stream = {device_type, 0, NULL};
    return kvx_backend_for(&stream) != NULL;
}

int32_t kvx_synchronize(const kvx_stream *stream)
{
    kvx_clear_error();
    const kvx_backend *backend = kvx_backend_for(stream);
    if (!backend)
        return KVX_ERR_NOT_AVAILABLE;
    return backend->synchronize ? backend->synchronize(stream) : KVX_OK;
}
