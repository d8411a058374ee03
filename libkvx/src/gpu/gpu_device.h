/* gpu_device.h - device bookkeeping shared by the GPU backend's .cu files. C++ only. */
#ifndef KVX_GPU_DEVICE_H
#define KVX_GPU_DEVICE_H

#include "gpu_backend.h"
#include "gpu_runtime.h"

/* What a kernel found out of range and skipped; the first one recorded wins. */
enum kvx_gpu_error_kind {
    KVX_GPU_BAD_SLOT = 1,         /* slot_mapping[index] = value >= limit slots */
    KVX_GPU_BAD_POSITION = 2,     /* positions[index] = value outside [0, limit) */
    KVX_GPU_BAD_OLD_POSITION = 3, /* old_positions[index] = value outside [0, limit) */
    /* codec (codec_quantize.cu, codec_coder.cu) */
    KVX_GPU_NON_FINITE = 4, /* x row `value`, token `limit` holds inf or NaN; token skipped */
    KVX_GPU_BAD_SYMBOL = 5, /* symbols[index] (flat) = value > limit; stream skipped */
    KVX_GPU_BAD_CDF = 6, /* cdf table index: entry value >= entry value + 1; skipped */
    KVX_GPU_BAD_LENGTH = 7, /* lengths[index] = value outside [0, limit]; not decoded */
    KVX_GPU_BAD_END_OFFSET = 8, /* end_offsets[index] = value: below the previous or > limit */
    KVX_GPU_STREAM_OVERFLOW = 9, /* stream index needs value bytes, has limit; truncated */
};

struct kvx_gpu_deferred_error {
    unsigned long long index_plus_one; /* 0: no error */
    long long value;
    long long limit;
    int kind;
};

#if defined(__CUDACC__) || defined(__HIPCC__) || defined(KVX_GPU_HOST)
__device__ inline void kvx_gpu_record_error(kvx_gpu_deferred_error *record, int kind,
                                            long long index, long long value, long long limit)
{
    if (atomicCAS(&record->index_plus_one, 0ULL, (unsigned long long)index + 1) == 0ULL) {
        record->value = value;
        record->limit = limit;
        record->kind = kind;
    }
}
#endif

/* Reports a runtime error as KVX_ERR_DEVICE naming the call and the runtime's code. */
int32_t kvx_gpu_fail(gpuError_t error, const char *call);

/* Makes the stream's device current for the lifetime of the object, restoring the previous one. */
class kvx_gpu_device_scope {
  public:
    explicit kvx_gpu_device_scope(int device);
    ~kvx_gpu_device_scope();
    gpuError_t status() const { return status_; }

  private:
    int previous_ = -1;
    gpuError_t status_ = gpuSuccess;
};

/* The device's deferred-error record (allocated on first use), or NULL after kvx_fail(). */
kvx_gpu_deferred_error *kvx_gpu_error_record(int device);

static inline gpuStream_t kvx_gpu_stream(const kvx_stream *stream)
{
    return stream ? (gpuStream_t)stream->handle : (gpuStream_t)0;
}

static inline int kvx_gpu_device_index(const kvx_stream *stream)
{
    return stream ? stream->device_index : 0;
}

#endif /* KVX_GPU_DEVICE_H */
