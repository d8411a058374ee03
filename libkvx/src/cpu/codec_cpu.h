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

/*
 * Defines name##_variant(), which returns a kvx_range_fn running name##_body(ctx, begin, end,
 * vector): compiled for the baseline instruction set (vector = 0) and a second time (vector = 1)
 * for AVX2 on x86-64, or as-is on 64-bit ARM, whose baseline already has NEON. The second runs
 * where kvx_cpu_avx2_allowed / kvx_cpu_neon_allowed (so KVX_CPU_ISA=baseline lets the tests run
 * both). The two must compute the same bits; the flag lets a body call hand-written vector code.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#define KVX_VECTOR_TARGET __attribute__((target("avx2")))
#define KVX_VECTOR_ALLOWED kvx_cpu_avx2_allowed
#elif defined(__aarch64__) && defined(__GNUC__)
#define KVX_VECTOR_TARGET
#define KVX_VECTOR_ALLOWED kvx_cpu_neon_allowed
#endif

#ifdef KVX_VECTOR_ALLOWED
#define KVX_DEFINE_RANGE_VARIANTS(name)                                                        \
    static void name##_baseline(void *ctx, int64_t begin, int64_t end)                        \
    {                                                                                         \
        name##_body(ctx, begin, end, 0);                                                      \
    }                                                                                         \
    KVX_VECTOR_TARGET static void name##_vector(void *ctx, int64_t begin, int64_t end)        \
    {                                                                                         \
        name##_body(ctx, begin, end, 1);                                                      \
    }                                                                                         \
    static kvx_range_fn name##_variant(void)                                                  \
    {                                                                                         \
        return KVX_VECTOR_ALLOWED() ? name##_vector : name##_baseline;                        \
    }
#else
#define KVX_DEFINE_RANGE_VARIANTS(name)                                                        \
    static void name##_baseline(void *ctx, int64_t begin, int64_t end)                        \
    {                                                                                         \
        name##_body(ctx, begin, end, 0);                                                      \
    }                                                                                         \
    static kvx_range_fn name##_variant(void) { return name##_baseline; }
#endif

#endif /* KVX_CPU_CODEC_CPU_H */
