/*
 * codec_range_coder.c - LMCache's CacheGen range coder on the CPU, bit-exact.
 *
 * The coder keeps a 32-bit [low, high] range; each symbol narrows it to
 * [low + (span * cdf[s]) >> 16, low + (span * cdf[s + 1]) >> 16 - 1] (cdf[max_symbol + 1] =
 * 65536), then renormalises bit by bit: equal top bits are emitted (E1/E2) and "straddling the
 * middle" bits are deferred as pending bits (E3). LMCache does this one bit per loop iteration;
 * here each renormalisation is two count-leading-zeros steps, which give the same bits: the E1/E2
 * shifts (one per leading bit that low and high share) all come first, and after an E3 shift
 * E1/E2 can no longer apply (E3 keeps low's top bit 0 and high's 1). The decoder computes LMCache's
 * count = ((value - low + 1) * 65536 - 1) / span with a double-precision division (exact here, and
 * pipelined unlike a 64-bit integer one) and finds the symbol by counting the CDF edges <= count in
 * a loop the compiler vectorises.
 *
 * Invariants that make hostile input harmless: with strictly increasing CDF tables, the range
 * evolves from the symbols alone (never from the input bytes), stays above 2^30 after each
 * renormalisation and above 2^14 after each narrowing, so one symbol moves at most 18 bits. Bytes
 * past a stream's end read as zero; output never goes past a stream's slot.
 *
 * A work item is one layer and KVX_CODEC_GROUP consecutive channels: the streams are independent,
 * so interleaving them token by token overlaps their dependency chains and reads the symbols of a
 * token as one contiguous run.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "codec_cpu.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* The coder loops are compiled twice, for the baseline instruction set and for AVX2 (wider
 * compares in the decoder's symbol search), and picked per call (kvx_cpu_avx2_allowed, so that
 * KVX_CPU_ISA=baseline lets the tests run both). Both compute the same integers. */
#if defined(__x86_64__) && defined(__GNUC__)
#define CODER_AVX2 1
#define ATTR_AVX2 __attribute__((target("avx2")))
#endif

#if CODER_AVX2
#define DEFINE_RANGE_VARIANTS(name)                                                            \
    static void name##_baseline(void *ctx, int64_t begin, int64_t end)                        \
    {                                                                                         \
        name##_body(ctx, begin, end);                                                         \
    }                                                                                         \
    ATTR_AVX2 static void name##_avx2(void *ctx, int64_t begin, int64_t end)                  \
    {                                                                                         \
        name##_body(ctx, begin, end);                                                         \
    }                                                                                         \
    static kvx_range_fn name##_variant(void)                                                  \
    {                                                                                         \
        return kvx_cpu_avx2_allowed() ? name##_avx2 : name##_baseline;                        \
    }
#else
#define DEFINE_RANGE_VARIANTS(name)                                                            \
    static void name##_baseline(void *ctx, int64_t begin, int64_t end)                        \
    {                                                                                         \
        name##_body(ctx, begin, end);                                                         \
    }                                                                                         \
    static kvx_range_fn name##_variant(void) { return name##_baseline; }
#endif

static inline int clz32(uint32_t x) { return __builtin_clz(x); } /* x != 0 */

/* One stream's tables widened to 32 bits, with the implicit top 65536 at max_symbol + 1. */
typedef struct cdf_tables {
    uint32_t entry[KVX_CODEC_GROUP][KVX_CODEC_MAX_CDF_LEN];
} cdf_tables;

static void load_tables(cdf_tables *tables, const uint16_t *cdf, int32_t cdf_len, int width)
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

static void store_slow(encoder *e, uint32_t word, int bytes)
{
    for (int i = 0; i < bytes; i++, e->pos++)
        if (e->pos < e->capacity)
            e->out[e->pos] = (uint8_t)(word >> (24 - 8 * i));
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
        uint8_t *p = e->out + e->pos;
        p[0] = (uint8_t)(word >> 24);
        p[1] = (uint8_t)(word >> 16);
        p[2] = (uint8_t)(word >> 8);
        p[3] = (uint8_t)word;
        e->pos += 4 * full;
    } else if (full) {
        store_slow(e, word, 4);
    }
    e->acc = acc;
    e->nbits = nbits - 32 * full;
}

static void put_run(encoder *e, uint32_t bit, uint64_t count)
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
static void encode_finish(encoder *e)
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

typedef struct encode_job {
    const uint16_t *cdf;
    int32_t cdf_len;
    const uint8_t *symbols;
    int64_t num_tokens, num_channels, groups;
    uint8_t *streams;
    int64_t capacity;
    int32_t *lengths;
    _Atomic int64_t overflow_stream; /* a stream that did not fit, or -1 */
    _Atomic int64_t overflow_needed;
} encode_job;

static ALWAYS_INLINE void encode_group(encode_job *job, int64_t layer, int64_t c0, int width)
{
    cdf_tables tables;
    encoder enc[KVX_CODEC_GROUP];
    int64_t first = layer * job->num_channels + c0; /* stream index of channel c0 */
    load_tables(&tables, job->cdf + first * job->cdf_len, job->cdf_len, width);
    for (int g = 0; g < width; g++)
        enc[g] = (encoder){0, 0xffffffffu,  0, 0, 0, job->streams + (first + g) * job->capacity,
                           0, job->capacity};
    /* Zero tokens may come with NULL symbols, and C defines no offset from NULL, not even 0. */
    const uint8_t *row = job->num_tokens == 0
                             ? NULL
                             : job->symbols + layer * job->num_tokens * job->num_channels + c0;
    for (int64_t t = 0; t < job->num_tokens; t++, row += job->num_channels)
        for (int g = 0; g < width; g++)
            encode_symbol(&enc[g], tables.entry[g], row[g]);
    for (int g = 0; g < width; g++) {
        encode_finish(&enc[g]);
        if (enc[g].pos > enc[g].capacity) {
            atomic_store(&job->overflow_needed, enc[g].pos);
            atomic_store(&job->overflow_stream, first + g);
        }
        job->lengths[first + g] = (int32_t)(enc[g].pos < job->capacity ? enc[g].pos
                                                                       : job->capacity);
    }
}

static ALWAYS_INLINE void encode_range_body(void *ctx, int64_t begin, int64_t end)
{
    encode_job *job = ctx;
    for (int64_t i = begin; i < end; i++) {
        int64_t layer = i / job->groups, c0 = (i % job->groups) * KVX_CODEC_GROUP;
        int64_t left = job->num_channels - c0;
        encode_group(job, layer, c0, left < KVX_CODEC_GROUP ? (int)left : KVX_CODEC_GROUP);
    }
}

DEFINE_RANGE_VARIANTS(encode_range)

int32_t kvx_cpu_codec_encode(const kvx_codec_encode_args *args, const kvx_stream *stream)
{
    (void)stream;
    int32_t rc;
    if ((rc = kvx_cpu_codec_check_cdf(args->cdf, args->cdf_len,
                                      args->num_layers * args->num_channels)) ||
        (rc = kvx_cpu_codec_check_symbols(args->symbols, args->num_layers, args->num_tokens,
                                          args->num_channels, args->cdf_len - 2, "symbols")))
        return rc;
    int64_t groups = (args->num_channels + KVX_CODEC_GROUP - 1) / KVX_CODEC_GROUP;
    /* The lengths land in the caller's array only once every stream has fit: a failed call
     * leaves them as they were (the slots themselves are the caller's scratch). */
    size_t lengths_bytes = (size_t)(args->num_layers * args->num_channels) * sizeof(int32_t);
    int32_t *lengths = malloc(lengths_bytes ? lengths_bytes : 1);
    if (!lengths)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "encode: cannot allocate %zu bytes of lengths",
                        lengths_bytes);
    encode_job job = {
        args->cdf, args->cdf_len, args->symbols,         args->num_tokens, args->num_channels,
        groups,    args->streams, args->stream_capacity, lengths,          -1,
        0};
    kvx_parallel_for(args->num_layers * groups, 1, encode_range_variant(), &job);
    int64_t bad = atomic_load(&job.overflow_stream);
    if (bad < 0 && lengths_bytes)
        memcpy(args->lengths, lengths, lengths_bytes);
    free(lengths);
    if (bad >= 0)
        return kvx_fail(KVX_ERR_BUFFER_TOO_SMALL,
                        "stream_capacity: stream %lld (layer %lld, channel %lld) needs %lld "
                        "bytes, got %lld (kvx_codec_stream_bound gives a safe capacity)",
                        (long long)bad, (long long)(bad / args->num_channels),
                        (long long)(bad % args->num_channels),
                        (long long)atomic_load(&job.overflow_needed),
                        (long long)args->stream_capacity);
    return KVX_OK;
}

/* ---------------------------------------------------------------- decoder */

typedef struct decoder {
    uint32_t low, high, value;
    int64_t bitpos; /* next input bit (from the stream's start, MSB first) */
    const uint8_t *src;
    int64_t len;
} decoder;

static uint64_t peek_slow(const decoder *d, int64_t byte)
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

static void decoder_init(decoder *d, const uint8_t *src, int64_t len)
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

typedef struct decode_job {
    const uint16_t *cdf;
    int32_t cdf_len;
    const uint8_t *bytes;
    int64_t capacity;
    const int32_t *lengths;
    const int64_t *end_offsets;
    int64_t num_tokens, num_channels, groups;
    uint8_t *symbols;
} decode_job;

static void stream_extent(const decode_job *job, int64_t i, int64_t *start, int64_t *len)
{
    if (job->lengths) {
        *start = i * job->capacity;
        *len = job->lengths[i];
    } else {
        *start = i ? job->end_offsets[i - 1] : 0;
        *len = job->end_offsets[i] - *start;
    }
}

/* The token loop for `num_symbols` symbols per table; inlined with the common counts as
 * constants, so the decoder's symbol search unrolls into a few full-width compares. */
static ALWAYS_INLINE void decode_tokens(const decode_job *job, decoder *dec,
                                        const cdf_tables *tables, uint8_t *row, int width,
                                        int32_t num_symbols)
{
    for (int64_t t = 0; t < job->num_tokens; t++, row += job->num_channels) {
        int last = t == job->num_tokens - 1;
        for (int g = 0; g < width; g++)
            row[g] = decode_symbol(&dec[g], tables->entry[g], num_symbols, last);
    }
}

static ALWAYS_INLINE void decode_group(const decode_job *job, int64_t layer, int64_t c0, int width)
{
    cdf_tables tables;
    decoder dec[KVX_CODEC_GROUP];
    int64_t first = layer * job->num_channels + c0;
    load_tables(&tables, job->cdf + first * job->cdf_len, job->cdf_len, width);
    for (int g = 0; g < width; g++) {
        int64_t start, len;
        stream_extent(job, first + g, &start, &len);
        /* Empty streams may lie in an empty, NULL buffer, which C forbids offsetting (even by
         * 0); the decoder never dereferences an empty stream's pointer. */
        decoder_init(&dec[g], len == 0 ? NULL : job->bytes + start, len);
    }
    uint8_t *row = job->symbols + layer * job->num_tokens * job->num_channels + c0;
    switch (job->cdf_len - 1) { /* LMCache's schedule uses 32 and 16 bins */
    case 32: decode_tokens(job, dec, &tables, row, width, 32); break;
    case 16: decode_tokens(job, dec, &tables, row, width, 16); break;
    default: decode_tokens(job, dec, &tables, row, width, job->cdf_len - 1); break;
    }
}

static ALWAYS_INLINE void decode_range_body(void *ctx, int64_t begin, int64_t end)
{
    const decode_job *job = ctx;
    for (int64_t i = begin; i < end; i++) {
        int64_t layer = i / job->groups, c0 = (i % job->groups) * KVX_CODEC_GROUP;
        int64_t left = job->num_channels - c0;
        decode_group(job, layer, c0, left < KVX_CODEC_GROUP ? (int)left : KVX_CODEC_GROUP);
    }
}

DEFINE_RANGE_VARIANTS(decode_range)

static int32_t check_extents(int64_t num_bytes, int64_t capacity, const int32_t *lengths,
                             const int64_t *end_offsets, int64_t num_streams)
{
    int64_t prev = 0;
    for (int64_t i = 0; i < num_streams; i++) {
        if (lengths && (lengths[i] < 0 || lengths[i] > capacity))
            return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                            "lengths[%lld]: expected 0..%lld (stream_capacity), got %d",
                            (long long)i, (long long)capacity, (int)lengths[i]);
        if (end_offsets && (end_offsets[i] < prev || end_offsets[i] > num_bytes))
            return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                            "end_offsets[%lld]: expected %lld..%lld (non-decreasing, at most "
                            "num_bytes), got %lld",
                            (long long)i, (long long)prev, (long long)num_bytes,
                            (long long)end_offsets[i]);
        if (end_offsets)
            prev = end_offsets[i];
    }
    return KVX_OK;
}

int32_t kvx_cpu_codec_decode(const kvx_codec_decode_args *args, const kvx_stream *stream)
{
    (void)stream;
    int32_t rc;
    int64_t num_streams = args->num_layers * args->num_channels;
    if ((rc = kvx_cpu_codec_check_cdf(args->cdf, args->cdf_len, num_streams)) ||
        (rc = check_extents(args->num_bytes, args->stream_capacity, args->lengths,
                            args->end_offsets, num_streams)))
        return rc;
    int64_t groups = (args->num_channels + KVX_CODEC_GROUP - 1) / KVX_CODEC_GROUP;
    decode_job job = {args->cdf,     args->cdf_len,     args->bytes,      args->stream_capacity,
                      args->lengths, args->end_offsets, args->num_tokens, args->num_channels,
                      groups,        args->symbols};
    kvx_parallel_for(args->num_layers * groups, 1, decode_range_variant(), &job);
    return KVX_OK;
}
