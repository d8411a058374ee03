/*
 * codec_staged.h - the host-staged codec, shared by backends without device codec kernels
 * (Ascend, CNRT): each codec entry copies its device inputs to page-locked host memory on the
 * caller's stream, waits, runs the CPU backend's entry on the host copies, copies the outputs
 * back on the stream and waits again.
 *
 * It works on the backend's runtime ops (runtime_ops.h: enter/leave the device, locate, pinned
 * host memory, 1D copies, waiting for the stream): a backend points its vtable's codec entries
 * at the kvx_staged_codec_* functions below and its `staging` field at its ops table
 * (KVX_RUNTIME_BACKEND_ENTRIES). Contract of the staged entries:
 *   - Arrays may live in device memory of the stream's device (staged) or in host memory (used
 *     in place); device memory of another device is KVX_ERR_INVALID_ARGUMENT. `bins` is always
 *     host memory (src/ops/codec.c reads it).
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

#include "runtime_ops.h"

/* Vtable-compatible codec entries; they find the ops through the stream (kvx_runtime_ops_for). */
int32_t kvx_staged_codec_quantize(const kvx_codec_quantize_args *args, const kvx_stream *stream);
int32_t kvx_staged_codec_dequantize(const kvx_codec_dequantize_args *args,
                                    const kvx_stream *stream);
int32_t kvx_staged_codec_calculate_cdf(const kvx_codec_cdf_args *args, const kvx_stream *stream);
int32_t kvx_staged_codec_encode(const kvx_codec_encode_args *args, const kvx_stream *stream);
int32_t kvx_staged_codec_decode(const kvx_codec_decode_args *args, const kvx_stream *stream);

/* Designated initialisers for a runtime-loaded backend's vtable: the copy engine's transfer,
 * batched copy and synchronize, page-locked host memory, the host-staged codec, and the ops
 * table they all work on. */
#define KVX_RUNTIME_BACKEND_ENTRIES(ops)                                                       \
    .transfer = kvx_runtime_transfer, .synchronize = kvx_runtime_synchronize,                  \
    .codec_quantize = kvx_staged_codec_quantize,                                               \
    .codec_dequantize = kvx_staged_codec_dequantize,                                           \
    .codec_calculate_cdf = kvx_staged_codec_calculate_cdf,                                     \
    .codec_encode = kvx_staged_codec_encode, .codec_decode = kvx_staged_codec_decode,          \
    .copy_batch = kvx_runtime_copy_batch, .host_alloc = kvx_runtime_host_alloc,                \
    .host_free = kvx_runtime_host_free, .staging = &(ops)

/* A runtime-loaded backend's whole vtable: the copy engine and the host-staged codec on its ops.
 * The RoPE slots stay NULL ("unsupported"): kvx.rope falls back to vendor torch ops or
 * kvx.reference on the device (python/kvx/_rope_fallback.py). */
#define KVX_RUNTIME_BACKEND(backend_name, type, available_fn, ops)                              \
    {.name = (backend_name), .device_type = (type), .available = (available_fn),               \
     KVX_RUNTIME_BACKEND_ENTRIES(ops)}

#endif /* KVX_CODEC_STAGED_H */
