/*
 * chunk.c - what compress and decompress do alike for each chunk: its work buffers, and the CDF
 * tables both sides derive from the chunk's symbol counts (so they come out the same).
 */
#include <stdlib.h>
#include <string.h>

#include "container.h"

void kvx_codec_cdf_from_counts(const uint16_t *counts, int32_t num_bins, int64_t tokens,
                               uint16_t *cdf)
{
    uint64_t below = 0, top = (uint64_t)(0xffff - num_bins);
    for (int32_t s = 0; s <= num_bins; s++) {
        uint64_t scaled = tokens ? top * below / (uint64_t)tokens : 0;
        cdf[s] = (uint16_t)(scaled + (uint64_t)s);
        if (s < num_bins)
            below += counts[s];
    }
}

void kvx_codec_count_span(const uint16_t *counts, int32_t symbols, int32_t *first, int32_t *n)
{
    int32_t lo = 0, hi = symbols - 1;
    while (lo < symbols && counts[lo] == 0)
        lo++;
    while (hi >= lo && counts[hi] == 0)
        hi--;
    *first = lo < symbols ? lo : 0;
    *n = hi >= lo ? hi - lo + 1 : 0;
}

void kvx_codec_buffers_free(chunk_buffers *b)
{
    free(b->symbols);
    free(b->scales);
    free(b->counts);
    free(b->cdf);
    free(b->models);
    free(b->end_offsets);
    free(b->lengths);
    free(b->streams);
    memset(b, 0, sizeof *b);
}

int32_t kvx_codec_buffers_alloc(chunk_buffers *b, const layout *lo, int64_t tokens,
                                int with_streams)
{
    int64_t streams = lo->rows * lo->channels;
    memset(b, 0, sizeof *b);
    b->symbols = malloc((size_t)(lo->rows * tokens * lo->channels) + 1);
    b->scales = malloc((size_t)(lo->rows * tokens) * sizeof(float) + 1);
    b->counts = malloc((size_t)(streams * lo->num_bins) * sizeof(uint16_t));
    b->cdf = malloc((size_t)(streams * (lo->num_bins + 1)) * sizeof(uint16_t));
    b->models = calloc((size_t)streams, sizeof(stream_model));
    b->end_offsets = malloc((size_t)(streams + 1) * sizeof(int64_t));
    b->lengths = malloc((size_t)streams * sizeof(int32_t));
    if (with_streams) {
        /* Slots sized for 6 bits per symbol, not the 18-bit worst case: a stream longer than
         * that is re-encoded into worst-case slots (compress.c), and the smaller buffer
         * halves the memory the encoder touches. Symbols cost about log2(bins) bits at most
         * under their own chunk's statistics. */
        int64_t typical = (tokens * 6 + 7) / 8 + 16, worst = kvx_codec_stream_bound_of(tokens);
        b->stream_capacity = typical < worst ? typical : worst;
        b->streams = malloc((size_t)(streams * b->stream_capacity));
    }
    if (!b->symbols || !b->scales || !b->counts || !b->cdf || !b->models || !b->end_offsets ||
        !b->lengths || (with_streams && !b->streams)) {
        kvx_codec_buffers_free(b);
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY,
                        "codec: cannot allocate the work buffers of a "
                        "%lld-token chunk",
                        (long long)tokens);
    }
    return KVX_OK;
}
