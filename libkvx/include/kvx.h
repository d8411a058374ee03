/*
 * kvx.h - libkvx: KV-cache kernels for LLM serving (transfer, codec, RoPE).
 *
 * This one header is the whole public C API. Conventions, in the manner of zstd and liburing:
 *   - every entry point returns an int32_t status: KVX_OK (0) or a negative kvx_status;
 *     kvx_last_error() then holds a message naming the argument, its value and the limit;
 *   - fixed-width types only, enums for constants, no inline functions or bitfields;
 *   - descriptor structs start with `struct_size` (set it to sizeof(the struct)) so they can grow:
 *     the library reads a smaller struct_size (a program built against an older kvx.h) as far as
 *     it goes, taking the fields past it as zero, and refuses a larger one (a newer kvx.h than
 *     the library); output structs get only the bytes their struct_size declares. Fields named
 *     reserved* must be 0;
 *   - a NULL stream means the CPU backend; device backends never synchronise unless asked;
 *   - every array starts at an address that is a multiple of its element size (numpy and torch
 *     allocate them so): calls refuse others on every backend, as GPUs fault on misaligned loads.
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

/* The operations, for kvx_backend_supports. */
enum kvx_op {
    KVX_OP_TRANSFER = 1,
    KVX_OP_CODEC_QUANTIZE = 2,
    KVX_OP_CODEC_DEQUANTIZE = 3,
    KVX_OP_CODEC_CALCULATE_CDF = 4,
    KVX_OP_CODEC_ENCODE = 5,
    KVX_OP_CODEC_DECODE = 6,    /* kvx_codec_decode and kvx_codec_decode_prefsum */
    KVX_OP_CODEC_CONTAINER = 7, /* kvx_codec_compress and kvx_codec_decompress */
    KVX_OP_ROPE_REROTATE = 8,
    KVX_OP_ROPE_APPLY = 9,
    KVX_OP_COPY = 10, /* kvx_copy_batch */
    KVX_OP_CODEC_QUANTIZE_ROTATED = 11,
    KVX_OP_CODEC_DEQUANTIZE_ROTATED = 12
};

/* How a backend runs an operation. */
enum kvx_support {
    KVX_SUPPORT_NONE = 0,       /* KVX_ERR_UNSUPPORTED (or the backend is not compiled in) */
    KVX_SUPPORT_NATIVE = 1,     /* kernels on the stream's device */
    KVX_SUPPORT_HOST_STAGED = 2 /* device data copied to host memory, run by the CPU kernels and
                                   copied back; the call synchronises the stream */
};

/* How the backend compiled in for `device_type` runs `op` (a kvx_op): a kvx_support value, or
 * KVX_ERR_INVALID_ARGUMENT when `op` is not a kvx_op. A fact of this build, answered without
 * loading any runtime: whether the device can be used now is kvx_backend_available's answer. */
KVX_API int32_t kvx_backend_supports(int32_t device_type, int32_t op);

/* Threads used by the CPU backend. 0 restores the default (KVX_NUM_THREADS, an integer 1..256,
 * more meaning 256, another value ignored with a warning on stderr; else the number of CPUs the
 * process may run on). Calls from several threads at once are safe; each caller may fall back to
 * running on its own thread while the pool serves another. */
KVX_API int32_t kvx_set_num_threads(int32_t num_threads);
KVX_API int32_t kvx_get_num_threads(void);
/* The instruction-set variants the CPU kernels run, chosen once per process from the CPU and
 * KVX_CPU_ISA, e.g. "rope=avx512bf16 range_coder=avx2 copy=stream-avx2 crc32=vpclmul". A static
 * string. */
KVX_API const char *kvx_cpu_kernels(void);

/* ---------------------------------------------------------------- element types */

/* The fp8 formats are the four torch and DLPack name: "fn" = finite (no infinities, one NaN
 * pattern; OCP, NVIDIA Hopper and later), "fnuz" = finite with unsigned zero (its NaN is 0x80;
 * AMD MI300). Transfer copies their bytes; the codec and RoPE do not take them. */
enum kvx_dtype {
    KVX_DTYPE_FLOAT32 = 1,
    KVX_DTYPE_FLOAT16 = 2,
    KVX_DTYPE_BFLOAT16 = 3,
    KVX_DTYPE_FLOAT8_E4M3FN = 4,  /* torch.float8_e4m3fn */
    KVX_DTYPE_FLOAT8_E4M3 = 4,    /* the name KVX_DTYPE_FLOAT8_E4M3FN had before the split */
    KVX_DTYPE_FLOAT8_E5M2 = 5,    /* torch.float8_e5m2 */
    KVX_DTYPE_UINT8 = 6,
    KVX_DTYPE_INT8 = 7,
    KVX_DTYPE_FLOAT64 = 8,
    KVX_DTYPE_INT32 = 9,
    KVX_DTYPE_INT64 = 10,
    KVX_DTYPE_FLOAT8_E4M3FNUZ = 11, /* torch.float8_e4m3fnuz */
    KVX_DTYPE_FLOAT8_E5M2FNUZ = 12  /* torch.float8_e5m2fnuz */
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
    int32_t reserved0; /* set to 0 */
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
 * Each slot is read once and that value checked and used, so a slot_mapping that another thread
 * rewrites during the call can change what is copied (or fail the call) but never makes it touch
 * memory outside the cache and the dense buffer.
 */
KVX_API int32_t kvx_transfer(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                             const int64_t *slot_mapping, int32_t direction,
                             const kvx_stream *stream);

/* Waits until the work enqueued on `stream` is done and reports what asynchronous backends could
 * only find while running it (e.g. an out-of-range slot: KVX_ERR_INVALID_ARGUMENT naming the
 * token). The CPU backend works synchronously, so this returns KVX_OK at once. Errors are
 * tracked per device: a check reports the first error any stream of the device recorded since
 * the last check. */
KVX_API int32_t kvx_synchronize(const kvx_stream *stream);

/* ---------------------------------------------------------------- stream marks */

/* A point of a stream: it has passed once the device has run everything enqueued on the stream
 * before the mark was recorded. Opaque; owned by the caller until kvx_mark_release. */
typedef struct kvx_mark kvx_mark;

/*
 * Records a mark at the current end of `stream` into *mark (written on success only), without
 * waiting for anything:
 *   - NULL or a CPU stream: the CPU backend's work is done when each call returns, so the mark
 *     has passed at once;
 *   - CUDA/HIP: an event created without timing on the stream's device and recorded on it;
 *   - Ascend, CNRT: an event (aclrtCreateEvent) or notifier (cnrtNotifierCreate) of the stream's
 *     device, recorded (aclrtRecordEvent, cnrtPlaceNotifier) on it.
 * KVX_ERR_UNSUPPORTED where the backend's runtime has no events (a CNRT without notifiers),
 * KVX_ERR_DEVICE naming the vendor call that failed.
 */
KVX_API int32_t kvx_mark_record(const kvx_stream *stream, kvx_mark **mark);

/* 1 when the stream has passed `mark`, 0 when not yet, or a negative kvx_status (the runtime's
 * query failed: KVX_ERR_DEVICE naming it). Never waits; any thread may ask. Once 1, always 1. */
KVX_API int32_t kvx_mark_passed(const kvx_mark *mark);

/* Frees `mark`, passed or not (an event the stream has not reached yet is kept until it has);
 * NULL does nothing. The mark must not be used afterwards, nor released while another thread
 * asks kvx_mark_passed about it. */
KVX_API int32_t kvx_mark_release(kvx_mark *mark);

/* ---------------------------------------------------------------- raw copies, host memory */

/*
 * Copies `count` byte ranges, sizes[i] bytes from srcs[i] to dsts[i], ordered on `stream` like
 * every other operation: with a NULL (CPU) stream the copies are done when the call returns (on
 * the CPU backend's threads); on a device stream they are queued, and done when the stream gets
 * there. memcpy semantics: no destination range may overlap another destination range or any
 * source range (sources may overlap one another), so the ranges may be copied in any order and
 * at once. The call checks this on the host, by address, before copying anything, and fails
 * naming both ranges. A range of 0 bytes is skipped and its pointers are not looked at (NULL is
 * fine there). Each entry of the three arrays is read once.
 *
 * On a device stream each end of a range is memory of the stream's device or host memory
 * (page-locked, from kvx_host_alloc, for copies that do not block the caller):
 *   - CUDA/HIP: whatever cudaMemcpyAsync / hipMemcpyAsync with the Default kind takes (unified
 *     addressing), host-to-host included;
 *   - Ascend, CNRT: host <-> device and device <-> device of the stream's device. Their runtimes
 *     have no asynchronous host-to-host copy: a range with both ends in host memory is
 *     KVX_ERR_UNSUPPORTED (copy those with a NULL stream), and memory of another device is
 *     KVX_ERR_INVALID_ARGUMENT, both before anything is queued.
 */
KVX_API int32_t kvx_copy_batch(const void *const *srcs, void *const *dsts, const int64_t *sizes,
                               int64_t count, const kvx_stream *stream);

/*
 * Page-aligned host memory of `bytes` (>= 1) bytes, not initialised, for work on devices of
 * `device_type`: page-locked through that device's runtime (cudaHostAlloc with
 * cudaHostAllocPortable, hipHostMalloc with hipHostMallocPortable, aclrtMallocHost,
 * cnrtHostMalloc), so that copies between it and the device run as DMA without blocking the
 * caller; plain page-aligned memory for KVX_DEVICE_CPU. `device_index` is the device whose
 * runtime context allocates it (made current for the call; 0 for the CPU). *ptr is written on
 * success only. KVX_ERR_NOT_AVAILABLE when the backend cannot run (runtime or device missing),
 * KVX_ERR_UNSUPPORTED when its runtime has no page-locked allocation, KVX_ERR_OUT_OF_MEMORY when
 * the allocation fails.
 */
KVX_API int32_t kvx_host_alloc(int32_t device_type, int32_t device_index, int64_t bytes,
                               void **ptr);

/* Frees memory that kvx_host_alloc(device_type, ...) returned, through the same runtime; NULL
 * does nothing. Any other pointer (another device type's, one freed already, one that did not
 * come from kvx_host_alloc) is KVX_ERR_INVALID_ARGUMENT and left alone. The caller makes sure
 * no device work still reads or writes the memory (kvx_synchronize). */
KVX_API int32_t kvx_host_free(int32_t device_type, void *ptr);

/* ---------------------------------------------------------------- checksum */

/*
 * zlib's CRC-32 (reflected polynomial 0xEDB88320: zlib's crc32(), Python's zlib.crc32) of the
 * `size` bytes at `data`, continuing from `crc`: 0 starts a checksum, and
 * kvx_crc32(kvx_crc32(0, a, n), b, m) is the CRC-32 of a followed by b. A pure function of host
 * memory without a status: `data` must point to `size` readable bytes (NULL only with size 0,
 * which returns crc). Runs on the calling thread, carry-less multiplication on x86-64, the CRC32
 * instructions on 64-bit ARM, tables elsewhere or under KVX_CPU_ISA=baseline; every variant gives
 * the same value, and kvx_cpu_kernels() names the one running ("crc32=...").
 */
KVX_API uint32_t kvx_crc32(uint32_t crc, const void *data, size_t size);

/* ---------------------------------------------------------------- KV codec (CacheGen) */

/*
 * CacheGen-compatible lossy codec, bit-exact with LMCache's CacheGen coder.
 *
 * Quantization works on "rows": one row per (plane, layer), each a [num_tokens, num_channels]
 * matrix with its own bin count. Per (row, token): scale = max |x| over the channels (exact in
 * the input dtype, returned as float32), MAX = bins / 2 - 1, and
 *   symbol = round_half_even(float32(x * float32(MAX / scale)) + MAX)      (two roundings)
 * so symbols lie in 0 .. 2 * MAX. A zero scale gives symbol MAX for every channel.
 *
 * Entropy coding works per (layer, channel) stream over symbols laid out [layers, tokens,
 * channels] (row-major, uint8) with one 16-bit CDF table of cdf_len entries per stream
 * ([layers, channels, cdf_len], uint16, LMCache's layout). Symbol s occupies
 * [cdf[s], cdf[s + 1]) of 65536, the last symbol (cdf_len - 2) ending at 65536; cdf[cdf_len - 1]
 * is not used by the coder. Tables must be strictly increasing over entries 0 .. cdf_len - 2.
 *
 * On a GPU stream (CUDA/HIP) every array except `bins` (always read on the host) lives where the
 * device can read it (device memory or pinned host memory), and what depends on the data is
 * checked on the device while the work runs: a non-finite token, a symbol or CDF table out of
 * range, a stream length or offset out of range, or an encoded stream longer than
 * stream_capacity skips that token, symbol or stream (a skipped encoder stream gets length 0, a
 * truncated one its capacity) and is reported by kvx_synchronize(), as for transfer. The CPU
 * backend rejects such calls before writing anything.
 */
enum kvx_codec_limits {
    KVX_CODEC_MIN_BINS = 4,            /* quantization bins per row (MAX >= 1) */
    KVX_CODEC_MAX_BINS = 256,          /* symbols are uint8 */
    KVX_CODEC_MAX_CDF_LEN = 257,       /* KVX_CODEC_MAX_BINS + 1 */
    KVX_CODEC_MAX_STREAM_BYTES = 2147483647, /* lengths are int32, as in LMCache */
    KVX_CODEC_MAX_TOKENS = 954437176,  /* tokens whose worst-case stream fits that */
    KVX_CODEC_FORMAT_VERSION = 1,      /* container format written by kvx_codec_compress */
    KVX_CODEC_MAX_HEAD_SIZE = 65536    /* the rotated method's largest head_size */
};

/*
 * Quantizes x (dtype FLOAT32, FLOAT16 or BFLOAT16): element (r, t, c) at
 * x + r*row_stride + t*token_stride + c (elements; channels contiguous). bins[num_rows] in
 * KVX_CODEC_MIN_BINS .. KVX_CODEC_MAX_BINS. Writes symbols [num_rows, num_tokens, num_channels]
 * and scales [num_rows, num_tokens]. Non-finite input is rejected before anything is written.
 */
KVX_API int32_t kvx_codec_quantize(const void *x, int32_t dtype, int64_t num_rows,
                                   int64_t num_tokens, int64_t num_channels, int64_t row_stride,
                                   int64_t token_stride, const int32_t *bins, uint8_t *symbols,
                                   float *scales, const kvx_stream *stream);

/* Inverse of kvx_codec_quantize: out(r, t, c) = (symbol - MAX) / MAX * scale, computed in
 * float32 and rounded to nearest even into `dtype`; same strided layout as its x. */
KVX_API int32_t kvx_codec_dequantize(const uint8_t *symbols, const float *scales,
                                     const int32_t *bins, int64_t num_rows, int64_t num_tokens,
                                     int64_t num_channels, int32_t dtype, void *out,
                                     int64_t row_stride, int64_t token_stride,
                                     const kvx_stream *stream);

/*
 * The container's rotated method (docs/codec-container.md, method 1) as quantize / dequantize
 * calls, laid out as kvx_codec_quantize's: x (r, t, c) at x + r*row_stride + t*token_stride + c,
 * symbols [num_rows, num_tokens, num_channels], scales [num_rows, num_tokens]. head_size is a
 * power of two, 1 .. KVX_CODEC_MAX_HEAD_SIZE, dividing num_channels. Per (row, token): the values
 * times 1 / head_size, each head's unnormalised Walsh-Hadamard transform, scale = the smallest
 * bfloat16 value >= max |coefficient| (stored as float32), symbol = clamp(rint(c * float32(MAX /
 * scale)), -MAX, MAX) + MAX with MAX = bins / 2 - 1 (MAX everywhere for a zero scale): the
 * symbols and scales kvx_codec_compress writes for that method. A token holding a value that is
 * not finite or above 3.4028235e38 / (2 * head_size), or whose scale would round up past that,
 * is rejected (before anything is written on the CPU; on a GPU it is skipped and reported by
 * kvx_synchronize). The GPU backend takes head_size up to 8192 (one head in shared memory) and
 * answers KVX_ERR_UNSUPPORTED above. Same bits on every backend.
 */
KVX_API int32_t kvx_codec_quantize_rotated(
    const void *x, int32_t dtype, int64_t num_rows, int64_t num_tokens, int64_t num_channels,
    int64_t head_size, int64_t row_stride, int64_t token_stride, const int32_t *bins,
    uint8_t *symbols, float *scales, const kvx_stream *stream);

/* Inverse of kvx_codec_quantize_rotated: c = float32(symbol - MAX) * float32(scale / MAX) (a
 * symbol above 2 * MAX read as 2 * MAX), each head transformed again, rounded to `dtype` to
 * nearest even (float16 and bfloat16 saturating at their largest finite value); out laid out as
 * quantize's x. Scales are used as given: one above the limit can overflow float32. */
KVX_API int32_t kvx_codec_dequantize_rotated(
    const uint8_t *symbols, const float *scales, const int32_t *bins, int64_t num_rows,
    int64_t num_tokens, int64_t num_channels, int64_t head_size, int32_t dtype, void *out,
    int64_t row_stride, int64_t token_stride, const kvx_stream *stream);

/*
 * LMCache calculate_cdf: one table per (layer, channel) over symbols [num_layers, num_tokens,
 * num_channels] (each < num_bins, 1 .. KVX_CODEC_MAX_BINS), written to cdf [num_layers,
 * num_channels, num_bins + 1]: cdf[i] = (65535 - num_bins) * (count of symbols < i) / num_tokens
 * + i (integer division). num_tokens may be 0 (uniform tables).
 */
KVX_API int32_t kvx_codec_calculate_cdf(const uint8_t *symbols, int64_t num_layers,
                                        int64_t num_tokens, int64_t num_channels, int32_t num_bins,
                                        uint16_t *cdf, const kvx_stream *stream);

/* Worst-case bytes of one encoded stream of num_tokens symbols (any CDF, any symbols). */
KVX_API int32_t kvx_codec_stream_bound(int64_t num_tokens, int64_t *bytes);

/*
 * LMCache encode_fast_new: encodes every (layer, channel) stream of symbols [num_layers,
 * num_tokens, num_channels] (each <= cdf_len - 2) into streams [num_layers, num_channels,
 * stream_capacity] and its byte length into lengths [num_layers, num_channels]. A stream that
 * does not fit stream_capacity fails the call with KVX_ERR_BUFFER_TOO_SMALL: nothing is written
 * past any stream's slot, and where the call reports it (not a GPU, whose errors come from
 * kvx_synchronize) lengths are left as they were; kvx_codec_stream_bound gives a capacity that
 * always suffices.
 */
KVX_API int32_t kvx_codec_encode(const uint16_t *cdf, int32_t cdf_len, const uint8_t *symbols,
                                 int64_t num_layers, int64_t num_tokens, int64_t num_channels,
                                 uint8_t *streams, int64_t stream_capacity, int32_t *lengths,
                                 const kvx_stream *stream);

/* LMCache decode_fast_new: stream (l, c) holds lengths[l, c] bytes (0 .. stream_capacity) at
 * streams + (l * num_channels + c) * stream_capacity; bytes past its length read as zero.
 * Writes symbols [num_layers, num_tokens, num_channels]. */
KVX_API int32_t kvx_codec_decode(const uint16_t *cdf, int32_t cdf_len, const uint8_t *streams,
                                 int64_t stream_capacity, const int32_t *lengths,
                                 int64_t num_layers, int64_t num_tokens, int64_t num_channels,
                                 uint8_t *symbols, const kvx_stream *stream);

/* LMCache decode_fast_prefsum: the streams lie back to back in bytes[num_bytes]; stream i
 * (= l * num_channels + c) ends at end_offsets[i] (inclusive prefix sums of the lengths,
 * non-decreasing, <= num_bytes) and starts where stream i - 1 ends (0 for i = 0). */
KVX_API int32_t kvx_codec_decode_prefsum(const uint16_t *cdf, int32_t cdf_len, const uint8_t *bytes,
                                         int64_t num_bytes, const int64_t *end_offsets,
                                         int64_t num_layers, int64_t num_tokens,
                                         int64_t num_channels, uint8_t *symbols,
                                         const kvx_stream *stream);

/*
 * The container (docs/codec-container.md): a dense KV buffer described by a kvx_dense_desc
 * (num_kv planes, e.g. LMCache KV_2LTD [2, L, T, H*D]; heads of a token must be contiguous,
 * head_stride == head_size) is split into chunks of chunk_tokens tokens; every chunk carries its
 * own per-token scales, CDF tables (as symbol counts), stream lengths and LMCache-identical
 * streams, under CRC-32 checksums. Host memory only for now (stream NULL or a CPU stream).
 */
/* How the container codes the values (docs/codec-container.md, "Methods"). */
enum kvx_codec_method {
    KVX_CODEC_METHOD_CACHEGEN = 0, /* LMCache's CacheGen, bit for bit: per-token scales, streams
                                      identical to LMCache's */
    KVX_CODEC_METHOD_ROTATED = 1   /* each head Walsh-Hadamard rotated before CacheGen-style
                                      quantization, bfloat16 scales: fewer bits at equal quality;
                                      head_size a power of two */
};

typedef struct kvx_codec_params {
    uint32_t struct_size;
    int32_t method;            /* enum kvx_codec_method; 0 (CacheGen) when zero-initialised */
    const int32_t *key_bins;   /* [num_layers]: bins of plane 0 (K) layer l */
    const int32_t *value_bins; /* [num_layers]: bins of plane 1 (V); unused when num_kv == 1 */
    int64_t chunk_tokens;      /* 1 .. 65535; LMCache uses 256 */
} kvx_codec_params;

/* Upper bound of kvx_codec_compress's output size for this input. */
KVX_API int32_t kvx_codec_compress_bound(const kvx_dense_desc *kv, const kvx_codec_params *params,
                                         int64_t *bound);

/* Compresses kv into dst[dst_capacity]; *dst_size receives the container's size. */
KVX_API int32_t kvx_codec_compress(const kvx_dense_desc *kv, const kvx_codec_params *params,
                                   void *dst, int64_t dst_capacity, int64_t *dst_size,
                                   const kvx_stream *stream);

/* What a container holds; filled by kvx_codec_inspect. */
typedef struct kvx_codec_info {
    uint32_t struct_size;
    uint32_t format_version;
    int32_t dtype;
    int32_t num_kv;
    int32_t num_layers;
    int32_t num_heads;
    int32_t head_size;
    int32_t num_bins;      /* alphabet of the CDF tables: the largest bins */
    int64_t num_tokens;
    int64_t chunk_tokens;
    int64_t num_chunks;
    int64_t decoded_bytes; /* num_kv * num_layers * num_tokens * heads * head_size * elem size */
    int32_t method;        /* enum kvx_codec_method */
    int32_t reserved0;
} kvx_codec_info;

/* Checks the header of src[src_size] and its chunk table (each chunk's index, token count and
 * section sizes, and that the chunks fill the blob exactly; not their checksums or contents),
 * then fills *info; when bins is not NULL it receives num_kv * num_layers bins (K layers, then
 * V layers), bins_capacity entries at most. Callers that decode untrusted blobs should compare
 * info->decoded_bytes with src_size before allocating the output. */
KVX_API int32_t kvx_codec_inspect(const void *src, int64_t src_size, kvx_codec_info *info,
                                  int32_t *bins, int64_t bins_capacity);

/* Decodes src[src_size] into out, whose shape and dtype must equal the container's (any
 * strides, heads contiguous). Any damage is reported as KVX_ERR_CORRUPT_INPUT naming the field.
 * Every checksum, size and scale is verified before out is written; a blob forged with valid
 * checksums but inconsistent symbol counts fails later, leaving out partly written. */
KVX_API int32_t kvx_codec_decompress(const void *src, int64_t src_size, const kvx_dense_desc *out,
                                     const kvx_stream *stream);

/* ---------------------------------------------------------------- RoPE */

/* How the rotary dims of a head vector form pairs (r = 0 .. rot_dim/2 - 1; pair r uses the
 * cache's cos[r] and sin[r]). */
enum kvx_rope_pairing {
    KVX_ROPE_NEOX = 0, /* GPT-NeoX / Llama: dims r and r + rot_dim/2 */
    KVX_ROPE_GPTJ = 1  /* GPT-J: interleaved dims 2r and 2r + 1 */
};

/*
 * Queries or keys to rotate in place, as a strided view (strides in elements). The head vector
 * of (layer l, token t, head h) holds `head_size` contiguous elements starting at
 *
 *   base + l*layer_stride + t*token_stride + h*head_stride
 *
 * and its first rot_dim elements are rotated; the rest are left untouched. num_layers > 1 lets
 * one call re-rotate the K plane of a [2, L, T, H*D] buffer (every layer shares the positions).
 * The rotated elements of a head vector must not overlap those of another, of either tensor
 * (the calls refuse such views; query and key may be views of one fused qkv tensor, whose
 * elements do not overlap), nor may head vectors overlap the cache or the positions.
 * dtype: FLOAT32, FLOAT16 or BFLOAT16; arithmetic is float32 whatever the storage type, stores
 * round to nearest even.
 */
typedef struct kvx_rope_tensor {
    uint32_t struct_size;
    int32_t dtype;
    int32_t num_layers; /* >= 1 */
    int32_t num_heads;  /* >= 1 */
    int32_t head_size;  /* >= rot_dim */
    int32_t reserved0;  /* set to 0 */
    int64_t num_tokens; /* one position per token */
    void *base;
    int64_t layer_stride;
    int64_t token_stride;
    int64_t head_stride;
} kvx_rope_tensor;

/*
 * vLLM's cos_sin_cache: row p (p = 0 .. max_position - 1) starts at cos_sin + p*row_stride
 * (elements) and holds rot_dim values, cos[0 .. rot_dim/2) then sin[0 .. rot_dim/2).
 * dtype: FLOAT32, FLOAT16 or BFLOAT16. rot_dim is even, 2 .. head_size of every tensor.
 */
typedef struct kvx_rope_cache {
    uint32_t struct_size;
    int32_t dtype;
    int32_t rot_dim;
    int32_t pairing; /* a kvx_rope_pairing */
    int64_t max_position;
    int64_t row_stride; /* rot_dim for a contiguous [max_position, rot_dim] cache */
    const void *cos_sin;
} kvx_rope_cache;

/*
 * Re-rotation (LMCache rotary_embedding_k_fused): keys that were rotated at old_positions[t]
 * are rotated in place to new_positions[t], i.e. by the angle new - old, in one pass.
 * old_positions and new_positions hold keys->num_tokens entries of `positions_dtype` (INT64 or
 * INT32). Every position must lie in [0, cache->max_position): the CPU backend rejects the call
 * before modifying anything; asynchronous backends skip such tokens and report the error when
 * the stream is checked. As for slots, each position is read once and that value checked and
 * used: positions rewritten during the call never make it read outside the cache.
 */
KVX_API int32_t kvx_rope_rerotate(const kvx_rope_tensor *keys, const kvx_rope_cache *cache,
                                  const void *old_positions, const void *new_positions,
                                  int32_t positions_dtype, const kvx_stream *stream);

/*
 * Plain application (vLLM rotary_embedding): rotates `query` and, unless it is NULL, `key`
 * in place by the angles at positions[t]. The two may differ in dtype, layers and heads but
 * must have the same num_tokens. Position checks as for kvx_rope_rerotate.
 */
KVX_API int32_t kvx_rope_apply(const kvx_rope_tensor *query, const kvx_rope_tensor *key,
                               const kvx_rope_cache *cache, const void *positions,
                               int32_t positions_dtype, const kvx_stream *stream);

#ifdef __cplusplus
}
#endif

#endif /* KVX_H */
