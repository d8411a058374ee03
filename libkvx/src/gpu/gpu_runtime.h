/*
 * gpu_runtime.h - the one place where CUDA and HIP differ for libkvx's GPU backend.
 *
 * Kernel sources include this header and use the gpu* names only, so the same .cu files build
 * with nvcc (CUDA) and with hipcc -x hip (HIP: AMD GPUs, Hygon DCUs). KVX_GPU_HIP selects HIP.
 */
#ifndef KVX_GPU_RUNTIME_H
#define KVX_GPU_RUNTIME_H

#if defined(KVX_GPU_HIP)
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
#endif

#endif /* KVX_GPU_RUNTIME_H */
