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
#include "range_coder_lanes.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* The coder loops are compiled per instruction-set variant (KVX_DEFINE_RANGE_VARIANTS): the
 * AVX2 variant, and NEON's on 64-bit ARM, hand whole groups to the lane-parallel coder
 * (range_coder_lanes.h) and run the scalar loops for what is left (narrow groups, declined ones);
 * on x86 those loops get AVX2's wider compares in the decoder's symbol search. All compute the
 * same integers. */
#if KVX_CODER_LANES
#define encode_lanes kvx_cpu_encode_lanes_avx2
#define decode_lanes kvx_cpu_decode_lanes_avx2
#elif KVX_CODER_LANES_NEON
#define encode_lanes kvx_cpu_encode_lanes_neon
#define decode_lanes kvx_cpu_decode_lanes_neon
#endif

/* ---------------------------------------------------------------- encoder */

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

/* The streams' symbols, token by token: symbol t of stream g at row[t * num_channels + g]. */
static ALWAYS_INLINE void encode_tokens(const encode_job *job, encoder *enc, int64_t first,
                                        const uint8_t *row, int width, int lanes)
{
    const uint16_t *cdf = job->cdf + first * job->cdf_len;
#ifdef encode_lanes
    if (lanes && width == KVX_CODEC_GROUP) {
        encode_lanes(cdf, job->cdf_len, row, job->num_channels, job->num_tokens, enc);
        return;
    }
#else
    (void)lanes;
#endif
    cdf_tables tables;
    load_tables(&tables, cdf, job->cdf_len, width);
    for (int64_t t = 0; t < job->num_tokens; t++, row += job->num_channels)
        for (int g = 0; g < width; g++)
            encode_symbol(&enc[g], tables.entry[g], row[g]);
}

static ALWAYS_INLINE void encode_group(encode_job *job, int64_t layer, int64_t c0, int width,
                                       int lanes)
{
    encoder enc[KVX_CODEC_GROUP];
    int64_t first = layer * job->num_channels + c0; /* stream index of channel c0 */
    for (int g = 0; g < width; g++)
        enc[g] = (encoder){0, 0xffffffffu,  0, 0, 0, job->streams + (first + g) * job->capacity,
                           0, job->capacity};
    /* Zero tokens may come with NULL symbols, and C defines no offset from NULL, not even 0. */
    const uint8_t *row = job->num_tokens == 0
                             ? NULL
                             : job->symbols + layer * job->num_tokens * job->num_channels + c0;
    encode_tokens(job, enc, first, row, width, lanes);
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

static ALWAYS_INLINE void encode_range_body(void *ctx, int64_t begin, int64_t end, int lanes)
{
    encode_job *job = ctx;
    for (int64_t i = begin; i < end; i++) {
        int64_t layer = i / job->groups, c0 = (i % job->groups) * KVX_CODEC_GROUP;
        int64_t left = job->num_channels - c0;
        encode_group(job, layer, c0, left < KVX_CODEC_GROUP ? (int)left : KVX_CODEC_GROUP, lanes);
    }
}

KVX_DEFINE_RANGE_VARIANTS(encode_range)

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

static ALWAYS_INLINE void decode_group(const decode_job *job, int64_t layer, int64_t c0, int width,
                                       int lanes)
{
    int64_t first = layer * job->num_channels + c0;
    const uint16_t *cdf = job->cdf + first * job->cdf_len;
    const uint8_t *src[KVX_CODEC_GROUP];
    int64_t len[KVX_CODEC_GROUP];
    for (int g = 0; g < width; g++) {
        int64_t start;
        stream_extent(job, first + g, &start, &len[g]);
        /* Empty streams may lie in an empty, NULL buffer, which C forbids offsetting (even by
         * 0); the decoders never dereference an empty stream's pointer. */
        src[g] = len[g] == 0 ? NULL : job->bytes + start;
    }
    uint8_t *row = job->symbols + layer * job->num_tokens * job->num_channels + c0;
#ifdef decode_lanes
    if (lanes && width == KVX_CODEC_GROUP &&
        decode_lanes(cdf, job->cdf_len, src, len, job->num_tokens, row, job->num_channels))
        return;
#else
    (void)lanes;
#endif
    cdf_tables tables;
    decoder dec[KVX_CODEC_GROUP];
    load_tables(&tables, cdf, job->cdf_len, width);
    for (int g = 0; g < width; g++)
        decoder_init(&dec[g], src[g], len[g]);
    switch (job->cdf_len - 1) { /* LMCache's schedule uses 32 and 16 bins */
    case 32: decode_tokens(job, dec, &tables, row, width, 32); break;
    case 16: decode_tokens(job, dec, &tables, row, width, 16); break;
    default: decode_tokens(job, dec, &tables, row, width, job->cdf_len - 1); break;
    }
}

static ALWAYS_INLINE void decode_range_body(void *ctx, int64_t begin, int64_t end, int lanes)
{
    const decode_job *job = ctx;
    for (int64_t i = begin; i < end; i++) {
        int64_t layer = i / job->groups, c0 = (i % job->groups) * KVX_CODEC_GROUP;
        int64_t left = job->num_channels - c0;
        decode_group(job, layer, c0, left < KVX_CODEC_GROUP ? (int)left : KVX_CODEC_GROUP, lanes);
    }
}

KVX_DEFINE_RANGE_VARIANTS(decode_range)

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
