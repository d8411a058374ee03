/* copy.cu - kvx_copy_batch and page-locked host memory on CUDA and HIP.
 *
 * One cudaMemcpyAsync / hipMemcpyAsync per range with the Default kind: under unified
 * addressing the runtime tells device memory, pinned and pageable host memory apart by itself,
 * as LMCache's own copies do. No kernel: the ranges are arbitrary in size and alignment, and the
 * copy engines run them without taking the device's cores. */
#include "gpu_device.h"

extern "C" int32_t kvx_gpu_copy_batch(const kvx_copy_batch_args *args, const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    gpuStream_t handle = kvx_gpu_stream(stream);
    for (int64_t i = 0; i < args->count; i++) {
        const kvx_copy_range *r = &args->ranges[i];
        gpuError_t error = gpuMemcpyAsync(r->dst, r->src, (size_t)r->bytes, gpuMemcpyDefault,
                                          handle);
        if (error != gpuSuccess)
            return kvx_fail(KVX_ERR_DEVICE,
                            "%sMemcpyAsync failed copying srcs[%lld] to dsts[%lld]: %s (%s error "
                            "%d; the ranges before it are queued)",
                            KVX_GPU_NAME, (long long)r->index, (long long)r->index,
                            gpuGetErrorString(error), KVX_GPU_NAME, (int)error);
    }
    return KVX_OK;
}

extern "C" int32_t kvx_gpu_host_alloc(const kvx_host_alloc_args *args, const kvx_stream *device)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(device));
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting device_index");
    gpuError_t error = gpuHostAllocPortable(args->ptr, args->bytes);
    if (error != gpuSuccess)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY,
                        "%s: cannot allocate %zu bytes of page-locked host memory: %s (%s error "
                        "%d)",
                        KVX_GPU_NAME, args->bytes, gpuGetErrorString(error), KVX_GPU_NAME,
                        (int)error);
    return KVX_OK;
}

extern "C" int32_t kvx_gpu_host_free(const kvx_host_free_args *args, const kvx_stream *device)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(device));
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting device_index");
    gpuError_t error = gpuFreeHost(args->ptr);
    return error == gpuSuccess ? KVX_OK : kvx_gpu_fail(error, "freeing page-locked host memory");
}
