/*
 * codec_range_coder_lanes.c - what the vector-lane coders (AVX2, NEON) share, in plain C: moving
 * the 16 encoders between their scalar form and lane arrays, the scalar token step they fall back
 * to, and the decoder's padded copy of the streams.
 */
#include <stdlib.h>
#include <string.h>

#include "range_coder_lanes.h"

#if KVX_CODER_LANES || KVX_CODER_LANES_NEON

void kvx_cpu_lanes_from_encoders(const encoder enc[KVX_CODEC_GROUP], kvx_encoder_words *words)
{
    for (int g = 0; g < KVX_CODEC_GROUP; g++) {
        const encoder *e = &enc[g];
        words->low[g] = e->low;
        words->high[g] = e->high;
        words->pending[g] = (uint32_t)e->pending; /* <= KVX_LANE_MAX_PENDING */
        words->buffered[g] = (uint32_t)e->nbits;
        words->buffer[g] = e->nbits ? (uint32_t)(e->acc << (32 - e->nbits)) : 0;
    }
}

void kvx_cpu_lanes_to_encoders(const kvx_encoder_words *words, encoder enc[KVX_CODEC_GROUP])
{
    for (int g = 0; g < KVX_CODEC_GROUP; g++) {
        encoder *e = &enc[g];
        uint32_t buffered = words->buffered[g];
        e->low = words->low[g];
        e->high = words->high[g];
        e->pending = words->pending[g];
        e->nbits = (int)buffered;
        e->acc = buffered ? words->buffer[g] >> (32 - buffered) : 0;
    }
}

int kvx_cpu_lanes_encode_token(encoder enc[KVX_CODEC_GROUP], const uint16_t *cdf, int32_t cdf_len,
                               const uint8_t *row)
{
    int fits = 1;
    for (int g = 0; g < KVX_CODEC_GROUP; g++) {
        /* The symbol's two edges, as the table of a one-symbol alphabet. */
        const uint16_t *table = cdf + (int64_t)g * cdf_len;
        uint32_t edges[2] = {table[row[g]], row[g] + 2 == cdf_len ? 0x10000u : table[row[g] + 1]};
        encode_symbol(&enc[g], edges, 0);
        fits &= enc[g].pending <= KVX_LANE_MAX_PENDING;
    }
    return fits;
}

uint8_t *kvx_cpu_lanes_padded_copy(const uint8_t *const src[KVX_CODEC_GROUP],
                                   const int64_t len[KVX_CODEC_GROUP], int64_t num_tokens,
                                   uint32_t start[KVX_CODEC_GROUP])
{
    /* Bit positions reach 32 + 18 bits per symbol at most, and must stay below 2^31. */
    if (num_tokens > (INT32_MAX - 64) / 18)
        return NULL;
    int64_t total = 0;
    for (int g = 0; g < KVX_CODEC_GROUP; g++)
        total += len[g] + KVX_LANE_PADDING;
    if (total > INT32_MAX)
        return NULL;
    uint8_t *copy = malloc((size_t)total);
    if (!copy)
        return NULL;
    int64_t at = 0;
    for (int g = 0; g < KVX_CODEC_GROUP; g++) {
        start[g] = (uint32_t)at;
        if (len[g])
            memcpy(copy + at, src[g], (size_t)len[g]);
        memset(copy + at + len[g], 0, KVX_LANE_PADDING);
        at += len[g] + KVX_LANE_PADDING;
    }
    return copy;
}
#endif
