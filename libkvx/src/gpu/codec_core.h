/*
 * codec_core.h - the per-token and per-stream logic of the GPU codec, as inline functions that
 * compile for the device (nvcc, hipcc) and for the host (g++, so that tests/test_gpu_codec_core.py
 * can run exactly this logic against the CPU backend and LMCache's golden vectors without a GPU).
 *
 * The kernels in codec_quantize.cu and codec_coder.cu only distribute work (which thread takes
 * which channels, tokens or stream) and report errors; every value they write comes from here.
 *
 * Bit-exactness needs float32 operations rounded one at a time: the build passes --fmad=false
 * (nvcc) or -ffp-contract=off (hipcc), and a host compiler including this file must pass
 * -ffp-contract=off too (g++ fuses `a * b` and `+ c` across statements by default).
 *
 * The range coder is LMCache's (see src/cpu/codec_range_coder.c for the derivation of the
 * count-leading-zeros renormalisation). It is written here for one stream per thread, with two
 * changes of form, not of result, for GPUs:
 *
 * - The encoder gathers bits in a 64-bit accumulator and stages them, 4 bytes at a time, in a
 *   small ring (KVX_CC_STAGE_BYTES, in shared memory on a GPU) instead of storing them to the
 *   stream's slot: neighbouring threads' slots lie `capacity` bytes apart, so storing each word
 *   as it comes makes one partial memory sector per thread and word. The kernel writes the rings
 *   out for the whole block, and a thread whose ring is full writes its own (kvx_cc_drain, in
 *   16-byte pieces where the slot allows). Nothing is written past the stream's end or slot.
 * - The decoder's count, a 64-bit division per symbol in LMCache (a long software routine on
 *   GPUs), comes from a float estimate and an exact integer correction (kvx_cc_count).
 *
 * The decoder reads through a 64-bit bit buffer and treats bytes past the stream's end as zero.
 */
#ifndef KVX_GPU_CODEC_CORE_H
#define KVX_GPU_CODEC_CORE_H

#include <math.h>
#include <stdint.h>

#include "kvx.h"
#include "../core/half.h"

#if defined(__CUDACC__) || defined(__HIPCC__)
#define KVX_HOST_DEVICE __host__ __device__ static inline
#else
#define KVX_HOST_DEVICE static inline
#endif

KVX_HOST_DEVICE int kvx_cc_clz32(uint32_t x) /* x != 0 */
{
#if defined(__CUDA_ARCH__)
    return __clz((int)x);
#else
    return __builtin_clz(x); /* gcc, and clang for the host and for AMD GPUs */
#endif
}

/* word with its most significant byte first in memory: GPUs and the hosts kvx runs on are
 * little-endian. */
KVX_HOST_DEVICE uint32_t kvx_cc_msb_first(uint32_t word)
{
#if defined(__CUDA_ARCH__)
    return __byte_perm(word, 0, 0x0123);
#else
    return __builtin_bswap32(word);
#endif
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kvx_cc_msb_first assumes a little-endian target"
#endif

/* ================================================================ quantization */

/* |x[c]| as the magnitude bits of its dtype: they order like the values, and infinities and
 * NaNs are the largest (>= kvx_cc_inf_bits), so an integer max finds both the scale and any
 * non-finite value, in any order of reduction. */
KVX_HOST_DEVICE uint32_t kvx_cc_magnitude(const void *x, int32_t dtype, int64_t c)
{
    if (dtype == KVX_DTYPE_FLOAT32)
        return ((const uint32_t *)x)[c] & 0x7fffffffu;
    return ((const uint16_t *)x)[c] & 0x7fffu;
}

KVX_HOST_DEVICE uint32_t kvx_cc_inf_bits(int32_t dtype)
{
    return dtype == KVX_DTYPE_FLOAT32    ? 0x7f800000u
           : dtype == KVX_DTYPE_BFLOAT16 ? 0x7f80u
                                         : 0x7c00u;
}

/* The float32 value of magnitude bits (the scale, exact in every input dtype). */
KVX_HOST_DEVICE float kvx_cc_from_bits(uint32_t bits, int32_t dtype)
{
    if (dtype == KVX_DTYPE_FLOAT32)
        return kvx_bits_to_f32(bits);
    return dtype == KVX_DTYPE_BFLOAT16 ? kvx_bf16_to_f32((uint16_t)bits)
                                       : kvx_f16_to_f32((uint16_t)bits);
}

KVX_HOST_DEVICE float kvx_cc_load(const void *x, int32_t dtype, int64_t c)
{
    if (dtype == KVX_DTYPE_FLOAT32)
        return ((const float *)x)[c];
    return kvx_cc_from_bits(((const uint16_t *)x)[c], dtype);
}

KVX_HOST_DEVICE void kvx_cc_store(void *out, int32_t dtype, int64_t c, float v)
{
    if (dtype == KVX_DTYPE_FLOAT32)
        ((float *)out)[c] = v;
    else if (dtype == KVX_DTYPE_BFLOAT16)
        ((uint16_t *)out)[c] = kvx_f32_to_bf16(v);
    else
        ((uint16_t *)out)[c] = kvx_f32_to_f16(v);
}

/* Max magnitude bits over channels first, first + step, ... < n: one thread's share of a
 * token (first = thread index, step = threads), or the whole token (0, 1). */
KVX_HOST_DEVICE uint32_t kvx_cc_max_magnitude(const void *x, int32_t dtype, int64_t n,
                                              int64_t first, int64_t step)
{
    uint32_t m = 0;
    for (int64_t c = first; c < n; c += step) {
        uint32_t v = kvx_cc_magnitude(x, dtype, c);
        m = v > m ? v : m;
    }
    return m;
}

/* LMCache's two roundings, product then sum, each to float32; then round half to even (the
 * sum lies in [-1, 2 * MAX + 1], where rintf and the CPU's magic-number rounding agree).
 * When MAX / scale overflows (a scale below about 4e-37, float32 or bfloat16 input) the sum is
 * infinite or NaN: the CPU backend's conversion then gives INT_MIN on x86, so symbol 0, while a
 * GPU's saturates (255 for +inf). Spelling out the x86 result keeps the backends identical and
 * the conversion defined. */
KVX_HOST_DEVICE uint8_t kvx_cc_quantize_value(float x, float factor, float max)
{
    float product = x * factor;
    float shifted = product + max;
    float rounded = rintf(shifted);
    return rounded >= -2147483648.0f && rounded < 2147483648.0f ? (uint8_t)(int32_t)rounded : 0;
}

/* Symbols of channels first, first + step, ... < n of a token whose scale is finite. */
KVX_HOST_DEVICE void kvx_cc_quantize_channels(const void *x, int32_t dtype, int64_t n,
                                              int64_t first, int64_t step, int32_t max_int,
                                              float scale, uint8_t *out)
{
    float max = (float)max_int;
    if (scale == 0.0f) { /* all zeros: the zero symbol (LMCache would produce NaN) */
        for (int64_t c = first; c < n; c += step)
            out[c] = (uint8_t)max_int;
        return;
    }
    float factor = max / scale;
    for (int64_t c = first; c < n; c += step)
        out[c] = kvx_cc_quantize_value(kvx_cc_load(x, dtype, c), factor, max);
}

/* A whole token on one thread: 0 after writing its symbols and *scale, or 1 (nothing written)
 * when it holds an infinity or a NaN. */
KVX_HOST_DEVICE int kvx_cc_quantize_token(const void *x, int32_t dtype, int64_t n, int32_t max_int,
                                          uint8_t *out, float *scale)
{
    uint32_t bits = kvx_cc_max_magnitude(x, dtype, n, 0, 1);
    if (bits >= kvx_cc_inf_bits(dtype))
        return 1;
    *scale = kvx_cc_from_bits(bits, dtype);
    kvx_cc_quantize_channels(x, dtype, n, 0, 1, max_int, *scale, out);
    return 0;
}

/* (s - MAX) / MAX as LMCache computes it; symbols above 2 * MAX (only a forged stream has
 * them) decode as 2 * MAX, like the CPU backend, so values stay within [-scale, scale]. */
KVX_HOST_DEVICE float kvx_cc_level(uint8_t s, int32_t max_int)
{
    int32_t v = s <= 2 * max_int ? (int32_t)s : 2 * max_int;
    float max = (float)max_int;
    return ((float)v - max) / max;
}

KVX_HOST_DEVICE void kvx_cc_dequantize_channels(const uint8_t *symbols, float scale,
                                                int32_t max_int, int32_t dtype, void *out,
                                                int64_t n, int64_t first, int64_t step)
{
    for (int64_t c = first; c < n; c += step)
        kvx_cc_store(out, dtype, c, kvx_cc_level(symbols[c], max_int) * scale);
}

/* ================================================================ CDF */

/* counts[0 .. num_bins - 1] (symbol histogram) becomes below[0 .. num_bins]: the number of
 * symbols < s. counts must have num_bins + 1 entries. */
KVX_HOST_DEVICE void kvx_cc_counts_to_below(uint32_t *counts, int32_t num_bins)
{
    uint32_t below = 0;
    for (int32_t s = 0; s <= num_bins; s++) {
        uint32_t here = s < num_bins ? counts[s] : 0;
        counts[s] = below;
        below += here;
    }
}

/* LMCache's calculate_cdf entry: (65535 - num_bins) * below / num_tokens + s. */
KVX_HOST_DEVICE uint16_t kvx_cc_cdf_entry(uint32_t below, int32_t num_bins, int64_t num_tokens,
                                          int32_t s)
{
    uint64_t norm = num_tokens ? (uint64_t)(0xffff - num_bins) * below / (uint64_t)num_tokens : 0;
    return (uint16_t)(norm + (uint64_t)s);
}

/* One (layer, channel) table on one thread: symbols[t * stride], t < num_tokens; counts is
 * scratch of num_bins + 1 entries. Returns -1, or the first token whose symbol is >= num_bins
 * (that symbol is not counted). */
KVX_HOST_DEVICE int64_t kvx_cc_cdf_column(const uint8_t *symbols, int64_t stride,
                                          int64_t num_tokens, int32_t num_bins, uint32_t *counts,
                                          uint16_t *out)
{
    int64_t bad = -1;
    for (int32_t s = 0; s <= num_bins; s++)
        counts[s] = 0;
    for (int64_t t = 0; t < num_tokens; t++) {
        uint8_t s = symbols[t * stride];
        if (s < num_bins)
            counts[s]++;
        else if (bad < 0)
            bad = t;
    }
    kvx_cc_counts_to_below(counts, num_bins);
    for (int32_t s = 0; s <= num_bins; s++)
        out[s] = kvx_cc_cdf_entry(counts[s], num_bins, num_tokens, s);
    return bad;
}

/* -1 if entries 0 .. cdf_len - 2 strictly increase (what keeps the coder's range from
 * collapsing, whatever the symbols and bytes), else the first s with cdf[s] >= cdf[s + 1]. */
KVX_HOST_DEVICE int32_t kvx_cc_cdf_bad_entry(const uint16_t *cdf, int32_t cdf_len)
{
    for (int32_t s = 0; s + 2 < cdf_len; s++)
        if (cdf[s] >= cdf[s + 1])
            return s;
    return -1;
}

/* Upper edge of symbol s: the implicit 65536 after the last symbol (cdf_len - 2). */
KVX_HOST_DEVICE uint32_t kvx_cc_upper_edge(const uint16_t *cdf, int32_t cdf_len, int32_t s)
{
    return s + 2 == cdf_len ? 0x10000u : cdf[s + 1];
}

/* ================================================================ range coder: shared */

/* One symbol's step, shared by the encoder and the decoder: narrow [low, high] to the symbol's
 * edges, then renormalise. The n top bits that low and high now share are settled (E1/E2: the
 * encoder emits them), then k "straddling the middle" steps follow (E3: owed as pending bits). */
typedef struct kvx_cc_step {
    uint32_t settled; /* low right after narrowing: its top n bits are settled */
    int n, k;
    uint32_t e3;
} kvx_cc_step;

KVX_HOST_DEVICE kvx_cc_step kvx_cc_narrow(uint32_t *low_io, uint32_t *high_io, uint32_t lo_edge,
                                          uint32_t hi_edge)
{
    kvx_cc_step st;
    uint64_t span = (uint64_t)(*high_io - *low_io) + 1;
    uint32_t low = *low_io;
    uint32_t high = low - 1 + (uint32_t)((span * hi_edge) >> 16);
    low += (uint32_t)((span * lo_edge) >> 16);
    st.settled = low;
    st.n = kvx_cc_clz32((low ^ high) | 1u); /* E1/E2: top bits low and high share */
    low <<= st.n;
    high = (high << st.n) | ((1u << st.n) - 1);
    /* E3: low = 01..., high = 10...; bit 0 of the operand is always set, so clz is defined. */
    st.k = kvx_cc_clz32(~((low & ~high) << 1));
    st.e3 = st.k ? 0x80000000u : 0u;
    *low_io = (low << st.k) & ~st.e3;
    *high_io = (high << st.k) | st.e3 | ((1u << st.k) - 1);
    return st;
}

/* ================================================================ range coder: encoder */

/* The encoder's staging ring: stream byte q waits at byte q % KVX_CC_STAGE_BYTES until it is
 * written to the slot. A power of two (a cheap modulo), at least 4. 128 bytes hold what a stream
 * emits in 56 tokens at the most (18 bits a symbol), pending bits aside. */
#define KVX_CC_STAGE_BYTES 128

typedef struct kvx_cc_encoder {
    uint32_t low, high;
    uint64_t pending; /* E3 bits owed: the complement of the next settled bit */
    uint64_t acc;     /* output bits; the last `nbits` (< 32) not yet staged */
    int nbits;
    uint32_t *stage; /* the ring, KVX_CC_STAGE_BYTES / 4 words, bytes in stream order */
    uint8_t *out;    /* the slot */
    /* out holds the stream's bytes < flushed, the ring those from flushed to min(pos, capacity);
     * pos keeps counting past capacity: the size the stream needs. */
    int64_t flushed, pos, capacity;
} kvx_cc_encoder;

/* 16 bytes, for one wide store. */
struct alignas(16) kvx_cc_v16 {
    uint32_t w[4];
};

KVX_HOST_DEVICE void kvx_cc_encoder_init(kvx_cc_encoder *e, uint32_t *stage, uint8_t *out,
                                         int64_t capacity)
{
    e->low = 0;
    e->high = 0xffffffffu;
    e->pending = 0;
    e->acc = 0;
    e->nbits = 0;
    e->stage = stage;
    e->out = out;
    e->flushed = 0;
    e->pos = 0;
    e->capacity = capacity;
}

/* Stream byte q, and bytes q .. q + 3 as one word in memory order (any q: a word that straddles
 * two of the ring's words is shifted together from both), as they wait in the ring. */
KVX_HOST_DEVICE uint8_t kvx_cc_staged_byte(const uint32_t *stage, int64_t q)
{
    return ((const uint8_t *)stage)[(uint64_t)q % KVX_CC_STAGE_BYTES];
}

KVX_HOST_DEVICE uint32_t kvx_cc_staged_word(const uint32_t *stage, int64_t q)
{
    const uint64_t words = KVX_CC_STAGE_BYTES / 4, word = (uint64_t)q / 4;
    const int shift = (int)((uint64_t)q % 4) * 8;
    const uint32_t lo = stage[word % words];
    if (!shift)
        return lo;
    return (lo >> shift) | (stage[(word + 1) % words] << (32 - shift)); /* little-endian */
}

/* Where the staged bytes end: bytes past the slot are counted, never kept. */
KVX_HOST_DEVICE int64_t kvx_cc_staged_end(const kvx_cc_encoder *e)
{
    return e->pos < e->capacity ? e->pos : e->capacity;
}

/* The thread writes its staged bytes to its slot itself, up to min(pos, capacity): 16 bytes a
 * store where the address is 16-byte aligned, 4 where it is 4-byte aligned, else 1. */
KVX_HOST_DEVICE void kvx_cc_drain(kvx_cc_encoder *e)
{
    const int64_t end = kvx_cc_staged_end(e);
    int64_t q = e->flushed;
    while (q < end) {
        uint8_t *to = e->out + q;
        if (((uintptr_t)to & 15) == 0 && end - q >= 16) {
            kvx_cc_v16 v;
            for (int j = 0; j < 4; j++)
                v.w[j] = kvx_cc_staged_word(e->stage, q + 4 * j);
            *(kvx_cc_v16 *)to = v;
            q += 16;
        } else if (((uintptr_t)to & 3) == 0 && end - q >= 4) {
            *(uint32_t *)to = kvx_cc_staged_word(e->stage, q);
            q += 4;
        } else {
            *to = kvx_cc_staged_byte(e->stage, q);
            q += 1;
        }
    }
    e->flushed = end;
}

/* The top `bytes` (1 .. 4) bytes of word at stream position pos, a multiple of 4 (only the final
 * store has fewer than 4 bytes): one whole word of the ring, all 4 bytes, though those past
 * pos + bytes or the capacity are never written out. A full ring is drained first. */
KVX_HOST_DEVICE void kvx_cc_store_bytes(kvx_cc_encoder *e, uint32_t word, int bytes)
{
    if (e->pos < e->capacity) {
        if (e->pos + 4 - e->flushed > KVX_CC_STAGE_BYTES)
            kvx_cc_drain(e);
        e->stage[(uint64_t)e->pos % KVX_CC_STAGE_BYTES / 4] = kvx_cc_msb_first(word);
    }
    e->pos += bytes;
}

/* Appends the low `count` (0 .. 32) bits of value (value < 2^count), MSB first. */
KVX_HOST_DEVICE void kvx_cc_put_bits(kvx_cc_encoder *e, uint64_t value, int count)
{
    e->acc = (e->acc << count) | value;
    e->nbits += count; /* <= 63 */
    if (e->nbits >= 32) {
        e->nbits -= 32;
        kvx_cc_store_bytes(e, (uint32_t)(e->acc >> e->nbits), 4);
    }
}

KVX_HOST_DEVICE void kvx_cc_put_run(kvx_cc_encoder *e, uint32_t bit, uint64_t count)
{
    uint64_t fill = bit ? 0xffffffffu : 0;
    for (; count >= 32; count -= 32)
        kvx_cc_put_bits(e, fill, 32);
    kvx_cc_put_bits(e, fill & ((1ull << count) - 1), (int)count);
}

/* The n (0 .. 31) top bits of low, with the pending bits after the first of them. */
KVX_HOST_DEVICE void kvx_cc_emit(kvx_cc_encoder *e, uint32_t low, int n)
{
    if (!n)
        return;
    uint32_t first = low >> 31;
    kvx_cc_put_bits(e, first, 1);
    kvx_cc_put_run(e, first ^ 1u, e->pending);
    e->pending = 0;
    kvx_cc_put_bits(e, (low >> (32 - n)) & ((1u << (n - 1)) - 1), n - 1);
}

KVX_HOST_DEVICE void kvx_cc_encode_symbol(kvx_cc_encoder *e, const uint16_t *cdf, int32_t cdf_len,
                                          uint8_t s)
{
    kvx_cc_step st = kvx_cc_narrow(&e->low, &e->high, cdf[s], kvx_cc_upper_edge(cdf, cdf_len, s));
    kvx_cc_emit(e, st.settled, st.n);
    e->pending += (uint64_t)st.k;
}

/* LMCache's final flush: one more pending bit, then the bit that selects the quarter; then the
 * partial last byte, zero-padded. */
KVX_HOST_DEVICE void kvx_cc_encode_finish(kvx_cc_encoder *e)
{
    uint32_t bit = e->low >= 0x40000000u;
    e->pending += 1;
    kvx_cc_put_bits(e, bit, 1);
    kvx_cc_put_run(e, bit ^ 1u, e->pending);
    e->pending = 0;
    int bytes = (e->nbits + 7) / 8;
    if (bytes) {
        uint32_t word = (uint32_t)((e->acc << (8 * bytes - e->nbits)) << (32 - 8 * bytes));
        kvx_cc_store_bytes(e, word, bytes);
    }
}

/* Encodes symbols[t * stride], first <= t < last. Returns -1, or the first token whose symbol is
 * above cdf_len - 2 (encoding stops there). */
KVX_HOST_DEVICE int64_t kvx_cc_encode_tokens(kvx_cc_encoder *e, const uint16_t *cdf,
                                             int32_t cdf_len, const uint8_t *symbols,
                                             int64_t stride, int64_t first, int64_t last)
{
    for (int64_t t = first; t < last; t++) {
        uint8_t s = symbols[t * stride];
        if (s + 2 > cdf_len)
            return t;
        kvx_cc_encode_symbol(e, cdf, cdf_len, s);
    }
    return -1;
}

/* Encodes symbols[t * stride], t < num_tokens, with one table into out[capacity], on one thread
 * (its ring on its stack). Returns -1 with *needed = the stream's size (it fits when <= capacity;
 * bytes beyond capacity are not written), or the first token whose symbol is above cdf_len - 2
 * (encoding stops there; what was written of the stream is unspecified). */
KVX_HOST_DEVICE int64_t kvx_cc_encode_stream(const uint16_t *cdf, int32_t cdf_len,
                                             const uint8_t *symbols, int64_t stride,
                                             int64_t num_tokens, uint8_t *out, int64_t capacity,
                                             int64_t *needed)
{
    uint32_t stage[KVX_CC_STAGE_BYTES / 4];
    kvx_cc_encoder e;
    kvx_cc_encoder_init(&e, stage, out, capacity);
    int64_t bad = kvx_cc_encode_tokens(&e, cdf, cdf_len, symbols, stride, 0, num_tokens);
    if (bad >= 0) {
        *needed = 0;
        return bad;
    }
    kvx_cc_encode_finish(&e);
    kvx_cc_drain(&e);
    *needed = e.pos;
    return -1;
}

/* ================================================================ range coder: decoder */

typedef struct kvx_cc_decoder {
    uint32_t low, high, value;
    uint64_t buf; /* next input bits, MSB-aligned; `avail` of them are valid */
    int avail;
    const uint8_t *src;
    int64_t len, pos; /* pos: next byte to load (past len: zeros) */
} kvx_cc_decoder;

/* The next m (1 .. 32) input bits. */
KVX_HOST_DEVICE uint32_t kvx_cc_take_bits(kvx_cc_decoder *d, int m)
{
    while (d->avail <= 56) {
        uint64_t byte = d->pos < d->len ? d->src[d->pos] : 0u;
        d->buf |= byte << (56 - d->avail);
        d->avail += 8;
        d->pos++;
    }
    uint32_t bits = (uint32_t)(d->buf >> (64 - m));
    d->buf <<= m;
    d->avail -= m;
    return bits;
}

KVX_HOST_DEVICE void kvx_cc_decoder_init(kvx_cc_decoder *d, const uint8_t *src, int64_t len)
{
    d->low = 0;
    d->high = 0xffffffffu;
    d->buf = 0;
    d->avail = 0;
    d->src = src;
    d->len = len;
    d->pos = 0;
    d->value = kvx_cc_take_bits(d, 32);
}

/* An estimate of x / y (y >= 1) within 2 ulp: CUDA's fast division where there is one. */
KVX_HOST_DEVICE float kvx_cc_divide_estimate(float x, float y)
{
#if defined(__CUDA_ARCH__)
    return __fdividef(x, y);
#else
    return x / y;
#endif
}

/* q = floor(num / span) from an estimate within 1 of it (num < 2^48, span <= 2^32): the remainder
 * num - q * span, exact in 64 bits, moves q by one step to where 0 <= remainder < span. */
KVX_HOST_DEVICE int32_t kvx_cc_correct_quotient(uint64_t num, uint64_t span, int64_t estimate)
{
    int64_t remainder = (int64_t)num - estimate * (int64_t)span;
    if (remainder < 0)
        return (int32_t)(estimate - 1);
    return (int32_t)(remainder >= (int64_t)span ? estimate + 1 : estimate);
}

/* LMCache's count, floor(((target + 1) * 2^16 - 1) / span) for span = high - low + 1 (1 .. 2^32)
 * and target = value - low (mod 2^32), exactly but without dividing 64-bit integers: that is a
 * long software routine on GPUs, here once per symbol. A damaged stream (value outside
 * [low, high], so target >= span) is the only way to a quotient above 65535; LMCache would
 * truncate it to 16 bits, kvx clamps it to 65536. Otherwise the quotient is below 2^16 and the
 * float estimate is within 1 of it: rounding num and span to float (2^-24 each, relative) and
 * the division (2 ulp, 2^-22) make a relative error below 2^-21, so the estimate is off by less
 * than 2^16 * 2^-21 = 1/32 and its truncation by at most 1 (no contraction can enter: there is
 * no addition). */
KVX_HOST_DEVICE int32_t kvx_cc_count(uint32_t target, uint64_t span)
{
    if (target >= span)
        return 65536;
    uint64_t num = (((uint64_t)target + 1) << 16) - 1;
    int64_t estimate = (int64_t)kvx_cc_divide_estimate((float)num, (float)span);
    return kvx_cc_correct_quotient(num, span, estimate);
}

/* The largest s in 1 .. cdf_len - 2 with cdf[s] <= count, else 0: for a strictly increasing
 * table, the CPU backend's count of edges <= count, found in log2(cdf_len) reads. */
KVX_HOST_DEVICE int32_t kvx_cc_find_symbol(const uint16_t *cdf, int32_t cdf_len, int32_t count)
{
    int32_t lo = 0, hi = cdf_len - 2;
    while (lo < hi) {
        int32_t mid = (lo + hi + 1) / 2;
        if ((int32_t)cdf[mid] <= count)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

KVX_HOST_DEVICE uint8_t kvx_cc_decode_symbol(kvx_cc_decoder *d, const uint16_t *cdf,
                                             int32_t cdf_len, int last)
{
    uint64_t span = (uint64_t)(d->high - d->low) + 1;
    int32_t s = kvx_cc_find_symbol(cdf, cdf_len, kvx_cc_count(d->value - d->low, span));
    if (last) /* LMCache does not renormalise after the last symbol */
        return (uint8_t)s;
    kvx_cc_step st = kvx_cc_narrow(&d->low, &d->high, cdf[s], kvx_cc_upper_edge(cdf, cdf_len, s));
    int m = st.n + st.k; /* <= 18 for a strictly increasing table */
    uint32_t bits = m ? kvx_cc_take_bits(d, m) : 0u;
    /* k E3 steps map value to ((value << k) | bits) + 2^31 (mod 2^32), whatever value is. */
    d->value = ((uint32_t)((uint64_t)d->value << m) | bits) ^ st.e3;
    return (uint8_t)s;
}

/* Where stream i lies: slot i of `capacity` bytes holding lengths[i] (0 .. capacity), or,
 * without lengths, end_offsets[i - 1] (0 for i = 0) .. end_offsets[i] within num_bytes. Returns
 * 0, or 1 when the length or offsets are out of range (start and len are then not set). Checking
 * each stream's own two offsets is the CPU backend's "non-decreasing, at most num_bytes" check,
 * stream by stream. */
KVX_HOST_DEVICE int kvx_cc_stream_extent(const int32_t *lengths, const int64_t *end_offsets,
                                         int64_t capacity, int64_t num_bytes, int64_t i,
                                         int64_t *start, int64_t *len)
{
    if (lengths) {
        if (lengths[i] < 0 || lengths[i] > capacity)
            return 1;
        *start = i * capacity;
        *len = lengths[i];
        return 0;
    }
    int64_t begin = i ? end_offsets[i - 1] : 0, end = end_offsets[i];
    if (begin < 0 || end < begin || end > num_bytes)
        return 1;
    *start = begin;
    *len = end - begin;
    return 0;
}

/* Decodes num_tokens symbols into out[t * stride] from src[len] (a strictly increasing table:
 * check it with kvx_cc_cdf_bad_entry first). */
KVX_HOST_DEVICE void kvx_cc_decode_stream(const uint16_t *cdf, int32_t cdf_len, const uint8_t *src,
                                          int64_t len, int64_t num_tokens, uint8_t *out,
                                          int64_t stride)
{
    kvx_cc_decoder d;
    kvx_cc_decoder_init(&d, src, len);
    for (int64_t t = 0; t < num_tokens; t++)
        out[t * stride] = kvx_cc_decode_symbol(&d, cdf, cdf_len, t == num_tokens - 1);
}

#endif /* KVX_GPU_CODEC_CORE_H */
