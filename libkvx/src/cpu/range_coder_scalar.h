/*
 * range_coder_scalar.h - one stream of LMCache's CacheGen range coder: the encoder's and the
 * decoder's state and their symbol steps (see codec_range_coder.c for the derivation). Shared by
 * the scalar coder loops and the AVX2 lane-parallel coder, which hands its lanes to these steps
 * for what it does not do itself (the final flush, a long run of pending bits).
 */
#ifndef KVX_CPU_RANGE_CODER_SCALAR_H
#define KVX_CPU_RANGE_CODER_SCALAR_H

#include <stdint.h>

#include "codec_cpu.h"

static inline int clz32(uint32_t x) { return __builtin_clz(x); } /* x != 0 */

/* One stream's tables widened to 32 bits, with the implicit top 65536 at max_symbol + 1. */
typedef struct cdf_tables {
    uint32_t entry[KVX_CODEC_GROUP][KVX_CODEC_MAX_CDF_LEN];
} cdf_tables;

static inline void load_tables(cdf_tables *tables, const uint16_t *cdf, int32_t cdf_len, int width)
{
    for (int g = 0; g < width; g++) {
        const uint16_t *src = cdf + (int64_t)g * cdf_len;
        for (int32_t s = 0; s + 1 < cdf_len; s++)
            tables->entry[g][s] = src[s];
        tables->entry[g][cdf_len - 1] = 0x10000u;
    }
}

/* ---------------------------------------------------------------- encoder */

typedef struct encoder {
    uint32_t low, high;
    uint64_t pending;
    uint64_t acc; /* output bits, the last `nbits` (< 32) of them not yet stored */
    int nbits;
    uint8_t *out;
    int64_t pos, capacity; /* pos keeps counting past capacity to report the size needed */
} encoder;

static inline void store_slow(encoder *e, uint32_t word, int bytes)
{
    for (int i = 0; i < bytes; i++, e->pos++)
        if (e->pos < e->capacity)
            e->out[e->pos] = (uint8_t)(word >> (24 - 8 * i));
}

static inline void store_be32(uint8_t *p, uint32_t word)
{
    p[0] = (uint8_t)(word >> 24);
    p[1] = (uint8_t)(word >> 16);
    p[2] = (uint8_t)(word >> 8);
    p[3] = (uint8_t)word;
}

/* Stores one complete 32-bit word (MSB first) at the stream's position: what fits of it, the
 * position counting all 4 bytes either way. */
static inline void store_word(encoder *e, uint32_t word)
{
    if (e->pos + 4 <= e->capacity) {
        store_be32(e->out + e->pos, word);
        e->pos += 4;
    } else {
        store_slow(e, word, 4);
    }
}

/* Appends the low `count` (0 .. 32) bits of value, MSB first. Branch-free while at least 4
 * bytes of the slot remain: the next word is stored every time and kept only when complete. */
static inline void put_bits(encoder *e, uint64_t value, int count)
{
    uint64_t acc = (e->acc << count) | value;
    int nbits = e->nbits + count; /* <= 63 */
    uint32_t word = (uint32_t)(((acc << 1) << (63 - nbits)) >> 32);
    int full = nbits >= 32;
    if (e->pos + 4 <= e->capacity) {
        store_be32(e->out + e->pos, word);
        e->pos += 4 * full;
    } else if (full) {
        store_slow(e, word, 4);
    }
    e->acc = acc;
    e->nbits = nbits - 32 * full;
}

static inline void put_run(encoder *e, uint32_t bit, uint64_t count)
{
    uint64_t fill = bit ? 0xffffffffu : 0;
    for (; count >= 32; count -= 32)
        put_bits(e, fill, 32);
    put_bits(e, fill & ((1ull << count) - 1), (int)count);
}

/* Emits the n top bits of low with the pending bits right after the first (n may be 0: then
 * nothing is emitted and the pending bits stay pending). */
static inline void emit_top_bits(encoder *e, uint32_t low, int n)
{
    uint64_t pending = e->pending;
    uint32_t first = low >> 31;
    if (pending + (uint64_t)n <= 32) {
        /* Common case, without branches: one put of n + pending bits (or of nothing). */
        int shift = n ? n - 1 : 0;
        uint64_t top = (uint64_t)low >> (32 - n);                 /* n bits; 0 when n == 0 */
        uint64_t rest = top & (((1ull << n) >> 1) - 1);           /* all but the first */
        uint64_t fill = first ? 0 : (1ull << pending) - 1;        /* pending copies of !first */
        uint64_t bits = ((uint64_t)first << (pending + (uint64_t)shift)) | (fill << shift) | rest;
        uint64_t keep = n ? ~0ull : 0;
        put_bits(e, bits & keep, (int)(keep & (uint64_t)(n + (int)pending)));
        e->pending = pending & ~keep;
        return;
    }
    if (!n)
        return;
    put_bits(e, first, 1);
    put_run(e, first ^ 1u, pending);
    e->pending = 0;
    put_bits(e, (low >> (32 - n)) & ((1u << (n - 1)) - 1), n - 1);
}

static inline void encode_symbol(encoder *e, const uint32_t *table, uint8_t s)
{
    uint64_t span = (uint64_t)(e->high - e->low) + 1;
    uint32_t low = e->low;
    uint32_t high = low - 1 + (uint32_t)((span * table[s + 1]) >> 16);
    low += (uint32_t)((span * table[s]) >> 16);
    int n = clz32((low ^ high) | 1u); /* E1/E2: top bits that low and high share */
    emit_top_bits(e, low, n);
    low <<= n;
    high = (high << n) | ((1u << n) - 1);
    /* E3: low = 01..., high = 10... ; bit 0 of ~y is always set, so clz is defined. */
    int k = clz32(~((low & ~high) << 1));
    uint32_t e3 = k ? 0x80000000u : 0u;
    e->pending += (uint64_t)k;
    e->low = (low << k) & ~e3;
    e->high = (high << k) | e3 | ((1u << k) - 1);
}

/* LMCache's final flush: one more pending bit, then the bit that selects the quarter. */
static inline void encode_finish(encoder *e)
{
    uint32_t bit = e->low >= 0x40000000u;
    e->pending += 1;
    put_bits(e, bit, 1);
    put_run(e, bit ^ 1u, e->pending);
    e->pending = 0;
    int bytes = (e->nbits + 7) / 8;
    if (bytes) {
        uint32_t word = (uint32_t)((e->acc << (8 * bytes - e->nbits)) << (32 - 8 * bytes));
        store_slow(e, word, bytes);
    }
}

/* ---------------------------------------------------------------- decoder */

typedef struct decoder {
    uint32_t low, high, value;
    int64_t bitpos; /* next input bit (from the stream's start, MSB first) */
    const uint8_t *src;
    int64_t len;
} decoder;

static inline uint64_t peek_slow(const decoder *d, int64_t byte)
{
    uint64_t word = 0;
    for (int i = 0; i < 8; i++)
        word = (word << 8) | (byte + i < d->len ? d->src[byte + i] : 0u);
    return word;
}

/* The next 57+ input bits MSB-aligned; bytes past the stream's end read as zero. */
static inline uint64_t peek_bits(const decoder *d)
{
    int64_t byte = d->bitpos >> 3;
    uint64_t word;
    if (byte + 8 <= d->len) {
        const uint8_t *p = d->src + byte;
        word = (uint64_t)p[0] << 56 | (uint64_t)p[1] << 48 | (uint64_t)p[2] << 40 |
               (uint64_t)p[3] << 32 | (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 |
               (uint64_t)p[6] << 8 | p[7];
    } else {
        word = peek_slow(d, byte);
    }
    return word << (d->bitpos & 7);
}

static inline void decoder_init(decoder *d, const uint8_t *src, int64_t len)
{
    *d = (decoder){0, 0xffffffffu, 0, 0, src, len};
    d->value = (uint32_t)(peek_bits(d) >> 32);
    d->bitpos = 32;
}

static inline uint8_t decode_symbol(decoder *d, const uint32_t *table, int32_t num_symbols,
                                    int last)
{
    uint64_t span = (uint64_t)(d->high - d->low) + 1;
    uint32_t target = d->value - d->low;
    /* LMCache's count = ((target + 1) * 65536 - 1) / span, in double precision: numerator
     * < 2^48 and span <= 2^32 are exact, and a quotient just below an integer k stays below k
     * (it is at least 1/span = 2^-32 away, above double's 2^-53 relative rounding), so the
     * truncation is exact. A double division pipelines; a 64-bit integer one does not. */
    double quotient = (double)((((uint64_t)target + 1) << 16) - 1) / (double)span;
    /* Only a damaged stream (value outside [low, high]) gives a count above 65535; LMCache
     * would truncate it to 16 bits, kvx clamps it. Valid streams decode identically. */
    int32_t count = quotient < 65536.0 ? (int32_t)quotient : 65536;
    /* The symbol: how many lower edges after the first are <= count (vectorises). */
    int32_t s32 = 0;
    for (int32_t j = 1; j < num_symbols; j++)
        s32 += (int32_t)table[j] <= count;
    uint8_t s = (uint8_t)s32;
    if (last)
        return s;
    uint32_t low = d->low;
    uint32_t high = low - 1 + (uint32_t)((span * table[s + 1]) >> 16);
    low += (uint32_t)((span * table[s]) >> 16);
    int n = clz32((low ^ high) | 1u);
    low <<= n;
    high = (high << n) | ((1u << n) - 1);
    int k = clz32(~((low & ~high) << 1));
    uint32_t e3 = k ? 0x80000000u : 0u;
    d->low = (low << k) & ~e3;
    d->high = (high << k) | e3 | ((1u << k) - 1);
    /* n + k <= 18 (see the top of the file); peek_bits gives at least 57. */
    int m = n + k;
    uint32_t bits = (uint32_t)((peek_bits(d) >> 1) >> (63 - m));
    d->bitpos += m;
    /* k E3 steps map value to ((value << k) | bits) + 2^31 (mod 2^32), whatever value is. */
    d->value = ((uint32_t)((uint64_t)d->value << m) | bits) ^ e3;
    return s;
}

#endif /* KVX_CPU_RANGE_CODER_SCALAR_H */
