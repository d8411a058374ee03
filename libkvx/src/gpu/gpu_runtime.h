/*
 * gpu_runtime.h - the one place where CUDA and HIP differ for libkvx's GPU backend.
 *
 * Kernel sources include this header and use the gpu* names only, so the same .cu files build
 * with nvcc (CUDA), with hipcc -x hip (HIP: AMD GPUs, Hygon DCUs; KVX_GPU_HIP) and with the
 * host's C++ compiler (KVX_GPU_HOST: host/gpu_host_runtime.h runs the kernels on the CPU).
 *
 * Kernels are launched as KVX_LAUNCH(kernel, grid, block, shared_bytes, stream)(arguments...),
 * the <<<...>>> syntax where a GPU compiler builds them, a call of the grid runner where not;
 * dynamic shared memory is declared with KVX_DYNAMIC_SHARED(type, name).
 */
#ifndef KVX_GPU_RUNTIME_H
#define KVX_GPU_RUNTIME_H

#include <stdio.h>  /* gpuDeviceArch */
#include <string.h> /* gpuDeviceArch */

#if defined(KVX_GPU_HOST)
#include "host/gpu_host_runtime.h"

#define KVX_GPU_NAME "cuda"
#define KVX_GPU_DEVICE_TYPE KVX_DEVICE_CUDA
#define KVX_LAUNCH(kernel, grid, block, shared, stream)                                        \
    kvx_host_configure(grid, block, shared, stream, kernel)
#define KVX_DYNAMIC_SHARED(type, name) type *name = static_cast<type *>(kvx_host_dynamic_shared())

#elif defined(KVX_GPU_HIP)
#include <hip/hip_runtime.h>

#define KVX_GPU_NAME "hip"
#define KVX_GPU_DEVICE_TYPE KVX_DEVICE_HIP
typedef hipStream_t gpuStream_t;
typedef hipError_t gpuError_t;
#define gpuSuccess hipSuccess
#define gpuGetErrorString hipGetErrorString
#define gpuGetDeviceCount hipGetDeviceCount
#define gpuGetDevice hipGetDevice
#define gpuSetDevice hipSetDevice
#define gpuGetLastError hipGetLastError
#define gpuMalloc hipMalloc
#define gpuMemsetAsync hipMemsetAsync
#define gpuMemcpyAsync hipMemcpyAsync
#define gpuMemcpyDeviceToHost hipMemcpyDeviceToHost
#define gpuMemcpyDefault hipMemcpyDefault
#define gpuStreamSynchronize hipStreamSynchronize
/* page-locked host memory that every device's context sees */
#define gpuHostAllocPortable(ptr, bytes) hipHostMalloc(ptr, bytes, hipHostMallocPortable)
#define gpuFreeHost hipHostFree
/* events that mark a point of a stream, without timing (cheaper to record and query) */
typedef hipEvent_t gpuEvent_t;
#define gpuEventCreateUntimed(event) hipEventCreateWithFlags(event, hipEventDisableTiming)
#define gpuEventRecord hipEventRecord
#define gpuEventQuery hipEventQuery
#define gpuEventDestroy hipEventDestroy
#define gpuErrorNotReady hipErrorNotReady
#define gpuFree hipFree
/* a private stream that never waits on the legacy default stream (nor it on this one) */
#define gpuStreamCreateNonBlocking(stream) hipStreamCreateWithFlags(stream, hipStreamNonBlocking)
#define gpuStreamDestroy hipStreamDestroy
/* the thread's stream-capture mode: relaxed lets set-up calls run while a graph is captured */
typedef hipStreamCaptureMode gpuStreamCaptureMode_t;
#define gpuStreamCaptureModeRelaxed hipStreamCaptureModeRelaxed
#define gpuThreadExchangeStreamCaptureMode hipThreadExchangeStreamCaptureMode
/* whether a kernel of this build has code for the current device */
typedef hipFuncAttributes gpuFuncAttributes_t;
#define gpuFuncGetAttributes hipFuncGetAttributes
#define gpuErrorInvalidDeviceFunction hipErrorInvalidDeviceFunction
#define gpuErrorNoKernelImage hipErrorNoBinaryForGpu
typedef hipDeviceProp_t gpuDeviceProp_t;
#define gpuGetDeviceProperties hipGetDeviceProperties
/* The device's architecture as the build option spells it: "gfx90a" from
 * "gfx90a:sramecc+:xnack-". */
#define KVX_GPU_TARGETS_OPTION "gfx_targets"
#define KVX_GPU_ARCH_PREFIX ""
#define gpuDeviceArch(prop, out, size)                                                         \
    snprintf(out, size, "%.*s", (int)strcspn((prop)->gcnArchName, ":"), (prop)->gcnArchName)

#else
#include <cuda_runtime.h>

#define KVX_GPU_NAME "cuda"
#define KVX_GPU_DEVICE_TYPE KVX_DEVICE_CUDA
typedef cudaStream_t gpuStream_t;
typedef cudaError_t gpuError_t;
#define gpuSuccess cudaSuccess
#define gpuGetErrorString cudaGetErrorString
#define gpuGetDeviceCount cudaGetDeviceCount
#define gpuGetDevice cudaGetDevice
#define gpuSetDevice cudaSetDevice
#define gpuGetLastError cudaGetLastError
#define gpuMalloc cudaMalloc
#define gpuMemsetAsync cudaMemsetAsync
#define gpuMemcpyAsync cudaMemcpyAsync
#define gpuMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define gpuMemcpyDefault cudaMemcpyDefault
#define gpuStreamSynchronize cudaStreamSynchronize
#define gpuHostAllocPortable(ptr, bytes) cudaHostAlloc(ptr, bytes, cudaHostAllocPortable)
#define gpuFreeHost cudaFreeHost
typedef cudaEvent_t gpuEvent_t;
#define gpuEventCreateUntimed(event) cudaEventCreateWithFlags(event, cudaEventDisableTiming)
#define gpuEventRecord cudaEventRecord
#define gpuEventQuery cudaEventQuery
#define gpuEventDestroy cudaEventDestroy
#define gpuErrorNotReady cudaErrorNotReady
#define gpuFree cudaFree
#define gpuStreamCreateNonBlocking(stream) cudaStreamCreateWithFlags(stream, cudaStreamNonBlocking)
#define gpuStreamDestroy cudaStreamDestroy
typedef cudaStreamCaptureMode gpuStreamCaptureMode_t;
#define gpuStreamCaptureModeRelaxed cudaStreamCaptureModeRelaxed
#define gpuThreadExchangeStreamCaptureMode cudaThreadExchangeStreamCaptureMode
typedef cudaFuncAttributes gpuFuncAttributes_t;
#define gpuFuncGetAttributes cudaFuncGetAttributes
#define gpuErrorInvalidDeviceFunction cudaErrorInvalidDeviceFunction
#define gpuErrorNoKernelImage cudaErrorNoKernelImageForDevice
typedef cudaDeviceProp gpuDeviceProp_t;
#define gpuGetDeviceProperties cudaGetDeviceProperties
/* "60" for compute capability 6.0, as -Dsm_targets spells it */
#define KVX_GPU_TARGETS_OPTION "sm_targets"
#define KVX_GPU_ARCH_PREFIX "sm_"
#define gpuDeviceArch(prop, out, size) snprintf(out, size, "%d%d", (prop)->major, (prop)->minor)
#endif

#if !defined(KVX_GPU_HOST)
#define KVX_LAUNCH(kernel, grid, block, shared, stream) kernel<<<grid, block, shared, stream>>>
#define KVX_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

#endif /* KVX_GPU_RUNTIME_H */
