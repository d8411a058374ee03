/*
 * codec_staged.h - the host-staged codec, shared by backends without device codec kernels
 * (Ascend, CNRT): each codec entry copies its device inputs to page-locked host memory on the
 * caller's stream, waits, runs the CPU backend's entry on the host copies, copies the outputs
 * back on the stream and waits again.
 *
 * A backend provides a kvx_staging_ops table and points its vtable's codec entries at the
 * kvx_staged_codec_* functions below (KVX_STAGED_CODEC_ENTRIES) and its `staging` field at the
 * table. Contract of the staged entries:
 *   - Arrays may live in device memory of the stream's device (staged) or in host memory (used
 *     in place); device memory of another device is KVX_ERR_INVALID_ARGUMENT. `bins` is always
 *     host memory (src/core/codec.c reads it).
 *   - They synchronise the stream, twice: after the device -> host copies (and so after all
 *     earlier work on the stream) and after the host -> device copies, so the staging memory is
 *     freed (or kept for later calls: staging_pool.h) only once the stream has consumed it,
 *     and the outputs are complete when the call returns. An error an earlier operation left
 *     on the stream surfaces here.
 *   - Data-dependent errors (non-finite input, bad symbols or CDF tables, stream offsets, a
 *     stream capacity too small) come from the CPU step, before anything is copied back: the
 *     device outputs are untouched. So are they when a runtime call fails while staging in or
 *     waiting for it. A runtime failure while copying results back can leave outputs partly
 *     written (the message says so).
 *   - Runtime failures are KVX_ERR_DEVICE (KVX_ERR_OUT_OF_MEMORY for the staging allocation)
 *     naming the vendor function and its error code.
 *   - Bytes of an output the CPU entry does not write (stream slots past each stream's length)
 *     keep their device contents: such outputs are staged in as well as out.
 */
#ifndef KVX_CODEC_STAGED_H
#define KVX_CODEC_STAGED_H

#include <stddef.h>

#include "kvx_internal.h"
#include "runtime_loader.h"

enum { KVX_STAGING_NO_PINNED = 1 };

typedef struct kvx_staging_ops {
    const char *device_name; /* "NPU", "MLU": for messages */
    /* Makes the stream's device current on this thread; leave() undoes it. */
    int32_t (*enter)(const kvx_stream *stream, kvx_device_guard *guard);
    void (*leave)(const kvx_device_guard *guard);
    /* *device = the device index holding ptr, or -1 for host memory. */
    int32_t (*locate)(const void *ptr, const char *what, int32_t *device);
    /* Page-locked host memory; KVX_STAGING_NO_PINNED when the runtime has no such allocator
     * (the staged codec then uses malloc). */
    int32_t (*host_alloc)(size_t bytes, void **ptr);
    void (*host_free)(void *ptr);
    /* Enqueues one asynchronous copy on the stream, host -> device when to_device, else
     * device -> host. `doing` says what for (for the error message). */
    int32_t (*copy)(void *dst, const void *src, size_t bytes, int to_device,
                    const kvx_stream *stream, const char *doing);
    /* Waits for the stream; reports what its work left behind. */
    int32_t (*wait)(const kvx_stream *stream);
} kvx_staging_ops;

/* Vtable-compatible codec entries; they find the ops through kvx_backend_for(stream)->staging. */
int32_t kvx_staged_codec_quantize(const kvx_codec_quantize_args *args, const kvx_stream *stream);
int32_t kvx_staged_codec_dequantize(const kvx_codec_dequantize_args *args,
                                    const kvx_stream *stream);
int32_t kvx_staged_codec_calculate_cdf(const kvx_codec_cdf_args *args, const kvx_stream *stream);
int32_t kvx_staged_codec_encode(const kvx_codec_encode_args *args, const kvx_stream *stream);
int32_t kvx_staged_codec_decode(const kvx_codec_decode_args *args, const kvx_stream *stream);

/* Designated initialisers for a backend's vtable. */
#define KVX_STAGED_CODEC_ENTRIES(ops)                                                          \
    .codec_quantize = kvx_staged_codec_quantize,                                               \
    .codec_dequantize = kvx_staged_codec_dequantize,                                           \
    .codec_calculate_cdf = kvx_staged_codec_calculate_cdf,                                     \
    .codec_encode = kvx_staged_codec_encode, .codec_decode = kvx_staged_codec_decode,          \
    .staging = &(ops)

#endif /* KVX_CODEC_STAGED_H */
