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
    /* codec_rotated.cu: x row `value`, token `limit` holds a value not finite or above the
     * rotated method's limit for head_size `index` (or its scale rounds up past it); skipped */
    KVX_GPU_ROTATED_RANGE = 10,
};

/* The record's life: FREE -> WRITING (one kernel thread claimed it) -> PUBLISHED (its fields are
 * complete and visible) -> FREE (kvx_synchronize read it). Only the claiming thread moves it out
 * of WRITING and only kvx_synchronize out of PUBLISHED, so no field changes while a reader sees
 * PUBLISHED, and no reader takes fields it has not seen published. */
enum kvx_gpu_record_state {
    KVX_GPU_RECORD_FREE = 0,
    KVX_GPU_RECORD_WRITING = 1,
    KVX_GPU_RECORD_PUBLISHED = 2,
};

struct kvx_gpu_deferred_error {
    unsigned int state; /* kvx_gpu_record_state; first, so it can be read and cleared alone */
    int kind;
    unsigned long long index;
    long long value;
    long long limit;
};

#if defined(__CUDACC__) || defined(__HIPCC__) || defined(KVX_GPU_HOST)
/* Records the first error since the last kvx_synchronize; later ones are dropped (the first is
 * what a CPU backend's up-front check would have reported). */
__device__ inline void kvx_gpu_record_error(kvx_gpu_deferred_error *record, int kind,
                                            long long index, long long value, long long limit)
{
    if (atomicCAS(&record->state, (unsigned)KVX_GPU_RECORD_FREE,
                  (unsigned)KVX_GPU_RECORD_WRITING) != KVX_GPU_RECORD_FREE)
        return;
    record->index = (unsigned long long)index;
    record->value = value;
    record->limit = limit;
    record->kind = kind;
    /* The host reads the record with copies, not kernel loads: the fields must be visible
     * system-wide before the state says they are complete. */
    __threadfence_system();
    atomicExch(&record->state, (unsigned)KVX_GPU_RECORD_PUBLISHED);
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

/* Finds the deferred-error record of `device`, which must be current: set up on the device's
 * first use, after checking that this build has a kernel image for it. KVX_OK, or the status
 * kvx_fail() reported (KVX_ERR_NOT_AVAILABLE: no image; KVX_ERR_INVALID_ARGUMENT: bad index;
 * KVX_ERR_DEVICE: a runtime failure). Safe while the caller's stream captures a graph. */
int32_t kvx_gpu_error_record(int device, kvx_gpu_deferred_error **record);

static inline gpuStream_t kvx_gpu_stream(const kvx_stream *stream)
{
    return stream ? (gpuStream_t)stream->handle : (gpuStream_t)0;
}

static inline int kvx_gpu_device_index(const kvx_stream *stream)
{
    return stream ? stream->device_index : 0;
}

#endif /* KVX_GPU_DEVICE_H */
