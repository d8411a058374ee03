/*
 * runtime.cpp - the runtime calls of host execution (gpu_host_runtime.h): one device whose
 * memory is the process's heap, and calls that complete before they return, so a stream or an
 * event has always finished. Allocations go through malloc, so AddressSanitizer sees every
 * device buffer's bounds, and through memcpy, so it sees overlapping copies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_host_runtime.h"

thread_local kvx_host_coords kvx_host_now;

namespace {

constexpr int kDevices = 1;
constexpr size_t kAlignment = 256; /* what cudaMalloc guarantees */

thread_local gpuError_t last_error = gpuSuccess;
/* The message of the last error set with one, kept after gpuGetLastError() clears the error, so
 * that the usual gpuGetErrorString(gpuGetLastError()) still finds it. */
thread_local gpuError_t described_error = gpuSuccess;
thread_local char last_message[256];
thread_local int current_device = 0;

struct event_record {
    unsigned magic; /* a destroyed or foreign handle fails instead of being trusted */
};
constexpr unsigned kEventMagic = 0x6b767845u;

gpuError_t fail(gpuError_t error)
{
    last_error = error;
    described_error = gpuSuccess;
    return error;
}

} // namespace

void kvx_host_set_error(gpuError_t error, const char *message)
{
    last_error = described_error = error;
    snprintf(last_message, sizeof last_message, "%s", message);
}

const char *gpuGetErrorString(gpuError_t error)
{
    if (error == described_error)
        return last_message;
    switch (error) {
    case gpuSuccess: return "no error";
    case gpuErrorInvalidValue: return "invalid argument";
    case gpuErrorMemoryAllocation: return "out of memory";
    case gpuErrorInvalidConfiguration: return "invalid configuration argument";
    case gpuErrorInvalidDevice: return "invalid device ordinal";
    case gpuErrorInvalidResourceHandle: return "invalid resource handle";
    case gpuErrorNotReady: return "device not ready";
    case gpuErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
    }
}

gpuError_t gpuGetLastError(void)
{
    gpuError_t error = last_error;
    last_error = gpuSuccess;
    return error;
}

gpuError_t gpuGetDeviceCount(int *count)
{
    *count = kDevices;
    return gpuSuccess;
}

gpuError_t gpuGetDevice(int *device)
{
    *device = current_device;
    return gpuSuccess;
}

gpuError_t gpuSetDevice(int device)
{
    if (device < 0 || device >= kDevices)
        return fail(gpuErrorInvalidDevice);
    current_device = device;
    return gpuSuccess;
}

gpuError_t gpuGetDeviceProperties(gpuDeviceProp_t *properties, int device)
{
    if (device < 0 || device >= kDevices)
        return fail(gpuErrorInvalidDevice);
    snprintf(properties->name, sizeof properties->name, "host execution");
    properties->major = properties->minor = 0;
    return gpuSuccess;
}

/* KVX_GPU_HOST_NO_IMAGE=1 plays a device this build has no code for, so that tests can check
 * the backend says so instead of launching. */
gpuError_t gpuFuncGetAttributes(gpuFuncAttributes_t *attributes, const void *kernel)
{
    const char *no_image = getenv("KVX_GPU_HOST_NO_IMAGE");
    if (no_image && strcmp(no_image, "1") == 0)
        return fail(gpuErrorNoKernelImage);
    if (!kernel)
        return fail(gpuErrorInvalidDeviceFunction);
    attributes->maxThreadsPerBlock = 1024; /* every kernel is "built" for the one device */
    return gpuSuccess;
}

gpuError_t gpuThreadExchangeStreamCaptureMode(gpuStreamCaptureMode_t *mode)
{
    (void)mode; /* nothing is ever captured */
    return gpuSuccess;
}

gpuError_t gpuFree(void *ptr)
{
    free(ptr);
    return gpuSuccess;
}

gpuError_t gpuMalloc(void **ptr, size_t bytes)
{
    *ptr = aligned_alloc(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    return *ptr ? gpuSuccess : fail(gpuErrorMemoryAllocation);
}

gpuError_t gpuMemsetAsync(void *ptr, int value, size_t bytes, gpuStream_t stream)
{
    (void)stream;
    memset(ptr, value, bytes);
    return gpuSuccess;
}

gpuError_t gpuMemcpyAsync(void *dst, const void *src, size_t bytes, int kind, gpuStream_t stream)
{
    (void)stream;
    if (kind != gpuMemcpyDeviceToHost && kind != gpuMemcpyDefault)
        return fail(gpuErrorInvalidValue);
    memcpy(dst, src, bytes);
    return gpuSuccess;
}

gpuError_t gpuStreamSynchronize(gpuStream_t stream)
{
    (void)stream;
    return gpuSuccess;
}

/* Streams the backend creates for itself: real allocations, so a leak or a double destroy shows
 * under AddressSanitizer. */
gpuError_t gpuStreamCreateNonBlocking(gpuStream_t *stream)
{
    *stream = static_cast<gpuStream_t>(malloc(1));
    return *stream ? gpuSuccess : fail(gpuErrorMemoryAllocation);
}

gpuError_t gpuStreamDestroy(gpuStream_t stream)
{
    free(stream);
    return gpuSuccess;
}

gpuError_t gpuHostAllocPortable(void **ptr, size_t bytes) { return gpuMalloc(ptr, bytes); }

gpuError_t gpuFreeHost(void *ptr)
{
    free(ptr);
    return gpuSuccess;
}

gpuError_t gpuEventCreateUntimed(gpuEvent_t *event)
{
    event_record *record = static_cast<event_record *>(malloc(sizeof(event_record)));
    if (!record)
        return fail(gpuErrorMemoryAllocation);
    record->magic = kEventMagic;
    *event = reinterpret_cast<gpuEvent_t>(record);
    return gpuSuccess;
}

static gpuError_t check_event(gpuEvent_t event)
{
    const event_record *record = reinterpret_cast<const event_record *>(event);
    return record && record->magic == kEventMagic ? gpuSuccess
                                                  : fail(gpuErrorInvalidResourceHandle);
}

gpuError_t gpuEventRecord(gpuEvent_t event, gpuStream_t stream)
{
    (void)stream;
    return check_event(event);
}

gpuError_t gpuEventQuery(gpuEvent_t event) { return check_event(event); }

gpuError_t gpuEventDestroy(gpuEvent_t event)
{
    gpuError_t error = check_event(event);
    if (error == gpuSuccess) {
        reinterpret_cast<event_record *>(event)->magic = 0;
        free(event);
    }
    return error;
}
