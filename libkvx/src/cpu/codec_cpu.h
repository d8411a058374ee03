/* codec_cpu.h - what the CPU codec files share: checks on data that lives in host memory. */
#ifndef KVX_CPU_CODEC_CPU_H
#define KVX_CPU_CODEC_CPU_H

#include "cpu_backend.h"

/* Channels of one (layer) handled together by one work item: enough independent streams to
 * hide the latency of each stream's serial dependency chain, few enough that their state and
 * CDF tables stay in L1. */
#define KVX_CODEC_GROUP 16

/* Fails unless entries 0 .. cdf_len - 2 of every table are strictly increasing, which keeps the
 * coder's range from collapsing whatever the symbols and bytes are. */
int32_t kvx_cpu_codec_check_cdf(const uint16_t *cdf, int32_t cdf_len, int64_t num_tables);

/* Fails unless every symbol is <= max_symbol; names the first offender. */
int32_t kvx_cpu_codec_check_symbols(const uint8_t *symbols, int64_t num_layers, int64_t num_tokens,
                                    int64_t num_channels, int32_t max_symbol, const char *what);

#endif /* KVX_CPU_CODEC_CPU_H */
