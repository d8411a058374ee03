/*
 * gpu_host_runtime.h - host execution: the GPU backend's .cu files compiled by the host's C++
 * compiler and run on the CPU, so that the test suite executes every kernel (under
 * AddressSanitizer, against the CPU backend) on machines without a GPU.
 *
 * It supplies the part of CUDA's kernel language the kernels use (thread coordinates, shared
 * memory, __syncthreads, atomics, vector types) and the runtime calls gpu_runtime.h names.
 * grid_runner.cpp runs a launch: blocks one after another, the threads of a block as fibers
 * that switch at __syncthreads, in an order that changes from launch to launch and from one
 * barrier to the next (a missing barrier then shows as a wrong result). runtime.cpp is the
 * runtime: device memory is host memory, every call completes before it returns, one device.
 *
 * It is a test vehicle, not a backend for users: its speed means nothing.
 */
#ifndef KVX_GPU_HOST_RUNTIME_H
#define KVX_GPU_HOST_RUNTIME_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* gpuDeviceArch */

#include <tuple>

/* ---------------------------------------------------------------- the kernel language */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* The blocks of a launch run one at a time on the launching OS thread, and a block's threads are
 * fibers of that OS thread: a thread_local static is exactly one block's shared memory. */
#define __shared__ static thread_local

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};
/* With the GPU's alignment, so that UBSan reports a misaligned vector access as the GPU
 * would fault on it. */
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};

/* The coordinates of the GPU thread running now (set by the grid runner at every switch). */
struct kvx_host_coords {
    uint3 thread_idx, block_idx;
    dim3 block_dim, grid_dim;
};
extern thread_local kvx_host_coords kvx_host_now;
#define threadIdx (kvx_host_now.thread_idx)
#define blockIdx (kvx_host_now.block_idx)
#define blockDim (kvx_host_now.block_dim)
#define gridDim (kvx_host_now.grid_dim)

void kvx_host_syncthreads(void);
#define __syncthreads() kvx_host_syncthreads()
/* The launch's dynamic shared memory, for this block (filled with a pattern at block start, as
 * a GPU's holds leftovers). */
void *kvx_host_dynamic_shared(void);

/* Atomics: real ones, since launches from different OS threads (streams) run at once and meet
 * in device-wide memory such as the deferred-error record. */
template <typename T> inline T atomicAdd(T *address, T value)
{
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

template <typename T> inline T atomicCAS(T *address, T expected, T desired)
{
    __atomic_compare_exchange_n(address, &expected, desired, false, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    return expected; /* the old value, whether or not it was swapped */
}

template <typename T> inline T atomicExch(T *address, T value)
{
    return __atomic_exchange_n(address, value, __ATOMIC_SEQ_CST);
}

template <typename T> inline T atomicMax(T *address, T value)
{
    T old = __atomic_load_n(address, __ATOMIC_RELAXED);
    while (old < value && !__atomic_compare_exchange_n(address, &old, value, true, __ATOMIC_RELAXED,
                                                       __ATOMIC_RELAXED)) {
    }
    return old;
}

inline void __threadfence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* ---------------------------------------------------------------- launches */

typedef struct kvx_host_stream *gpuStream_t; /* callers' handles, never dereferenced */

struct kvx_host_launch {
    dim3 grid, block;
    size_t shared_bytes;
};

/* Runs `thread_body(context)` once per thread of the grid; a bad configuration or a block whose
 * threads disagree at a barrier sets the error gpuGetLastError() returns. */
void kvx_host_run_grid(const kvx_host_launch &launch, void (*thread_body)(void *), void *context);

/* What KVX_LAUNCH(kernel, grid, block, shared, stream) makes: called with the kernel's
 * arguments, it copies them once (as a launch does) and runs the grid. */
template <typename... Params> struct kvx_host_launcher {
    kvx_host_launch launch;
    void (*kernel)(Params...);

    template <typename... Args> void operator()(Args... args) const
    {
        struct call {
            void (*kernel)(Params...);
            std::tuple<Params...> params;
        } c{kernel, std::tuple<Params...>(args...)};
        kvx_host_run_grid(
            launch,
            [](void *p) {
                std::apply(static_cast<call *>(p)->kernel, static_cast<call *>(p)->params);
            },
            &c);
    }
};

template <typename... Params>
inline kvx_host_launcher<Params...> kvx_host_configure(
    dim3 grid, dim3 block, size_t shared_bytes, gpuStream_t stream, void (*kernel)(Params...))
{
    (void)stream; /* every call completes before it returns: streams order nothing */
    return kvx_host_launcher<Params...>{{grid, block, shared_bytes}, kernel};
}

/* ---------------------------------------------------------------- the runtime */

typedef int gpuError_t;
enum {
    gpuSuccess = 0,
    gpuErrorInvalidValue = 1,
    gpuErrorMemoryAllocation = 2,
    gpuErrorInvalidConfiguration = 9,
    gpuErrorInvalidDeviceFunction = 98,
    gpuErrorInvalidDevice = 101,
    gpuErrorNoKernelImage = 209,
    gpuErrorInvalidResourceHandle = 400,
    gpuErrorNotReady = 600,
    gpuErrorLaunchFailure = 719,
};
enum { gpuMemcpyDeviceToHost = 2, gpuMemcpyDefault = 4 };
typedef struct kvx_host_event *gpuEvent_t;
typedef int gpuStreamCaptureMode_t;
enum { gpuStreamCaptureModeRelaxed = 2 };
struct gpuFuncAttributes_t {
    int maxThreadsPerBlock;
};
struct gpuDeviceProp_t {
    char name[64];
    int major, minor;
};
/* The device's architecture as -Dgpu_host would name it: there is one */
#define KVX_GPU_TARGETS_OPTION "gpu_host"
#define KVX_GPU_ARCH_PREFIX "host"
#define gpuDeviceArch(prop, out, size) snprintf(out, size, "%d%d", (prop)->major, (prop)->minor)

const char *gpuGetErrorString(gpuError_t error);
gpuError_t gpuGetLastError(void);
gpuError_t gpuGetDeviceCount(int *count);
gpuError_t gpuGetDevice(int *device);
gpuError_t gpuSetDevice(int device);
gpuError_t gpuGetDeviceProperties(gpuDeviceProp_t *properties, int device);
gpuError_t gpuFuncGetAttributes(gpuFuncAttributes_t *attributes, const void *kernel);
gpuError_t gpuThreadExchangeStreamCaptureMode(gpuStreamCaptureMode_t *mode);
gpuError_t gpuMalloc(void **ptr, size_t bytes);
gpuError_t gpuFree(void *ptr);
gpuError_t gpuMemsetAsync(void *ptr, int value, size_t bytes, gpuStream_t stream);
gpuError_t gpuMemcpyAsync(void *dst, const void *src, size_t bytes, int kind, gpuStream_t stream);
gpuError_t gpuStreamSynchronize(gpuStream_t stream);
gpuError_t gpuStreamCreateNonBlocking(gpuStream_t *stream);
gpuError_t gpuStreamDestroy(gpuStream_t stream);
gpuError_t gpuHostAllocPortable(void **ptr, size_t bytes);
gpuError_t gpuFreeHost(void *ptr);
gpuError_t gpuEventCreateUntimed(gpuEvent_t *event);
gpuError_t gpuEventRecord(gpuEvent_t event, gpuStream_t stream);
gpuError_t gpuEventQuery(gpuEvent_t event);
gpuError_t gpuEventDestroy(gpuEvent_t event);

/* For the grid runner: sets this thread's last error, with a message for gpuGetErrorString. */
void kvx_host_set_error(gpuError_t error, const char *message);

#endif /* KVX_GPU_HOST_RUNTIME_H */
