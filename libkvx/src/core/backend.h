/*
 * backend.h - the interface between the operations' front-ends (src/ops/) and the backends:
 * each operation's arguments as one struct, the table of slots a backend fills, and the list
 * that ties each public kvx_op to its slot. A front-end checks what does not depend on the
 * backend, fills its kvx_<op>_args and calls the slot of the backend serving the stream; a slot
 * reads the struct and the stream, so a signature is written once, here. docs/extending.md says
 * what adding an operation or a backend touches. Never installed.
 */
#ifndef KVX_BACKEND_H
#define KVX_BACKEND_H

#include "kvx.h"

#ifdef __cplusplus
extern "C" { /* the GPU backend's .cu files are C++ */
#endif

/* kvx_transfer: slot_mapping has dense->num_tokens (> 0) entries. */
typedef struct kvx_transfer_args {
    const kvx_paged_desc *paged;
    const kvx_dense_desc *dense;
    const int64_t *slot_mapping;
    int32_t direction; /* a kvx_direction */
} kvx_transfer_args;

/* kvx_codec_quantize: element (r, t, c) of x at x + r*row_stride + t*token_stride + c; writes
 * symbols [num_rows, num_tokens, num_channels] and scales [num_rows, num_tokens]. `bins` is host
 * memory on every backend. */
typedef struct kvx_codec_quantize_args {
    const void *x;
    int32_t dtype;
    int64_t num_rows, num_tokens, num_channels;
    int64_t row_stride, token_stride;
    const int32_t *bins;
    uint8_t *symbols;
    float *scales;
} kvx_codec_quantize_args;

/* kvx_codec_dequantize: the inverse, into `out` laid out as quantize's x. */
typedef struct kvx_codec_dequantize_args {
    const uint8_t *symbols;
    const float *scales;
    const int32_t *bins;
    int64_t num_rows, num_tokens, num_channels;
    int32_t dtype;
    void *out;
    int64_t row_stride, token_stride;
} kvx_codec_dequantize_args;

/* kvx_codec_quantize_rotated: CacheGen's arguments, and head_size (a power of two dividing
 * num_channels). */
typedef struct kvx_codec_quantize_rotated_args {
    kvx_codec_quantize_args base;
    int64_t head_size;
} kvx_codec_quantize_rotated_args;

/* kvx_codec_dequantize_rotated: the inverse. */
typedef struct kvx_codec_dequantize_rotated_args {
    kvx_codec_dequantize_args base;
    int64_t head_size;
} kvx_codec_dequantize_rotated_args;

/* kvx_codec_calculate_cdf: symbols [num_layers, num_tokens, num_channels] -> cdf [num_layers,
 * num_channels, num_bins + 1]. */
typedef struct kvx_codec_cdf_args {
    const uint8_t *symbols;
    int64_t num_layers, num_tokens, num_channels;
    int32_t num_bins;
    uint16_t *cdf;
} kvx_codec_cdf_args;

/* kvx_codec_encode: one stream per (layer, channel) into fixed slots of stream_capacity bytes. */
typedef struct kvx_codec_encode_args {
    const uint16_t *cdf;
    int32_t cdf_len;
    const uint8_t *symbols;
    int64_t num_layers, num_tokens, num_channels;
    uint8_t *streams;
    int64_t stream_capacity;
    int32_t *lengths;
} kvx_codec_encode_args;

/* kvx_codec_decode and kvx_codec_decode_prefsum. Exactly one of `lengths` (streams in fixed
 * slots of stream_capacity bytes) and `end_offsets` (streams back to back, inclusive prefix
 * sums) is non-NULL; `bytes` holds num_bytes bytes either way. */
typedef struct kvx_codec_decode_args {
    const uint16_t *cdf;
    int32_t cdf_len;
    const uint8_t *bytes;
    int64_t num_bytes;
    int64_t stream_capacity;
    const int32_t *lengths;
    const int64_t *end_offsets;
    int64_t num_layers, num_tokens, num_channels;
    uint8_t *symbols;
} kvx_codec_decode_args;

/* kvx_rope_rerotate. Backends on host memory get positions as checked int64 copies (dtype
 * KVX_DTYPE_INT64, every entry in [0, max_position)); device backends get the caller's arrays and
 * check each position where they read it. */
typedef struct kvx_rope_rerotate_args {
    const kvx_rope_tensor *keys;
    const kvx_rope_cache *cache;
    const void *old_positions;
    const void *new_positions;
    int32_t positions_dtype;
} kvx_rope_rerotate_args;

/* kvx_rope_apply: `key` may be NULL; positions as for rerotate. */
typedef struct kvx_rope_apply_args {
    const kvx_rope_tensor *query;
    const kvx_rope_tensor *key;
    const kvx_rope_cache *cache;
    const void *positions;
    int32_t positions_dtype;
} kvx_rope_apply_args;

/* One range of kvx_copy_batch as the front-end read it, once, from the caller's arrays. */
typedef struct kvx_copy_range {
    void *dst;
    const void *src;
    int64_t bytes;  /* > 0: empty ranges are dropped */
    int64_t index;  /* its entry in the caller's arrays, for messages */
    int64_t offset; /* bytes of the ranges before it, so that work can be split by bytes */
} kvx_copy_range;

/* kvx_copy_batch: the non-empty ranges in the caller's order (count > 0), every pointer
 * non-NULL, no destination overlapping another destination or any source. */
typedef struct kvx_copy_batch_args {
    const kvx_copy_range *ranges;
    int64_t count;
    int64_t total_bytes;
} kvx_copy_batch_args;

/* kvx_host_alloc: at least `bytes` bytes into *ptr; kvx_host_free gives back what the slot
 * returned (the front-end aligns it to a page and remembers the slot's own pointer). */
typedef struct kvx_host_alloc_args {
    size_t bytes;
    void **ptr;
} kvx_host_alloc_args;

typedef struct kvx_host_free_args {
    void *ptr;
    size_t bytes;
} kvx_host_free_args;

/* Stream marks on an asynchronous backend: mark_record stores in *created a new event recorded
 * at the stream's current end; mark_passed answers 1 (the stream passed `event`) or 0, or
 * fails; mark_release frees `event`, passed or not (`passed`: mark_passed said so already). */
typedef struct kvx_mark_args {
    void *event;
    void **created;
    int passed;
} kvx_mark_args;

/* ---------------------------------------------------------------- the backend table */

/* One table per backend; a NULL slot means "unsupported on this backend". Each operation's slot
 * takes its arguments struct (above), filled by the operation's front-end after the
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
    int32_t (*codec_quantize_rotated)(const kvx_codec_quantize_rotated_args *args,
                                      const kvx_stream *stream);
    int32_t (*codec_dequantize_rotated)(const kvx_codec_dequantize_rotated_args *args,
                                        const kvx_stream *stream);
    int32_t (*rope_rerotate)(const kvx_rope_rerotate_args *args, const kvx_stream *stream);
    int32_t (*rope_apply)(const kvx_rope_apply_args *args, const kvx_stream *stream);
    int32_t (*copy_batch)(const kvx_copy_batch_args *args, const kvx_stream *stream);
    /* Host memory for work on this backend's devices (page-locked where the device has a
     * runtime); `device` names the device whose context allocates it (handle NULL). */
    int32_t (*host_alloc)(const kvx_host_alloc_args *args, const kvx_stream *device);
    int32_t (*host_free)(const kvx_host_free_args *args, const kvx_stream *device);
    /* Whether host_alloc's memory starts on a page; where not, the front-end asks for a page
     * more and aligns the pointer itself. */
    int host_alloc_page_aligned;
    /* Stream marks (kvx_mark_record). A synchronous backend (no `synchronize`) needs none: its
     * marks have passed when recorded; an asynchronous one without them refuses marks. */
    int32_t (*mark_record)(const kvx_mark_args *args, const kvx_stream *stream);
    int32_t (*mark_passed)(const kvx_mark_args *args, const kvx_stream *stream);
    int32_t (*mark_release)(const kvx_mark_args *args, const kvx_stream *stream);
    /* The runtime-loaded backends (src/runtime/) point their codec entries at the host-staged
     * codec and this at their runtime operations, which it stages through; NULL otherwise. */
    const struct kvx_runtime_ops *staging;
} kvx_backend;

/* The backend that serves `stream` (NULL = CPU), or NULL after kvx_fail() with the reason. */
const kvx_backend *kvx_backend_for(const kvx_stream *stream);

/* Whether backend b runs the codec container (KVX_OP_CODEC_CONTAINER): it is built and read in
 * host memory, so only a CPU backend with all four codec slots it calls does. */
int kvx_backend_runs_container(const kvx_backend *b);

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

/* Each public kvx_op with the slot that runs it, for kvx_backend_supports (src/core/backends.c).
 * KVX_OP_CODEC_CONTAINER has no slot of its own: it runs the codec slots on the host. */
#define KVX_OP_SLOTS(X)                                                                        \
    X(KVX_OP_TRANSFER, transfer)                                                               \
    X(KVX_OP_CODEC_QUANTIZE, codec_quantize)                                                   \
    X(KVX_OP_CODEC_DEQUANTIZE, codec_dequantize)                                               \
    X(KVX_OP_CODEC_CALCULATE_CDF, codec_calculate_cdf)                                         \
    X(KVX_OP_CODEC_ENCODE, codec_encode)                                                       \
    X(KVX_OP_CODEC_DECODE, codec_decode)                                                       \
    X(KVX_OP_ROPE_REROTATE, rope_rerotate)                                                     \
    X(KVX_OP_ROPE_APPLY, rope_apply)                                                           \
    X(KVX_OP_COPY, copy_batch)                                                                 \
    X(KVX_OP_CODEC_QUANTIZE_ROTATED, codec_quantize_rotated)                                   \
    X(KVX_OP_CODEC_DEQUANTIZE_ROTATED, codec_dequantize_rotated)

#ifdef __cplusplus
}
#endif

#endif /* KVX_BACKEND_H */
