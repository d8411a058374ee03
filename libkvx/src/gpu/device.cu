/* device.cu - availability, device selection, deferred errors and kvx_synchronize for the GPU
 * backend. */
#include <pthread.h>

#include "gpu_device.h"

#define MAX_DEVICES 64

static pthread_mutex_t records_lock = PTHREAD_MUTEX_INITIALIZER;
static kvx_gpu_deferred_error *records[MAX_DEVICES];

int32_t kvx_gpu_fail(gpuError_t error, const char *call)
{
    return kvx_fail(KVX_ERR_DEVICE, "%s: %s (%s error %d)", call, gpuGetErrorString(error),
                    KVX_GPU_NAME, (int)error);
}

kvx_gpu_device_scope::kvx_gpu_device_scope(int device)
{
    status_ = gpuGetDevice(&previous_);
    if (status_ == gpuSuccess && previous_ != device)
        status_ = gpuSetDevice(device);
    else
        previous_ = -1; /* nothing to restore */
}

kvx_gpu_device_scope::~kvx_gpu_device_scope()
{
    if (previous_ >= 0)
        (void)gpuSetDevice(previous_); /* a destructor cannot report; the call already did */
}

extern "C" int32_t kvx_gpu_available(void)
{
    int count = 0;
    gpuError_t error = gpuGetDeviceCount(&count);
    if (error != gpuSuccess) {
        kvx_fail(KVX_ERR_NOT_AVAILABLE, "%s: no usable device: %s (error %d)", KVX_GPU_NAME,
                 gpuGetErrorString(error), (int)error);
        return 0;
    }
    if (count == 0) {
        kvx_fail(KVX_ERR_NOT_AVAILABLE, "%s: the runtime reports no devices", KVX_GPU_NAME);
        return 0;
    }
    return 1;
}

/* Lets this thread make calls that a stream capture in global or thread-local mode forbids
 * (allocating, creating and synchronising a private stream), so the first kvx call inside a
 * graph capture sets up without breaking it; restores the thread's mode afterwards. */
class relaxed_capture {
  public:
    relaxed_capture() { exchanged_ = gpuThreadExchangeStreamCaptureMode(&mode_) == gpuSuccess; }
    ~relaxed_capture()
    {
        if (exchanged_)
            (void)gpuThreadExchangeStreamCaptureMode(&mode_);
    }

  private:
    gpuStreamCaptureMode_t mode_ = gpuStreamCaptureModeRelaxed;
    bool exchanged_ = false;
};

/* Allocates a zeroed record. It is zeroed on a private non-blocking stream: stream 0 would wait
 * on every blocking stream of the device, and is illegal to touch while a graph is captured. */
static gpuError_t allocate_record(void **memory)
{
    relaxed_capture relaxed;
    gpuStream_t zeroing{};
    gpuError_t error = gpuMalloc(memory, sizeof(kvx_gpu_deferred_error));
    if (error == gpuSuccess)
        error = gpuStreamCreateNonBlocking(&zeroing);
    if (error == gpuSuccess)
        error = gpuMemsetAsync(*memory, 0, sizeof(kvx_gpu_deferred_error), zeroing);
    if (error == gpuSuccess)
        error = gpuStreamSynchronize(zeroing);
    if (zeroing)
        (void)gpuStreamDestroy(zeroing);
    if (error != gpuSuccess && *memory)
        (void)gpuFree(*memory);
    return error;
}

kvx_gpu_deferred_error *kvx_gpu_error_record(int device)
{
    if (device < 0 || device >= MAX_DEVICES) {
        kvx_fail(KVX_ERR_INVALID_ARGUMENT, "stream->device_index: expected 0..%d, got %d",
                 MAX_DEVICES - 1, device);
        return NULL;
    }
    pthread_mutex_lock(&records_lock);
    if (!records[device]) {
        void *memory = NULL;
        gpuError_t error = allocate_record(&memory);
        if (error != gpuSuccess)
            kvx_gpu_fail(error, "allocating the deferred-error record");
        else
            records[device] = (kvx_gpu_deferred_error *)memory;
    }
    kvx_gpu_deferred_error *record = records[device];
    pthread_mutex_unlock(&records_lock);
    return record;
}

/* A codec error a kernel recorded, worded like the CPU backend's up-front checks. */
static int32_t report_codec(const kvx_gpu_deferred_error *seen, unsigned long long index)
{
    switch (seen->kind) {
    case KVX_GPU_NON_FINITE:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "x: expected finite values, got inf or NaN in row %lld token %lld (found "
                        "on the device; that token was skipped)",
                        seen->value, seen->limit);
    case KVX_GPU_BAD_SYMBOL:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "symbols: expected 0..%lld, got %lld at flat index %llu of [layers, "
                        "tokens, channels] (found on the device; that symbol was skipped)",
                        seen->limit, seen->value, index);
    case KVX_GPU_BAD_CDF:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "cdf[%llu]: expected strictly increasing entries, got cdf[%lld] >= "
                        "cdf[%lld] (found on the device; that stream was skipped)",
                        index, seen->value, seen->value + 1);
    case KVX_GPU_BAD_LENGTH:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "lengths[%llu]: expected 0..%lld (stream_capacity), got %lld (found on "
                        "the device; that stream was not decoded)",
                        index, seen->limit, seen->value);
    case KVX_GPU_BAD_END_OFFSET:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "end_offsets[%llu]: expected non-decreasing offsets at most num_bytes "
                        "%lld, got %lld (found on the device; that stream was not decoded)",
                        index, seen->limit, seen->value);
    case KVX_GPU_STREAM_OVERFLOW:
        return kvx_fail(KVX_ERR_BUFFER_TOO_SMALL,
                        "stream_capacity: stream %llu needs %lld bytes, got %lld "
                        "(kvx_codec_stream_bound gives a safe capacity; found on the device)",
                        index, seen->value, seen->limit);
    default: return kvx_fail(KVX_ERR_INTERNAL, "unknown device error kind %d", (int)seen->kind);
    }
}

/* The error a kernel recorded, worded like the CPU backend's up-front checks. */
static int32_t report(const kvx_gpu_deferred_error *seen)
{
    unsigned long long index = seen->index_plus_one - 1;
    switch (seen->index_plus_one ? seen->kind : 0) {
    case 0: return KVX_OK;
    case KVX_GPU_NON_FINITE:
    case KVX_GPU_BAD_SYMBOL:
    case KVX_GPU_BAD_CDF:
    case KVX_GPU_BAD_LENGTH:
    case KVX_GPU_BAD_END_OFFSET:
    case KVX_GPU_STREAM_OVERFLOW: return report_codec(seen, index);
    case KVX_GPU_BAD_SLOT:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "slot_mapping[%llu]: slot %lld is out of range; the paged cache holds "
                        "%lld slots (found on the device; that token was skipped)",
                        index, seen->value, seen->limit);
    default:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "%s[%llu]: position %lld is outside the cache's 0..%lld (found on the "
                        "device; that token was skipped)",
                        seen->kind == KVX_GPU_BAD_OLD_POSITION ? "old_positions" : "positions",
                        index, seen->value, seen->limit - 1);
    }
}

extern "C" int32_t kvx_gpu_synchronize(const kvx_stream *stream)
{
    int device = kvx_gpu_device_index(stream);
    kvx_gpu_device_scope scope(device);
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    gpuStream_t handle = kvx_gpu_stream(stream);
    gpuError_t error = gpuStreamSynchronize(handle);
    if (error != gpuSuccess)
        return kvx_gpu_fail(error, "synchronizing the stream");
    kvx_gpu_deferred_error *record = kvx_gpu_error_record(device);
    if (!record)
        return KVX_ERR_DEVICE;
    kvx_gpu_deferred_error seen;
    error = gpuMemcpyAsync(&seen, record, sizeof seen, gpuMemcpyDeviceToHost, handle);
    if (error == gpuSuccess)
        error = gpuMemsetAsync(record, 0, sizeof seen, handle);
    if (error == gpuSuccess)
        error = gpuStreamSynchronize(handle);
    if (error != gpuSuccess)
        return kvx_gpu_fail(error, "reading the deferred-error record");
    return report(&seen);
}
