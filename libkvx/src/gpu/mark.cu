/* mark.cu - stream marks on CUDA and HIP: one event without timing per mark, created with the
 * stream's device current (an event may be recorded only on streams of its own device) and
 * recorded on the stream. */
#include "gpu_device.h"

extern "C" int32_t kvx_gpu_mark_record(const kvx_mark_args *args, const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    gpuEvent_t event;
    gpuError_t error = gpuEventCreateUntimed(&event);
    if (error != gpuSuccess)
        return kvx_gpu_fail(error, "creating the mark's event");
    if ((error = gpuEventRecord(event, kvx_gpu_stream(stream))) != gpuSuccess) {
        (void)gpuEventDestroy(event); /* never recorded: nothing waits on it */
        return kvx_gpu_fail(error, "recording the mark's event on the stream");
    }
    *args->created = (void *)event;
    return KVX_OK;
}

extern "C" int32_t kvx_gpu_mark_passed(const kvx_mark_args *args, const kvx_stream *stream)
{
    (void)stream; /* an event is queried from any device */
    gpuError_t error = gpuEventQuery((gpuEvent_t)args->event);
    if (error == gpuSuccess)
        return 1;
    if (error != gpuErrorNotReady)
        return kvx_gpu_fail(error, "asking whether a mark passed");
    /* "not ready" is an answer, not a failure: clear it, or the next call's launch check would
     * report it as its own error */
    (void)gpuGetLastError();
    return 0;
}

/* The runtime releases an event the stream has not reached yet once it has. */
extern "C" int32_t kvx_gpu_mark_release(const kvx_mark_args *args, const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    gpuError_t error = gpuEventDestroy((gpuEvent_t)args->event);
    return error == gpuSuccess ? KVX_OK : kvx_gpu_fail(error, "destroying a mark's event");
}
