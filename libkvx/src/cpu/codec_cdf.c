/*
 * codec_cdf.c - LMCache's calculate_cdf on the CPU, and the checks on CDF tables and symbols
 * that the coder relies on.
 *
 * A work item is one layer and KVX_CDF_GROUP channels: the histogram loop then reads each token's
 * symbols for those channels as one contiguous run, and the histograms stay in L1.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "codec_cpu.h"

#define KVX_CDF_GROUP 64

typedef struct cdf_job {
    const uint8_t *symbols;
    int64_t num_tokens;
    int64_t num_channels;
    int64_t groups; /* channel groups per layer */
    int32_t num_bins;
    const uint16_t *norm; /* norm[k] = (65535 - num_bins) * k / num_tokens, k = 0 .. num_tokens */
    uint16_t *cdf;
} cdf_job;

static uint16_t normalized(const cdf_job *job, uint64_t below)
{
    if (job->norm)
        return job->norm[below];
    if (job->num_tokens == 0)
        return 0;
    return (uint16_t)((uint64_t)(0xffff - job->num_bins) * below / (uint64_t)job->num_tokens);
}

static void cdf_group(const cdf_job *job, int64_t layer, int64_t c0, int64_t width)
{
    /* Channel g's counts at hist + g * nb: packed, so that the counts in use stay in a few KiB
     * of L1 (rows of KVX_CODEC_MAX_BINS would put the channels 1 KiB apart, all in the same few
     * cache sets). */
    uint32_t hist[KVX_CDF_GROUP * KVX_CODEC_MAX_BINS];
    int32_t nb = job->num_bins;
    for (int64_t i = 0; i < width * nb; i++)
        hist[i] = 0;
    /* Zero tokens may come with NULL symbols, and C defines no offset from NULL, not even 0. */
    const uint8_t *row = job->num_tokens == 0
                             ? NULL
                             : job->symbols + layer * job->num_tokens * job->num_channels + c0;
    for (int64_t t = 0; t < job->num_tokens; t++, row += job->num_channels)
        for (int64_t g = 0; g < width; g++)
            hist[g * nb + row[g]]++;
    for (int64_t g = 0; g < width; g++) {
        uint16_t *out = job->cdf + ((layer * job->num_channels) + c0 + g) * (nb + 1);
        uint64_t below = 0;
        for (int32_t s = 0; s <= nb; s++) {
            out[s] = (uint16_t)(normalized(job, below) + s);
            if (s < nb)
                below += hist[g * nb + s];
        }
    }
}

static void cdf_range(void *ctx, int64_t begin, int64_t end)
{
    const cdf_job *job = ctx;
    for (int64_t i = begin; i < end; i++) {
        int64_t layer = i / job->groups, c0 = (i % job->groups) * KVX_CDF_GROUP;
        int64_t width = job->num_channels - c0 < KVX_CDF_GROUP ? job->num_channels - c0
                                                               : KVX_CDF_GROUP;
        cdf_group(job, layer, c0, width);
    }
}

int32_t kvx_cpu_codec_calculate_cdf(const kvx_codec_cdf_args *args, const kvx_stream *stream)
{
    (void)stream;
    int32_t rc = kvx_cpu_codec_check_symbols(args->symbols, args->num_layers, args->num_tokens,
                                             args->num_channels, args->num_bins - 1, "symbols");
    if (rc)
        return rc;
    /* Every stream divides by the same token count: one table of quotients replaces a 64-bit
     * division per CDF entry. Long inputs (rare) divide directly. */
    uint16_t *norm = NULL;
    if (args->num_tokens > 0 && args->num_tokens <= (1 << 20)) {
        norm = malloc((size_t)(args->num_tokens + 1) * sizeof *norm);
        if (!norm)
            return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "calculate_cdf: cannot allocate %lld entries",
                            (long long)args->num_tokens + 1);
        for (int64_t k = 0; k <= args->num_tokens; k++)
            norm[k] = (uint16_t)((uint64_t)(0xffff - args->num_bins) * (uint64_t)k /
                                 (uint64_t)args->num_tokens);
    }
    int64_t groups = (args->num_channels + KVX_CDF_GROUP - 1) / KVX_CDF_GROUP;
    cdf_job job = {args->symbols, args->num_tokens, args->num_channels, groups, args->num_bins,
                   norm,          args->cdf};
    kvx_parallel_for(args->num_layers * groups, 1, cdf_range, &job);
    free(norm);
    return KVX_OK;
}

/* ---------------------------------------------------------------- checks */

int32_t kvx_cpu_codec_check_cdf(const uint16_t *cdf, int32_t cdf_len, int64_t num_tables)
{
    for (int64_t i = 0; i < num_tables; i++) {
        const uint16_t *table = cdf + i * cdf_len;
        uint32_t bad = 0;
        for (int32_t s = 0; s + 2 < cdf_len; s++)
            bad |= (uint32_t)(table[s] >= table[s + 1]);
        if (!bad)
            continue;
        for (int32_t s = 0; s + 2 < cdf_len; s++)
            if (table[s] >= table[s + 1])
                return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                                "cdf[%lld]: expected strictly increasing entries 0..%d, got "
                                "cdf[%d] = %u >= cdf[%d] = %u",
                                (long long)i, (int)cdf_len - 2, (int)s, (unsigned)table[s],
                                (int)s + 1, (unsigned)table[s + 1]);
    }
    return KVX_OK;
}

typedef struct symbol_check_job {
    const uint8_t *symbols;
    int64_t row;       /* elements per item: one token's channels */
    uint8_t max_symbol;
    _Atomic int64_t first_bad; /* smallest offending item, or INT64_MAX */
} symbol_check_job;

static void check_range(void *ctx, int64_t begin, int64_t end)
{
    symbol_check_job *job = ctx;
    for (int64_t i = begin; i < end; i++) {
        const uint8_t *p = job->symbols + i * job->row;
        uint8_t m = 0;
        for (int64_t c = 0; c < job->row; c++)
            m = p[c] > m ? p[c] : m;
        if (m > job->max_symbol) {
            int64_t seen = atomic_load_explicit(&job->first_bad, memory_order_relaxed);
            while (i < seen && !atomic_compare_exchange_weak_explicit(&job->first_bad, &seen, i,
                                                                      memory_order_relaxed,
                                                                      memory_order_relaxed))
                ;
            return;
        }
    }
}

int32_t kvx_cpu_codec_check_symbols(const uint8_t *symbols, int64_t num_layers, int64_t num_tokens,
                                    int64_t num_channels, int32_t max_symbol, const char *what)
{
    if (max_symbol >= 255)
        return KVX_OK;
    symbol_check_job job = {symbols, num_channels, (uint8_t)max_symbol, 0};
    atomic_init(&job.first_bad, INT64_MAX);
    kvx_parallel_for(num_layers * num_tokens, 1 + 65536 / (num_channels + 1), check_range, &job);
    int64_t bad = atomic_load(&job.first_bad);
    if (bad == INT64_MAX)
        return KVX_OK;
    const uint8_t *p = symbols + bad * num_channels;
    int64_t c = 0;
    while (p[c] <= max_symbol)
        c++;
    return kvx_fail(KVX_ERR_INVALID_ARGUMENT, "%s[%lld, %lld, %lld]: expected 0..%d, got %u", what,
                    (long long)(bad / num_tokens), (long long)(bad % num_tokens), (long long)c,
                    (int)max_symbol, (unsigned)p[c]);
}
