/*
 * kvx_internal.h - what the core and every backend share: error reporting, the CPU thread
 * pool, and the backend vtable. Never installed.
 */
#ifndef KVX_INTERNAL_H
#define KVX_INTERNAL_H

#include "kvx.h"
#include "op_args.h"

#ifdef __cplusplus
extern "C" { /* the GPU backend's .cu files are C++ */
#endif

#if defined(__GNUC__)
#define KVX_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define KVX_PRINTF(fmt_index, first_arg)
#endif

/* Records a formatted message as this thread's last error and returns `status`, so that a
 * failing check reads `return kvx_fail(KVX_ERR_INVALID_ARGUMENT, "...", ...);`. */
int32_t kvx_fail(int32_t status, const char *fmt, ...) KVX_PRINTF(2, 3);

/* Clears this thread's last error; every public entry point calls it first. */
void kvx_clear_error(void);

/* Writes "kvx: <message>" as one line on stderr: for a setting the library refuses (an
 * environment variable), saying what it does instead. Callers make sure it is said once. */
void kvx_warn(const char *fmt, ...) KVX_PRINTF(1, 2);

/* The failure of most argument checks. */
#define FAIL_ARG(...) kvx_fail(KVX_ERR_INVALID_ARGUMENT, __VA_ARGS__)

/* ---------------------------------------------------------------- shared argument checks */

/* Each returns KVX_OK, or fails with KVX_ERR_INVALID_ARGUMENT naming `owner->field`. */
int32_t kvx_check_range(const char *owner, const char *field, int64_t value, int64_t lo,
                        int64_t hi);
/* Adds stride * (count - 1) to *max_offset; a negative stride or an overflow fails. */
int32_t kvx_check_extent(const char *owner, const char *field, int64_t stride, int64_t count,
                         int64_t *max_offset);
/* The largest element offset a view can address must fit in int64 bytes. */
int32_t kvx_check_bytes_fit(const char *owner, int64_t max_offset, int64_t elem_size);

/* ---------------------------------------------------------------- caller arrays read once */

/* One element of an array in caller memory that another thread may change during the call
 * (Python releases the GIL around it): a volatile load, which the compiler may neither repeat nor
 * drop, so a value that was checked is the value used. Check the copy, and use only the copy. */
static inline int64_t kvx_read_once_i64(const int64_t *array, int64_t index)
{
    return ((const volatile int64_t *)array)[index];
}

static inline int32_t kvx_read_once_i32(const int32_t *array, int64_t index)
{
    return ((const volatile int32_t *)array)[index];
}

/* ---------------------------------------------------------------- thread pool */

/* Runs fn(ctx, begin, end) over [0, count) split into contiguous ranges of at least `grain`
 * items, on the pool's threads and the caller's. Returns when every range is done. When the pool
 * is busy serving another caller, the whole range runs on the calling thread instead. */
typedef void (*kvx_range_fn)(void *ctx, int64_t begin, int64_t end);
void kvx_parallel_for(int64_t count, int64_t grain, kvx_range_fn fn, void *ctx);

/* ---------------------------------------------------------------- backends */

/* One table per backend; a NULL entry means "unsupported on this backend". Each operation's
 * slot takes its arguments struct (op_args.h), filled by the operation's front-end after the
 * backend-independent checks, and the caller's stream. */
typedef struct kvx_backend {
    const char *name;
    int32_t device_type;
    /* 1 if usable now; else 0 with kvx_fail() already called to say why. */
    int32_t (*available)(void);
    int32_t (*transfer)(const kvx_transfer_args *args, const kvx_stream *stream);
    /* Waits for `stream` and returns deferred errors; NULL for synchronous backends. */
    int32_t (*synchronize)(const kvx_stream *stream);
    /* Codec. Data-dependent checks (non-finite input, symbol ranges, CDF monotonicity, stream
     * offsets) belong to the backend, which knows where the data lives; a CPU backend makes them
     * before writing anything. The unit of parallelism is one (row, token) for quantization and
     * one (layer, channel) stream for the CDF and the range coder, so a GPU can run one stream
     * per thread. */
    int32_t (*codec_quantize)(const kvx_codec_quantize_args *args, const kvx_stream *stream);
    int32_t (*codec_dequantize)(const kvx_codec_dequantize_args *args, const kvx_stream *stream);
    int32_t (*codec_calculate_cdf)(const kvx_codec_cdf_args *args, const kvx_stream *stream);
    int32_t (*codec_encode)(const kvx_codec_encode_args *args, const kvx_stream *stream);
    int32_t (*codec_decode)(const kvx_codec_decode_args *args, const kvx_stream *stream);
    int32_t (*rope_rerotate)(const kvx_rope_rerotate_args *args, const kvx_stream *stream);
    int32_t (*rope_apply)(const kvx_rope_apply_args *args, const kvx_stream *stream);
    /* The runtime-loaded backends (src/runtime/) point their codec entries at the host-staged
     * codec and this at their runtime operations, which it stages through; NULL otherwise. */
    const struct kvx_runtime_ops *staging;
} kvx_backend;

/* The backend that serves `stream` (NULL = CPU), or NULL after kvx_fail() with the reason. */
const kvx_backend *kvx_backend_for(const kvx_stream *stream);

/* In a public entry point: declares `backend`, the one serving `stream`, and returns when there
 * is none (KVX_ERR_NOT_AVAILABLE) or it lacks `entry` (KVX_ERR_UNSUPPORTED naming `op`). */
#define KVX_DISPATCH(backend, stream, entry, op)                                               \
    const kvx_backend *backend = kvx_backend_for(stream);                                      \
    if (!backend)                                                                              \
        return KVX_ERR_NOT_AVAILABLE;                                                          \
    if (!backend->entry)                                                                       \
        return kvx_fail(KVX_ERR_UNSUPPORTED, op ": not supported by the %s backend",            \
                        backend->name)

extern const kvx_backend kvx_cpu_backend;
extern const kvx_backend kvx_gpu_backend; /* CUDA or HIP, whichever this build has */
/* runtime-loaded backends */
extern const kvx_backend kvx_ascend_backend;
extern const kvx_backend kvx_cnrt_backend;

#ifdef __cplusplus
}
#endif

#endif /* KVX_INTERNAL_H */
