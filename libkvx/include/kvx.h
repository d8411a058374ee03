/*
 * kvx.h - libkvx: KV-cache kernels for LLM serving (transfer, codec, RoPE).
 *
 * This one header is the whole public C API. Conventions, in the manner of zstd and liburing:
 *   - every entry point returns an int32_t status: KVX_OK (0) or a negative kvx_status;
 *     kvx_last_error() then holds a message naming the argument, its value and the limit;
 *   - fixed-width types only, enums for constants, no inline functions or bitfields;
 *   - descriptor structs start with `struct_size` (set it to sizeof(the struct)) so they can grow;
 *   - a NULL stream means the CPU backend; device backends never synchronise unless asked.
 *
 * The Python package parses this file with cffi. cffi reads no preprocessor directives, so every
 * `#` line is dropped before parsing (see python/kvx/_native.py) and KVX_API expands to nothing:
 * keep declarations free of macros other than KVX_API.
 */
#ifndef KVX_H
#define KVX_H

#include <stddef.h>
#include <stdint.h>

#if defined(KVX_BUILDING_LIBRARY) && defined(__GNUC__)
#define KVX_API __attribute__((visibility("default")))
#else
#define KVX_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- versions */

#define KVX_VERSION_MAJOR 0
#define KVX_VERSION_MINOR 1
#define KVX_VERSION_PATCH 0
#define KVX_ABI_VERSION 1

/* major * 10000 + minor * 100 + patch of the library actually loaded. */
KVX_API uint32_t kvx_version_number(void);
KVX_API const char *kvx_version_string(void);
/* Bumped whenever a change breaks binary compatibility of this header. */
KVX_API uint32_t kvx_abi_version(void);

/* ---------------------------------------------------------------- errors */

enum kvx_status {
    KVX_OK = 0,
    KVX_ERR_INVALID_ARGUMENT = -1, /* an argument is out of its documented range */
    KVX_ERR_UNSUPPORTED = -2,      /* valid, but this backend cannot do it */
    KVX_ERR_NOT_AVAILABLE = -3,    /* backend not compiled in, or its runtime/device is missing */
    KVX_ERR_DEVICE = -4,           /* the device runtime reported an error */
    KVX_ERR_OUT_OF_MEMORY = -5,
    KVX_ERR_CORRUPT_INPUT = -6,    /* encoded data failed a structural or checksum test */
    KVX_ERR_BUFFER_TOO_SMALL = -7, /* an output buffer cannot hold the result */
    KVX_ERR_INTERNAL = -8          /* a bug in libkvx: please report it */
};

/* Static name of a status ("KVX_ERR_INVALID_ARGUMENT"); "KVX_UNKNOWN_STATUS" for other values. */
KVX_API const char *kvx_status_name(int32_t status);
/* Message of the last failed call on this thread ("" if none). Valid until the next call. */
KVX_API const char *kvx_last_error(void);

/* ---------------------------------------------------------------- devices and streams */

/* Device types; the values of CPU, CUDA and ROCm are DLPack's. */
enum kvx_device_type {
    KVX_DEVICE_CPU = 1,
    KVX_DEVICE_CUDA = 2,
    KVX_DEVICE_HIP = 10,
    KVX_DEVICE_ASCEND = 32,
    KVX_DEVICE_CNRT = 33
};

/* Where work runs and what orders it. `handle` is the native stream (cudaStream_t, hipStream_t,
 * aclrtStream, cnrtQueue_t) or NULL for the backend's default stream. */
typedef struct kvx_stream {
    int32_t device_type;
    int32_t device_index;
    void *handle;
} kvx_stream;

/* 1 if the backend for `device_type` is compiled in and usable now, else 0 (see kvx_last_error). */
KVX_API int32_t kvx_backend_available(int32_t device_type);
/* 1 if the backend for `device_type` was compiled into this library, else 0. */
KVX_API int32_t kvx_backend_compiled(int32_t device_type);

/* Threads used by the CPU backend. 0 restores the default (KVX_NUM_THREADS, else the number of
 * online CPUs). Calls from several threads at once are safe; each caller may fall back to running
 * on its own thread while the pool serves another. */
KVX_API int32_t kvx_set_num_threads(int32_t num_threads);
KVX_API int32_t kvx_get_num_threads(void);

/* ---------------------------------------------------------------- element types */

enum kvx_dtype {
    KVX_DTYPE_FLOAT32 = 1,
    KVX_DTYPE_FLOAT16 = 2,
    KVX_DTYPE_BFLOAT16 = 3,
    KVX_DTYPE_FLOAT8_E4M3 = 4,
    KVX_DTYPE_FLOAT8_E5M2 = 5,
    KVX_DTYPE_UINT8 = 6,
    KVX_DTYPE_INT8 = 7,
    KVX_DTYPE_FLOAT64 = 8,
    KVX_DTYPE_INT32 = 9,
    KVX_DTYPE_INT64 = 10
};

/* Size in bytes of one element of `dtype`, or 0 if `dtype` is not a kvx_dtype. */
KVX_API int32_t kvx_dtype_size(int32_t dtype);

/* ---------------------------------------------------------------- KV transfer */

/*
 * A paged KV cache as a strided view (all strides in elements, not bytes). For layer l, plane kv
 * (0 = K, 1 = V; MLA and fused layouts have one plane), slot s (block b = s / block_size, offset
 * o = s % block_size) and head h, the head vector of `head_size` contiguous elements starts at
 *
 *   bases[num_bases == num_layers ? l : kv * num_layers + l]
 *     + kv*kv_stride + b*block_stride + o*token_stride + h*head_stride
 *
 * so one base per layer with kv_stride covers [2, NB, ...] tensors, and one base per (kv, layer)
 * covers separate K and V tensors. Valid slots are 0 <= s < num_blocks * block_size.
 */
typedef struct kvx_paged_desc {
    uint32_t struct_size;
    int32_t dtype;
    int32_t num_layers;
    int32_t num_kv;    /* planes: 2 (K and V) or 1 */
    int32_t num_heads;
    int32_t head_size; /* elements per head vector */
    int32_t num_bases; /* num_layers or num_kv * num_layers */
    int32_t reserved0;
    void *const *bases;
    int64_t block_size;
    int64_t num_blocks;
    int64_t kv_stride;
    int64_t block_stride;
    int64_t token_stride;
    int64_t head_stride;
} kvx_paged_desc;

/*
 * A dense (contiguous-side) KV buffer, also strided: the head vector of (kv, l, token t, head h)
 * starts at base + kv*kv_stride + l*layer_stride + t*token_stride + h*head_stride (elements).
 * LMCache KV_2LTD [2, L, T, H*D], KV_T2D [T, 2, H*D], KV_2TD [2, T, H*D] and MLA [1, L, T, D] are
 * all instances. The shape fields must equal the paged side's.
 */
typedef struct kvx_dense_desc {
    uint32_t struct_size;
    int32_t dtype;
    int32_t num_layers;
    int32_t num_kv;
    int32_t num_heads;
    int32_t head_size;
    int64_t num_tokens;
    void *base;
    int64_t kv_stride;
    int64_t layer_stride;
    int64_t token_stride;
    int64_t head_stride;
} kvx_dense_desc;

enum kvx_direction {
    KVX_PAGED_TO_DENSE = 0, /* store / offload: gather from the paged cache */
    KVX_DENSE_TO_PAGED = 1  /* load / retrieve: scatter into the paged cache */
};

/*
 * Copy every layer's K/V between `paged` and `dense`, one dense token per entry of
 * `slot_mapping` (int64, dense->num_tokens entries, in the stream's device memory or host memory
 * the device can read). A negative slot skips its token in both directions. Copies are byte-exact.
 * A slot >= num_blocks * block_size is an error: the CPU backend rejects the call before writing
 * anything; asynchronous backends skip such tokens and report when the stream is checked.
 */
KVX_API int32_t kvx_transfer(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                             const int64_t *slot_mapping, int32_t direction,
                             const kvx_stream *stream);

/* KVX-CODEC-DECLARATIONS */

/* KVX-ROPE-DECLARATIONS */

#ifdef __cplusplus
}
#endif

#endif /* KVX_H */
