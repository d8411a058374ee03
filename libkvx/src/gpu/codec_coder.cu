/*
 * codec_coder.cu - LMCache's calculate_cdf and CacheGen range coder on CUDA and HIP GPUs.
 *
 * CDF: one thread block per (layer, 32 consecutive channels). Each warp reads tokens' 32-byte
 * runs of symbols (coalesced) into per-channel histograms in shared memory, one thread per
 * channel turns its histogram into prefix counts, and the block writes the 32 tables, which are
 * contiguous in the output, with consecutive threads on consecutive entries.
 *
 * Encode and decode: one thread per (layer, channel) stream, as LMCache does; neighbouring
 * threads take neighbouring channels, so each token's symbols are read (or written) as one
 * coalesced run. The per-stream coder is codec_core.h's, bit-exact with the CPU backend.
 *
 * - A block codes CODER_THREADS consecutive streams at a time (a grid-stride loop over such
 *   chunks). Their tables are contiguous in the input: the block copies them to shared memory
 *   first, consecutive threads on consecutive 16-byte pieces, because the coder reads its table
 *   at every symbol, the decoder's binary search about log2(cdf_len) times one after another.
 *   Tables of KVX_CODEC_MAX_CDF_LEN entries take 32 KiB for the block.
 * - Encoder output: slots lie `capacity` bytes apart, so a thread storing its own 4-byte words
 *   as they come makes one partial memory sector per thread and word. Each thread stages its
 *   stream's bytes in a ring in shared memory instead (codec_core.h), and every ROUND_TOKENS
 *   tokens the block writes out the streams with at least FLUSH_MIN_BYTES staged, FLUSH_LANES
 *   threads to a stream on consecutive 4-byte words: each store instruction of a warp then
 *   covers one contiguous run of one slot, whole sectors but at its ends. Coalescing can go no
 *   further: only a stream's own bytes are contiguous, and streams grow at different rates.
 *   After the last token the block writes out everything; a thread whose ring fills between two
 *   rounds (long runs of pending bits) writes its ring itself, in 16-byte stores where the slot
 *   is aligned: wide stores of one thread, not coalesced with its neighbours'.
 * - Every thread of a block meets every barrier, those without a stream (past the last one)
 *   or whose stream was skipped included.
 *
 * Bounds: an encoder never writes past its slot (a stream that needs more is truncated and
 * recorded as overflow), and a decoder never reads outside its own stream (bytes past the end
 * read as zero). Data-dependent errors (symbols out of range, CDF tables that are not strictly
 * increasing, stream lengths or offsets out of range) skip the affected stream and are recorded
 * for kvx_synchronize(); the CPU backend rejects such calls before writing anything.
 */
#include "codec_gpu.h"

#define CDF_THREADS 256
#define CDF_GROUP 32 /* channels per block */
#define CDF_COUNTS (KVX_CODEC_MAX_BINS + 1) /* odd row length: no shared-memory bank conflicts */
#define CODER_THREADS 64

/* ---------------------------------------------------------------- CDF */

struct cdf_args {
    const uint8_t *symbols;
    long long layers, tokens, channels, groups;
    int num_bins;
    uint16_t *cdf;
    kvx_gpu_deferred_error *error;
};

/* Histograms of the block's channels; symbols >= num_bins are left out and recorded. */
__device__ void count_symbols(const cdf_args &a, long long layer, long long c0, int width,
                              uint32_t (*counts)[CDF_COUNTS])
{
    const int g = threadIdx.x % CDF_GROUP;
    if (g >= width)
        return;
    /* Indexed from a.symbols, which is NULL when there are no tokens: a column pointer would
     * offset NULL, undefined unless by 0. */
    const long long column = layer * a.tokens * a.channels + c0 + g;
    for (long long t = threadIdx.x / CDF_GROUP; t < a.tokens; t += blockDim.x / CDF_GROUP) {
        const uint8_t s = a.symbols[column + t * a.channels];
        if (s < a.num_bins)
            atomicAdd(&counts[g][s], 1u);
        else
            kvx_gpu_record_error(a.error, KVX_GPU_BAD_SYMBOL,
                                 (layer * a.tokens + t) * a.channels + c0 + g, s, a.num_bins - 1);
    }
}

__global__ void __launch_bounds__(CDF_THREADS) cdf_tables(const cdf_args a)
{
    __shared__ uint32_t counts[CDF_GROUP][CDF_COUNTS];
    const int nb = a.num_bins;
    for (long long item = blockIdx.x; item < a.layers * a.groups; item += gridDim.x) {
        const long long layer = item / a.groups, c0 = (item - layer * a.groups) * CDF_GROUP;
        const int width = a.channels - c0 < CDF_GROUP ? (int)(a.channels - c0) : CDF_GROUP;
        for (int k = threadIdx.x; k < CDF_GROUP * (nb + 1); k += blockDim.x)
            counts[k / (nb + 1)][k % (nb + 1)] = 0;
        __syncthreads();
        count_symbols(a, layer, c0, width, counts);
        __syncthreads();
        if ((int)threadIdx.x < width)
            kvx_cc_counts_to_below(counts[threadIdx.x], nb);
        __syncthreads();
        uint16_t *out = a.cdf + (layer * a.channels + c0) * (nb + 1);
        for (int k = threadIdx.x; k < width * (nb + 1); k += blockDim.x) {
            const int g = k / (nb + 1), s = k - g * (nb + 1);
            out[k] = kvx_cc_cdf_entry(counts[g][s], nb, a.tokens, s);
        }
        __syncthreads(); /* the next item clears the counts */
    }
}

extern "C" int32_t kvx_gpu_codec_calculate_cdf(const kvx_codec_cdf_args *args,
                                               const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    cdf_args a = {args->symbols,
                  args->num_layers,
                  args->num_tokens,
                  args->num_channels,
                  (args->num_channels + CDF_GROUP - 1) / CDF_GROUP,
                  args->num_bins,
                  args->cdf,
                  NULL};
    int32_t rc = kvx_codec_begin(stream, scope, &a.error);
    if (rc)
        return rc;
    KVX_LAUNCH(cdf_tables, kvx_codec_blocks(args->num_layers * a.groups, 1), CDF_THREADS, 0,
               kvx_gpu_stream(stream))(a);
    return kvx_codec_launched("launching the calculate_cdf kernel");
}

/* ---------------------------------------------------------------- encode and decode */

/* A block codes CODER_THREADS consecutive streams at a time, one per thread; their tables are
 * contiguous in the input and go to shared memory, where the decoder's binary search and the
 * coder's per-symbol reads find them. */
#define CODER_TABLE_BYTES(cdf_len) ((size_t)CODER_THREADS * (size_t)(cdf_len) * sizeof(uint16_t))

/* Tokens the encoder codes between two writes of the block's staged bytes, and the fewest
 * staged bytes of a stream worth writing out then. A stream left with FLUSH_MIN_BYTES - 1 bytes
 * still takes ROUND_TOKENS more symbols of 18 bits in its ring (63 + 56 <= 128): only long runs
 * of pending bits fill a ring between two writes (the thread then writes its own). */
#define ROUND_TOKENS 24
#define FLUSH_MIN_BYTES 64
#define FLUSH_LANES 32 /* threads writing one stream's staged bytes */
/* Rings one word apart: the threads of a warp staging the same word of their rings hit
 * different shared-memory banks. */
#define RING_WORDS (KVX_CC_STAGE_BYTES / 4 + 1)

struct encode_shared {
    uint32_t rings[CODER_THREADS][RING_WORDS];
    long long flushed[CODER_THREADS], end[CODER_THREADS]; /* staged range of each stream */
};

static_assert(CODER_THREADS % FLUSH_LANES == 0, "whole teams of flushing threads");
/* A round's words: its symbols' bits and those left in the accumulator before it. */
static_assert(FLUSH_MIN_BYTES - 1 + (31 + ROUND_TOKENS * 18) / 32 * 4 <= KVX_CC_STAGE_BYTES,
              "a round's symbols fit the ring");
/* Within the 48 KiB a block gets without asking: the tables at KVX_CODEC_MAX_CDF_LEN (32 KiB)
 * with the encoder's rings (9 KiB). */
static_assert(CODER_TABLE_BYTES(KVX_CODEC_MAX_CDF_LEN) + sizeof(encode_shared) <= 48 * 1024,
              "the coders' shared memory");

/* n table entries from src into shared memory, consecutive threads on consecutive 16-byte
 * pieces (entries where src is not 16-byte aligned): coalesced reads. */
__device__ void load_tables(uint4 *dst, const uint16_t *src, int n)
{
    int done = 0;
    if (((uintptr_t)src & 15) == 0) {
        const int pieces = n / 8;
        for (int k = threadIdx.x; k < pieces; k += blockDim.x)
            dst[k] = reinterpret_cast<const uint4 *>(src)[k];
        done = pieces * 8;
    }
    uint16_t *entries = reinterpret_cast<uint16_t *>(dst);
    for (int k = done + threadIdx.x; k < n; k += blockDim.x)
        entries[k] = src[k];
}

/* How many streams the block codes from `first` on: CODER_THREADS, fewer in the last chunk. */
__device__ int chunk_streams(long long first, long long streams)
{
    return streams - first < CODER_THREADS ? (int)(streams - first) : CODER_THREADS;
}

/* ---------------------------------------------------------------- encode */

struct encode_args {
    const uint16_t *cdf;
    int cdf_len;
    const uint8_t *symbols;
    long long layers, tokens, channels;
    uint8_t *streams;
    long long capacity;
    int32_t *lengths;
    kvx_gpu_deferred_error *error;
};

/* Stream bytes begin .. end of one slot, from its ring, by the `lane`-th of FLUSH_LANES threads:
 * consecutive threads store consecutive 4-byte words (the bytes before the first aligned word
 * and after the last one, one each), so each store instruction of a warp covers one run of
 * the slot, whole memory sectors where the run is long. */
__device__ void write_staged(uint8_t *out, const uint32_t *ring, long long begin, long long end,
                             int lane)
{
    const long long head = begin + (long long)((0u - (uintptr_t)(out + begin)) & 3u);
    const long long words = head < end ? head + ((end - head) & ~3LL) : end;
    if (begin + lane < head && begin + lane < end)
        out[begin + lane] = kvx_cc_staged_byte(ring, begin + lane);
    for (long long q = head + 4LL * lane; q < words; q += 4LL * FLUSH_LANES)
        *reinterpret_cast<uint32_t *>(out + q) = kvx_cc_staged_word(ring, q);
    if (words + lane < end)
        out[words + lane] = kvx_cc_staged_byte(ring, words + lane);
}

/* Writes out the block's staged bytes: each thread publishes its stream's staged range, then
 * FLUSH_LANES threads at a time write one stream's (those with at least min_bytes staged), and
 * the owners go on once every ring has been read. Every thread of the block calls it. */
__device__ void flush_block(const encode_args &a, long long first, int count, encode_shared &sh,
                            kvx_cc_encoder &e, bool active, long long min_bytes)
{
    const int t = threadIdx.x;
    const long long end = active ? kvx_cc_staged_end(&e) : e.flushed;
    sh.flushed[t] = e.flushed;
    sh.end[t] = end;
    __syncthreads();
    for (int k = t / FLUSH_LANES; k < count; k += CODER_THREADS / FLUSH_LANES)
        if (sh.end[k] - sh.flushed[k] >= min_bytes)
            write_staged(a.streams + (first + k) * a.capacity, sh.rings[k], sh.flushed[k],
                         sh.end[k], t % FLUSH_LANES);
    __syncthreads(); /* the rings are written out before their owners stage more */
    if (end - e.flushed >= min_bytes)
        e.flushed = end;
}

/* Whether stream i's table is strictly increasing; if not, the stream is skipped (length 0). */
__device__ bool check_table(const encode_args &a, long long i, const uint16_t *cdf)
{
    const int32_t bad_entry = kvx_cc_cdf_bad_entry(cdf, a.cdf_len);
    if (bad_entry < 0)
        return true;
    kvx_gpu_record_error(a.error, KVX_GPU_BAD_CDF, i, bad_entry, a.cdf_len);
    a.lengths[i] = 0;
    return false;
}

/* One thread per stream i = layer * channels + c. The block goes through the tokens in rounds
 * of ROUND_TOKENS, all its threads together (those without a stream, or whose stream was
 * skipped, too: they meet the same barriers), and writes out its staged bytes after each. */
__global__ void __launch_bounds__(CODER_THREADS) encode_streams(const encode_args a)
{
    KVX_DYNAMIC_SHARED(uint4, shared_tables);
    __shared__ encode_shared sh;
    const int t = threadIdx.x;
    const long long streams = a.layers * a.channels;
    for (long long first = (long long)blockIdx.x * CODER_THREADS; first < streams;
         first += (long long)gridDim.x * CODER_THREADS) {
        const int count = chunk_streams(first, streams);
        load_tables(shared_tables, a.cdf + first * a.cdf_len, count * a.cdf_len);
        __syncthreads();
        const long long i = first + t, layer = i / a.channels, c = i - layer * a.channels;
        const uint16_t *cdf = reinterpret_cast<const uint16_t *>(shared_tables) + t * a.cdf_len;
        bool active = t < count && check_table(a, i, cdf);
        kvx_cc_encoder e;
        kvx_cc_encoder_init(&e, sh.rings[t], active ? a.streams + i * a.capacity : a.streams,
                            a.capacity);
        /* Zero tokens may come with NULL symbols, which only an offset of 0 leaves defined. */
        const uint8_t *symbols = active && a.tokens ? a.symbols + layer * a.tokens * a.channels + c
                                                    : a.symbols;
        for (long long t0 = 0; t0 < a.tokens; t0 += ROUND_TOKENS) {
            const long long t1 = a.tokens - t0 < ROUND_TOKENS ? a.tokens : t0 + ROUND_TOKENS;
            const int64_t bad = active ? kvx_cc_encode_tokens(&e, cdf, a.cdf_len, symbols,
                                                              a.channels, t0, t1)
                                       : -1;
            if (bad >= 0) {
                kvx_gpu_record_error(a.error, KVX_GPU_BAD_SYMBOL,
                                     (layer * a.tokens + bad) * a.channels + c,
                                     symbols[bad * a.channels], a.cdf_len - 2);
                a.lengths[i] = 0;
                active = false; /* its staged bytes are dropped */
            }
            flush_block(a, first, count, sh, e, active, FLUSH_MIN_BYTES);
        }
        if (active)
            kvx_cc_encode_finish(&e);
        flush_block(a, first, count, sh, e, active, 1);
        if (active) {
            if (e.pos > a.capacity)
                kvx_gpu_record_error(a.error, KVX_GPU_STREAM_OVERFLOW, i, e.pos, a.capacity);
            a.lengths[i] = (int32_t)(e.pos < a.capacity ? e.pos : a.capacity);
        }
        /* flush_block's last barrier: every thread is done with the tables and rings. */
    }
}

extern "C" int32_t kvx_gpu_codec_encode(const kvx_codec_encode_args *args, const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    encode_args a = {args->cdf,        args->cdf_len,
                     args->symbols,    args->num_layers,
                     args->num_tokens, args->num_channels,
                     args->streams,    args->stream_capacity,
                     args->lengths,    NULL};
    int32_t rc = kvx_codec_begin(stream, scope, &a.error);
    if (rc)
        return rc;
    KVX_LAUNCH(encode_streams,
               kvx_codec_blocks(args->num_layers * args->num_channels, CODER_THREADS),
               CODER_THREADS, CODER_TABLE_BYTES(args->cdf_len), kvx_gpu_stream(stream))(a);
    return kvx_codec_launched("launching the encode kernel");
}

/* ---------------------------------------------------------------- decode */

struct decode_args {
    const uint16_t *cdf;
    int cdf_len;
    const uint8_t *bytes;
    long long num_bytes, capacity;
    const int32_t *lengths;     /* streams in slots of `capacity` bytes, or */
    const int64_t *end_offsets; /* back to back (inclusive prefix sums) */
    long long layers, tokens, channels;
    uint8_t *symbols;
    kvx_gpu_deferred_error *error;
};

/* Decodes stream i with its table (in shared memory); a stream with a bad extent or table leaves
 * its symbols untouched. */
__device__ void decode_one(const decode_args &a, long long i, const uint16_t *cdf)
{
    int64_t start = 0, len = 0;
    if (kvx_cc_stream_extent(a.lengths, a.end_offsets, a.capacity, a.num_bytes, i, &start, &len)) {
        if (a.lengths)
            kvx_gpu_record_error(a.error, KVX_GPU_BAD_LENGTH, i, a.lengths[i], a.capacity);
        else
            kvx_gpu_record_error(a.error, KVX_GPU_BAD_END_OFFSET, i, a.end_offsets[i], a.num_bytes);
        return;
    }
    const int32_t bad_entry = kvx_cc_cdf_bad_entry(cdf, a.cdf_len);
    if (bad_entry >= 0) {
        kvx_gpu_record_error(a.error, KVX_GPU_BAD_CDF, i, bad_entry, a.cdf_len);
        return;
    }
    const long long layer = i / a.channels, c = i - layer * a.channels;
    kvx_cc_decode_stream(cdf, a.cdf_len, a.bytes + start, len, a.tokens,
                         a.symbols + layer * a.tokens * a.channels + c, a.channels);
}

__global__ void __launch_bounds__(CODER_THREADS) decode_streams(const decode_args a)
{
    KVX_DYNAMIC_SHARED(uint4, shared_tables);
    const int t = threadIdx.x;
    const long long streams = a.layers * a.channels;
    for (long long first = (long long)blockIdx.x * CODER_THREADS; first < streams;
         first += (long long)gridDim.x * CODER_THREADS) {
        const int count = chunk_streams(first, streams);
        load_tables(shared_tables, a.cdf + first * a.cdf_len, count * a.cdf_len);
        __syncthreads();
        if (t < count)
            decode_one(a, first + t,
                       reinterpret_cast<const uint16_t *>(shared_tables) + t * a.cdf_len);
        __syncthreads(); /* before the next chunk's tables replace these */
    }
}

extern "C" int32_t kvx_gpu_codec_decode(const kvx_codec_decode_args *args, const kvx_stream *stream)
{
    kvx_gpu_device_scope scope(kvx_gpu_device_index(stream));
    decode_args a = {args->cdf,          args->cdf_len,         args->bytes,
                     args->num_bytes,    args->stream_capacity, args->lengths,
                     args->end_offsets,  args->num_layers,      args->num_tokens,
                     args->num_channels, args->symbols,         NULL};
    int32_t rc = kvx_codec_begin(stream, scope, &a.error);
    if (rc)
        return rc;
    KVX_LAUNCH(decode_streams,
               kvx_codec_blocks(args->num_layers * args->num_channels, CODER_THREADS),
               CODER_THREADS, CODER_TABLE_BYTES(args->cdf_len), kvx_gpu_stream(stream))(a);
    return kvx_codec_launched("launching the decode kernel");
}
