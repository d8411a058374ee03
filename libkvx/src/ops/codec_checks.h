/* codec_checks.h - argument checks shared by the codec front-ends (ops/codec.c, codec/). */
#ifndef KVX_CODEC_CHECKS_H
#define KVX_CODEC_CHECKS_H

#include "../core/kvx_internal.h"

/* Fail with KVX_ERR_INVALID_ARGUMENT and a message naming `name` unless the check holds (the
 * generic range and pointer checks are core's: kvx_check_range, kvx_check_pointer). */
int32_t kvx_codec_check_bins(const char *name, const int32_t *bins, int64_t count);
int32_t kvx_codec_product(const char *what, int64_t a, int64_t b, int64_t c, int64_t *out);
/* Layers 1..INT32_MAX, tokens 0..KVX_CODEC_MAX_TOKENS, channels 1..INT32_MAX; *elements is
 * their product. */
int32_t kvx_codec_check_shape(int64_t num_layers, int64_t num_tokens, int64_t num_channels,
                              const char *layers_name, int64_t *elements);

/* What kvx_codec_stream_bound returns, for num_tokens already checked. */
int64_t kvx_codec_stream_bound_of(int64_t num_tokens);

#endif /* KVX_CODEC_CHECKS_H */
