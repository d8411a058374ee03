/*
 * rotated.h - the rotated method (docs/codec-container.md, method 1) over many tokens in host
 * memory, on the CPU's threads: what the container's chunks (rotated.c, container.h) and the CPU
 * backend's kvx_codec_quantize_rotated / kvx_codec_dequantize_rotated (cpu/codec_rotated.c) both
 * run, so that the two write the same symbols and scales. The per-token arithmetic is
 * rotated_token.h's, which the GPU kernels share.
 */
#ifndef KVX_CODEC_ROTATED_H
#define KVX_CODEC_ROTATED_H

#include "../core/kvx_internal.h"

/* rows x tokens x channels values: row r = plane * rows_per_plane + layer has its token t at
 * base + plane * plane_stride + layer * row_stride + t * token_stride (elements of dtype, FLOAT32,
 * FLOAT16 or BFLOAT16), channels contiguous, and bins[r]; head_size is a power of two dividing
 * channels. Symbols are [rows, tokens, channels] and scales [rows, tokens], dense. */
typedef struct kvx_rotated_tokens {
    void *base;
    int32_t dtype;
    int64_t rows, tokens, channels, head_size;
    int64_t rows_per_plane, plane_stride, row_stride, token_stride;
    const int32_t *bins;
} kvx_rotated_tokens;

/* Rotates, scales and quantizes every (row, token). *bad_item is the first item (row * tokens +
 * token) holding a value that is not finite or above kvx_rot_limit(head_size), or whose scale
 * rounds up past it (nothing of that item is written), or -1. KVX_OK, or KVX_ERR_OUT_OF_MEMORY. */
int32_t kvx_rotated_quantize_tokens(const kvx_rotated_tokens *v, uint8_t *symbols, float *scales,
                                    int64_t *bad_item);

/* The *bad_item kvx_rotated_quantize_tokens would find, writing nothing; rotates only the tokens
 * whose largest value comes near the limit. KVX_OK, or KVX_ERR_OUT_OF_MEMORY. */
int32_t kvx_rotated_check_tokens(const kvx_rotated_tokens *v, int64_t *bad_item);

/* The inverse, into the values' place (float16 and bfloat16 saturating). KVX_OK, or
 * KVX_ERR_OUT_OF_MEMORY. */
int32_t kvx_rotated_dequantize_tokens(const kvx_rotated_tokens *v, const uint8_t *symbols,
                                      const float *scales);

#endif /* KVX_CODEC_ROTATED_H */
