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
                 "libkvx (rebuild with its meson option)", (int)device_type);
        return NULL;
    }
    return backend->available() ? backend : NULL;
}

int32_t kvx_backend_compiled(int32_t device_type)
{
    kvx_clear_error();
    return find_compiled(device_type) != NULL;
}

/* The vtable entry serving `op`, as a flag: whether it is set. The container is built and read
 * in host memory, so only a CPU backend with the codec entries has it. */
static int has_entry(const kvx_backend *b, int32_t op)
{
    switch (op) {
    case KVX_OP_TRANSFER: return b->transfer != NULL;
    case KVX_OP_CODEC_QUANTIZE: return b->codec_quantize != NULL;
    case KVX_OP_CODEC_DEQUANTIZE: return b->codec_dequantize != NULL;
    case KVX_OP_CODEC_CALCULATE_CDF: return b->codec_calculate_cdf != NULL;
    case KVX_OP_CODEC_ENCODE: return b->codec_encode != NULL;
    case KVX_OP_CODEC_DECODE: return b->codec_decode != NULL;
    case KVX_OP_CODEC_CONTAINER:
        return b->device_type == KVX_DEVICE_CPU && b->codec_quantize && b->codec_encode &&
               b->codec_decode && b->codec_dequantize;
    case KVX_OP_ROPE_REROTATE: return b->rope_rerotate != NULL;
    case KVX_OP_ROPE_APPLY: return b->rope_apply != NULL;
    default: return 0;
    }
}

static int is_codec_op(int32_t op)
{
    return op >= KVX_OP_CODEC_QUANTIZE && op <= KVX_OP_CODEC_DECODE;
}

int32_t kvx_backend_supports(int32_t device_type, int32_t op)
{
    kvx_clear_error();
    if (op < KVX_OP_TRANSFER || op > KVX_OP_ROPE_APPLY)
        return FAIL_ARG("op: expected a kvx_op (%d..%d), got %d", (int)KVX_OP_TRANSFER,
                        (int)KVX_OP_ROPE_APPLY, (int)op);
    const kvx_backend *backend = find_compiled(device_type);
    if (!backend)
        return KVX_SUPPORT_NONE;
    if (!has_entry(backend, op))
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
