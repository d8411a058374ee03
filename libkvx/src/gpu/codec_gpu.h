/* codec_gpu.h - what the GPU codec's .cu files share: launch sizing and the per-call set-up.
 * C++ only. The arithmetic itself lives in codec_core.h. */
#ifndef KVX_GPU_CODEC_GPU_H
#define KVX_GPU_CODEC_GPU_H

#include "codec_core.h"
#include "gpu_device.h"

/* Grid-stride loops cover any count; this many blocks at most keeps every GPU busy without
 * approaching grid.x limits. Host execution takes a few blocks only, so that its tests run
 * every block through the loops several times (the coders' barriers among them), as a GPU does
 * only with more than 2^20 blocks' worth of work. */
#if defined(KVX_GPU_HOST)
#define KVX_CODEC_MAX_BLOCKS 3LL
#else
#define KVX_CODEC_MAX_BLOCKS (1LL << 20)
#endif

static inline unsigned kvx_codec_blocks(long long items, long long per_block)
{
    long long blocks = (items + per_block - 1) / per_block;
    blocks = blocks < 1 ? 1 : blocks;
    return (unsigned)(blocks < KVX_CODEC_MAX_BLOCKS ? blocks : KVX_CODEC_MAX_BLOCKS);
}

/* Selects the stream's device (the scope restores the previous one) and finds its
 * deferred-error record: KVX_OK, or the failure already reported with kvx_fail(). */
static inline int32_t kvx_codec_begin(const kvx_stream *stream, kvx_gpu_device_scope &scope,
                                      kvx_gpu_deferred_error **record)
{
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    return kvx_gpu_error_record(kvx_gpu_device_index(stream), record);
}

/* After a launch: a bad configuration or a sticky device error surfaces here. */
static inline int32_t kvx_codec_launched(const char *what)
{
    gpuError_t error = gpuGetLastError();
    return error == gpuSuccess ? KVX_OK : kvx_gpu_fail(error, what);
}

#endif /* KVX_GPU_CODEC_GPU_H */
