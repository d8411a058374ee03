/*
 * op_args.h - the arguments of each operation as one struct, as its front-end (src/ops/) hands
 * them to a backend slot once every backend-independent check has passed. A backend entry reads
 * `const kvx_<op>_args *` and the stream, so a signature is written once, here, and adding a
 * field touches the front-end that fills it and the kernels that read it, nothing between.
 * Never installed.
 */
#ifndef KVX_OP_ARGS_H
#define KVX_OP_ARGS_H

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

#ifdef __cplusplus
}
#endif

#endif /* KVX_OP_ARGS_H */
