/*
 * digests.c - runs the CPU kernels on fixed pseudo-random inputs and prints a 64-bit FNV-1a
 * digest of every output, one "name digest" line each. The data depend on nothing but the
 * code, so the same program built for two machines must print the same lines: that is how
 * tests/test_cross_build.py checks an aarch64 build (run under qemu) against the x86-64 build,
 * which the Python tests check against LMCache's golden vectors and float64 references.
 *
 * Usage: digests [threads]   (0 or nothing: the library's default); the kernels that ran
 * (kvx_cpu_kernels) go to stderr.
 */
#include <kvx.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                           \
    do {                                                                                      \
        int32_t status_ = (call);                                                             \
        if (status_ != KVX_OK) {                                                              \
            fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,               \
                    kvx_status_name(status_), kvx_last_error());                              \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static uint64_t fnv1a(const void *data, size_t bytes)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < bytes; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void print_digest(const char *name, const void *data, size_t bytes)
{
    printf("%s %016llx\n", name, (unsigned long long)fnv1a(data, bytes));
}

/* A fixed sequence of floats in about [-4, 4), normal-ish (sum of uniforms). */
static uint64_t lcg_state = 88172645463325252ull;

static float next_float(void)
{
    float sum = 0.0f;
    for (int i = 0; i < 4; i++) {
        lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
        sum += (float)(lcg_state >> 40) / (float)(1ull << 24) - 0.5f;
    }
    return 2.0f * sum;
}

/* bf16 by truncating the float32; f16 built from the same draw (sign, an exponent for
 * 2^-3 .. 2^2, ten mantissa bits): only sources of varied values. */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16);
}

static uint16_t to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(((u >> 16) & 0x8000u) | ((12u + (u >> 13) % 6u) << 10) | ((u >> 3) & 0x3ffu));
}

static void fill(void *data, int32_t dtype, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        float f = next_float();
        if (dtype == KVX_DTYPE_FLOAT32)
            ((float *)data)[i] = f;
        else
            ((uint16_t *)data)[i] = dtype == KVX_DTYPE_BFLOAT16 ? to_bf16(f) : to_f16(f);
    }
}

/* ---------------------------------------------------------------- RoPE */

/* Caches beyond fill()'s: CACHE_TIES puts many results exactly halfway between two 16-bit values
 * (cos 1.5, 0.75, ... times keys of few bits), CACHE_NANS holds NaNs whose payloads have low bits,
 * one cos and one sin per row, in the rows past the middle, which only new positions use (a NaN
 * meeting another may pass on either payload). */
enum { CACHE_PLAIN, CACHE_TIES, CACHE_NANS };

static void special_cache(void *cache, int32_t dtype, int kind, int32_t rot_dim, int rows)
{
    int half = rot_dim / 2;
    if (kind == CACHE_TIES) {
        static const float factors[] = {1.5f, 0.75f, 1.25f, 1.0f, 2.5f, 0.375f};
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < half; i++) {
                float c = factors[(r * 7 + i * 3) % 6], s = r % 2 ? 0.5f * c : 0.0f;
                if (dtype == KVX_DTYPE_FLOAT32) {
                    ((float *)cache)[r * rot_dim + i] = c;
                    ((float *)cache)[r * rot_dim + half + i] = s;
                } else { /* these values are exact in both 16-bit formats */
                    uint32_t cu, su;
                    memcpy(&cu, &c, sizeof cu);
                    memcpy(&su, &s, sizeof su);
                    ((uint16_t *)cache)[r * rot_dim + i] = (uint16_t)(cu >> 16);
                    ((uint16_t *)cache)[r * rot_dim + half + i] = (uint16_t)(su >> 16);
                }
            }
    } else if (kind == CACHE_NANS) {
        static const uint32_t nan32[] = {0x7fc0ffffu, 0x7f80f001u, 0xffbfffffu, 0x7fc08000u};
        static const uint16_t nan16[] = {0x7e07, 0x7c01, 0xfd55, 0x7fff};
        for (int r = rows / 2; r < rows; r += 3) {
            int slot = r % half, sin_slot = half + (slot + half / 2) % half;
            if (dtype == KVX_DTYPE_FLOAT32) {
                ((uint32_t *)cache)[r * rot_dim + slot] = nan32[r % 4];
                ((uint32_t *)cache)[r * rot_dim + sin_slot] = nan32[(r + 1) % 4];
            } else {
                ((uint16_t *)cache)[r * rot_dim + slot] = nan16[r % 4];
                ((uint16_t *)cache)[r * rot_dim + sin_slot] = nan16[(r + 1) % 4];
            }
        }
    }
}

static void rope_case(const char *name, int32_t dtype, int32_t pairing, int32_t rot_dim,
                      int32_t cache_dtype, int cache_kind)
{
    enum { T = 97, H = 3, D = 128, MAXPOS = 300 };
    size_t elem = (size_t)kvx_dtype_size(dtype), cache_elem = (size_t)kvx_dtype_size(cache_dtype);
    void *keys = calloc((size_t)T * H * D, elem), *query = calloc((size_t)T * 2 * D, elem);
    void *cache = calloc((size_t)MAXPOS * rot_dim, cache_elem);
    int64_t old_pos[T], new_pos[T];
    fill(keys, dtype, (size_t)T * H * D);
    fill(query, dtype, (size_t)T * 2 * D);
    /* any bounded values do as angles' cos/sin: the kernels do not assume unit rows */
    fill(cache, cache_dtype, (size_t)MAXPOS * rot_dim);
    special_cache(cache, cache_dtype, cache_kind, rot_dim, MAXPOS);
    for (int t = 0; t < T; t++) {
        old_pos[t] = (t * 37) % (cache_kind == CACHE_NANS ? MAXPOS / 2 : MAXPOS);
        new_pos[t] = t < 40 ? 100 + t : (t * 53 + 11) % MAXPOS; /* a run, then scattered */
    }
    kvx_rope_tensor k = {.struct_size = sizeof k,
                         .dtype = dtype,
                         .num_layers = 1,
                         .num_heads = H,
                         .head_size = D,
                         .num_tokens = T,
                         .base = keys,
                         .token_stride = H * D,
                         .head_stride = D};
    kvx_rope_tensor q = k;
    q.num_heads = 2, q.base = query, q.token_stride = 2 * D;
    kvx_rope_cache c = {.struct_size = sizeof c,
                        .dtype = cache_dtype,
                        .rot_dim = rot_dim,
                        .pairing = pairing,
                        .max_position = MAXPOS,
                        .row_stride = rot_dim,
                        .cos_sin = cache};
    CHECK(kvx_rope_rerotate(&k, &c, old_pos, new_pos, KVX_DTYPE_INT64, NULL));
    CHECK(kvx_rope_apply(&q, &k, &c, new_pos, KVX_DTYPE_INT64, NULL));
    char label[96];
    snprintf(label, sizeof label, "rope.%s.keys", name);
    print_digest(label, keys, (size_t)T * H * D * elem);
    snprintf(label, sizeof label, "rope.%s.query", name);
    print_digest(label, query, (size_t)T * 2 * D * elem);
    free(keys);
    free(query);
    free(cache);
}

static void rope_cases(void)
{
    static const struct {
        const char *name;
        int32_t dtype;
    } dtypes[] = {
        {"f32", KVX_DTYPE_FLOAT32}, {"f16", KVX_DTYPE_FLOAT16}, {"bf16", KVX_DTYPE_BFLOAT16}};
    for (size_t d = 0; d < 3; d++)
        for (int neox = 0; neox < 2; neox++)
            for (int32_t rot_dim = 40; rot_dim <= 128; rot_dim += 88) { /* 40: tails; 128: blocks */
                char name[64];
                snprintf(name, sizeof name, "%s.%s.rot%d", dtypes[d].name, neox ? "neox" : "gptj",
                         rot_dim);
                rope_case(name, dtypes[d].dtype, neox ? KVX_ROPE_NEOX : KVX_ROPE_GPTJ, rot_dim,
                          rot_dim == 128 ? KVX_DTYPE_FLOAT32 : KVX_DTYPE_BFLOAT16, CACHE_PLAIN);
            }
    /* the 16-bit roundings: ties, and NaNs from the cache (GPT-J fp16 keys left out of those: the
     * x86 loops may flip the sign of a NaN from sin there) */
    for (size_t d = 1; d < 3; d++)
        for (int neox = 0; neox < 2; neox++) {
            int32_t pairing = neox ? KVX_ROPE_NEOX : KVX_ROPE_GPTJ;
            char name[64];
            snprintf(name, sizeof name, "%s.%s.ties", dtypes[d].name, neox ? "neox" : "gptj");
            rope_case(name, dtypes[d].dtype, pairing, 96, KVX_DTYPE_FLOAT32, CACHE_TIES);
            if (!neox && dtypes[d].dtype == KVX_DTYPE_FLOAT16)
                continue;
            for (int c = 0; c < 2; c++) {
                int32_t cache_dtype = c ? KVX_DTYPE_FLOAT16 : KVX_DTYPE_FLOAT32;
                snprintf(name, sizeof name, "%s.%s.nans-cache-%s", dtypes[d].name,
                         neox ? "neox" : "gptj", c ? "f16" : "f32");
                rope_case(name, dtypes[d].dtype, pairing, 96, cache_dtype, CACHE_NANS);
            }
        }
}

/* ---------------------------------------------------------------- codec */

static void codec_cases(void)
{
    enum { L = 3, T = 300, H = 4, D = 32, C = H * D };
    const int32_t key_bins[L] = {32, 32, 16}, value_bins[L] = {16, 16, 8};
    size_t count = (size_t)2 * L * T * C;
    uint16_t *kv = malloc(count * sizeof *kv), *back = malloc(count * sizeof *back);
    fill(kv, KVX_DTYPE_BFLOAT16, count);
    kvx_dense_desc desc = {.struct_size = sizeof desc,
                           .dtype = KVX_DTYPE_BFLOAT16,
                           .num_layers = L,
                           .num_kv = 2,
                           .num_heads = H,
                           .head_size = D,
                           .num_tokens = T,
                           .base = kv,
                           .kv_stride = (int64_t)L * T * C,
                           .layer_stride = (int64_t)T * C,
                           .token_stride = C,
                           .head_stride = D};
    kvx_codec_params params = {.struct_size = sizeof params,
                               .key_bins = key_bins,
                               .value_bins = value_bins,
                               .chunk_tokens = 128};
    int64_t bound = 0, size = 0;
    CHECK(kvx_codec_compress_bound(&desc, &params, &bound));
    void *blob = malloc((size_t)bound);
    CHECK(kvx_codec_compress(&desc, &params, blob, bound, &size, NULL));
    print_digest("codec.container", blob, (size_t)size);
    kvx_dense_desc out = desc;
    out.base = back;
    CHECK(kvx_codec_decompress(blob, size, &out, NULL));
    print_digest("codec.decompressed", back, count * sizeof *back);

    /* The LMCache-level entry points on the K plane: quantize, CDF, encode, decode. */
    enum { BINS = 32 };
    int32_t bins[L] = {BINS, BINS, BINS};
    uint8_t *symbols = malloc((size_t)L * T * C), *decoded = malloc((size_t)L * T * C);
    float scales[L * T];
    uint16_t *cdf = malloc((size_t)L * C * (BINS + 1) * sizeof *cdf);
    CHECK(kvx_codec_quantize(kv, KVX_DTYPE_BFLOAT16, L, T, C, (int64_t)T * C, C, bins, symbols,
                             scales, NULL));
    print_digest("codec.symbols", symbols, (size_t)L * T * C);
    print_digest("codec.scales", scales, sizeof scales);
    CHECK(kvx_codec_calculate_cdf(symbols, L, T, C, BINS, cdf, NULL));
    print_digest("codec.cdf", cdf, (size_t)L * C * (BINS + 1) * sizeof *cdf);
    int64_t capacity = 0;
    CHECK(kvx_codec_stream_bound(T, &capacity));
    uint8_t *streams = calloc((size_t)L * C, (size_t)capacity);
    int32_t *lengths = malloc((size_t)L * C * sizeof *lengths);
    CHECK(kvx_codec_encode(cdf, BINS + 1, symbols, L, T, C, streams, capacity, lengths, NULL));
    print_digest("codec.lengths", lengths, (size_t)L * C * sizeof *lengths);
    print_digest("codec.streams", streams, (size_t)L * C * (size_t)capacity);
    CHECK(kvx_codec_decode(cdf, BINS + 1, streams, capacity, lengths, L, T, C, decoded, NULL));
    if (memcmp(decoded, symbols, (size_t)L * T * C) != 0) {
        fprintf(stderr, "codec: decode did not give back the symbols\n");
        exit(1);
    }
    free(kv), free(back), free(blob), free(symbols), free(decoded), free(cdf), free(streams),
        free(lengths);
}

/* ---------------------------------------------------------------- range coder lanes */

/* The range coder on whole groups of 16 streams (the vector lanes' work on CPUs that have them)
 * and a narrow group (always the scalar loops), on inputs that make the lanes' work hard: runs of
 * pending bits on both sides of what a lane holds, the widest renormalisations, 256 bins, damaged
 * streams and tight capacities. tests/test_codec_lanes.py checks the same cases against the
 * Python reference coder on the host. */
enum { LANE_LAYERS = 2, LANE_CHANNELS = 37 };

static uint32_t next_u32(void)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(lcg_state >> 32);
}

/* Encodes and decodes symbols [LANE_LAYERS, tokens, LANE_CHANNELS]; prints the lengths' and
 * streams' digests and checks that decoding gives the symbols back. */
static void coder_round_trip(const char *name, const uint16_t *cdf, int32_t cdf_len,
                             const uint8_t *symbols, int64_t tokens)
{
    enum { N = LANE_LAYERS * LANE_CHANNELS };
    int64_t capacity = 0;
    CHECK(kvx_codec_stream_bound(tokens, &capacity));
    uint8_t *streams = calloc(N, (size_t)capacity), *decoded = malloc((size_t)(N * tokens));
    int32_t lengths[N];
    CHECK(kvx_codec_encode(cdf, cdf_len, symbols, LANE_LAYERS, tokens, LANE_CHANNELS, streams,
                           capacity, lengths, NULL));
    char label[96];
    snprintf(label, sizeof label, "coder.%s.lengths", name);
    print_digest(label, lengths, sizeof lengths);
    snprintf(label, sizeof label, "coder.%s.streams", name);
    print_digest(label, streams, (size_t)(N * capacity));
    CHECK(kvx_codec_decode(cdf, cdf_len, streams, capacity, lengths, LANE_LAYERS, tokens,
                           LANE_CHANNELS, decoded, NULL));
    if (memcmp(decoded, symbols, (size_t)(N * tokens)) != 0) {
        fprintf(stderr, "coder.%s: decode did not give back the symbols\n", name);
        exit(1);
    }
    free(streams), free(decoded);
}

/* Symbol 2 holds the middle half of the range (one pending bit each); symbols 0 and 4 hold
 * 1/65536 of it (the most bits one symbol can shift out: 18). Channel c repeats runs of c middle
 * symbols closed by an edge symbol, most often one of the rarest: runs of 0 .. 36 pending bits,
 * crossing what a lane holds at different tokens in each lane. */
static void pending_runs_case(void)
{
    enum { T = 400, N = LANE_LAYERS * LANE_CHANNELS };
    static const uint16_t table[] = {0, 1, 16384, 49152, 65535, 65535};
    static const uint8_t closing[] = {0, 4, 0, 4, 1, 3};
    uint16_t cdf[N * 6];
    for (int i = 0; i < N; i++)
        memcpy(cdf + i * 6, table, sizeof table);
    uint8_t *symbols = malloc((size_t)N * T);
    memset(symbols, 2, (size_t)N * T);
    for (int l = 0; l < LANE_LAYERS; l++)
        for (int c = 0; c < LANE_CHANNELS; c++)
            for (int t = c + l; t < T; t += c + 1)
                symbols[((size_t)l * T + t) * LANE_CHANNELS + c] = closing[next_u32() % 6];
    coder_round_trip("pending", cdf, 6, symbols, T);
    free(symbols);
}

/* 256 bins whose first and last symbols hold 1/65536 of the range each, 40% of the symbols. */
static void wide_alphabet_case(void)
{
    enum { T = 300, N = LANE_LAYERS * LANE_CHANNELS, LEN = 257 };
    uint16_t table[LEN];
    table[0] = 0;
    for (int i = 1; i < 256; i++) /* 1 .. 65535, strictly increasing */
        table[i] = (uint16_t)(1 + (uint32_t)(i - 1) * 65534u / 254u);
    table[256] = 65535;
    uint16_t *cdf = malloc(sizeof table * N);
    for (int i = 0; i < N; i++)
        memcpy(cdf + i * LEN, table, sizeof table);
    uint8_t *symbols = malloc((size_t)N * T);
    for (size_t i = 0; i < (size_t)N * T; i++) {
        uint32_t r = next_u32();
        symbols[i] = (uint8_t)(r % 10 < 4 ? (r >> 8 & 1) * 255 : r >> 16);
    }
    coder_round_trip("bins256", cdf, LEN, symbols, T);
    free(cdf), free(symbols);
}

/* Random bytes of random lengths (some empty, some shorter than a word), decoded from slots and
 * from back-to-back streams: bytes past each end read as zero. */
static void damaged_streams_case(void)
{
    enum { T = 90, N = LANE_LAYERS * LANE_CHANNELS, CAP = 24, BINS = 32 };
    uint8_t *symbols = malloc((size_t)N * T), *decoded = malloc((size_t)N * T);
    uint8_t *again = malloc((size_t)N * T), data[N * CAP], packed[N * CAP];
    for (size_t i = 0; i < (size_t)N * T; i++)
        symbols[i] = (uint8_t)(next_u32() % BINS);
    uint16_t cdf[N * (BINS + 1)];
    CHECK(kvx_codec_calculate_cdf(symbols, LANE_LAYERS, T, LANE_CHANNELS, BINS, cdf, NULL));
    int32_t lengths[N];
    int64_t end_offsets[N], at = 0;
    for (int i = 0; i < N * CAP; i++)
        data[i] = (uint8_t)next_u32();
    for (int i = 0; i < N; i++) {
        lengths[i] = i < 4 ? i : (int32_t)(next_u32() % (CAP + 1));
        memcpy(packed + at, data + i * CAP, (size_t)lengths[i]);
        end_offsets[i] = at += lengths[i];
    }
    CHECK(kvx_codec_decode(cdf, BINS + 1, data, CAP, lengths, LANE_LAYERS, T, LANE_CHANNELS,
                           decoded, NULL));
    print_digest("coder.damaged.decoded", decoded, (size_t)N * T);
    CHECK(kvx_codec_decode_prefsum(cdf, BINS + 1, packed, at, end_offsets, LANE_LAYERS, T,
                                   LANE_CHANNELS, again, NULL));
    if (memcmp(decoded, again, (size_t)N * T) != 0) {
        fprintf(stderr, "coder.damaged: decode_prefsum differs from decode\n");
        exit(1);
    }
    free(symbols), free(decoded), free(again);
}

/* A few bytes short for the longest stream, the last one of a whole group: the call fails naming
 * it, leaves the lengths alone and writes nothing past the last slot. */
static void tight_capacity_case(void)
{
    enum { L = 2, T = 120, C = 32, N = L * C, BINS = 16, TAIL = 64 };
    uint8_t symbols[N * T];
    for (int i = 0; i < N * T; i++)
        symbols[i] = (uint8_t)(6 + next_u32() % 4);
    uint16_t cdf[N * (BINS + 1)];
    CHECK(kvx_codec_calculate_cdf(symbols, L, T, C, BINS, cdf, NULL));
    for (int t = 0; t < T; t++) /* symbols its table makes rarest */
        symbols[((L - 1) * T + t) * C + C - 1] = next_u32() % 2 ? 15 : 0;
    int64_t bound = 0;
    CHECK(kvx_codec_stream_bound(T, &bound));
    uint8_t *memory = malloc((size_t)(N * bound + TAIL));
    int32_t lengths[N];
    CHECK(kvx_codec_encode(cdf, BINS + 1, symbols, L, T, C, memory, bound, lengths, NULL));
    int32_t needed = lengths[N - 1], second = 0;
    for (int i = 0; i + 1 < N; i++)
        second = lengths[i] > second ? lengths[i] : second;
    static const int shorts[] = {1, 2, 5, 11};
    for (int k = 0; k < 4; k++) {
        int64_t capacity = needed - shorts[k];
        if (capacity < second) {
            fprintf(stderr, "coder.tight: the last stream is not the only long one\n");
            exit(1);
        }
        memset(memory, 0xA5, (size_t)(N * capacity + TAIL));
        for (int i = 0; i < N; i++)
            lengths[i] = -7;
        if (kvx_codec_encode(cdf, BINS + 1, symbols, L, T, C, memory, capacity, lengths, NULL) !=
            KVX_ERR_BUFFER_TOO_SMALL) {
            fprintf(stderr, "coder.tight: expected KVX_ERR_BUFFER_TOO_SMALL\n");
            exit(1);
        }
        for (int i = 0; i < N; i++)
            if (lengths[i] != -7) {
                fprintf(stderr, "coder.tight: lengths changed by a failed call\n");
                exit(1);
            }
        for (int i = 0; i < TAIL; i++)
            if (memory[N * capacity + i] != 0xA5) {
                fprintf(stderr, "coder.tight: written past the last slot\n");
                exit(1);
            }
        char label[64];
        snprintf(label, sizeof label, "coder.tight%d.error", shorts[k]);
        print_digest(label, kvx_last_error(), strlen(kvx_last_error()));
        snprintf(label, sizeof label, "coder.tight%d.memory", shorts[k]);
        print_digest(label, memory, (size_t)(N * capacity + TAIL));
    }
    free(memory);
}

static void coder_lane_cases(void)
{
    pending_runs_case();
    wide_alphabet_case();
    damaged_streams_case();
    tight_capacity_case();
}

/* ---------------------------------------------------------------- transfer */

static void transfer_cases(void)
{
    enum { L = 2, NB = 40, BS = 16, H = 2, D = 64, T = 200 };
    size_t plane = (size_t)NB * BS * H * D;
    uint16_t *paged[L], *dense = malloc((size_t)2 * L * T * H * D * sizeof *dense);
    void *bases[L];
    for (int l = 0; l < L; l++) {
        paged[l] = malloc(2 * plane * sizeof *paged[l]);
        fill(paged[l], KVX_DTYPE_BFLOAT16, 2 * plane);
        bases[l] = paged[l];
    }
    int64_t slots[T];
    for (int t = 0; t < T; t++)
        slots[t] = t % 9 == 4 ? -1 : (t * 131) % (NB * BS);
    kvx_paged_desc p = {.struct_size = sizeof p,
                        .dtype = KVX_DTYPE_BFLOAT16,
                        .num_layers = L,
                        .num_kv = 2,
                        .num_heads = H,
                        .head_size = D,
                        .num_bases = L,
                        .bases = bases,
                        .block_size = BS,
                        .num_blocks = NB,
                        .kv_stride = (int64_t)plane,
                        .block_stride = BS * H * D,
                        .token_stride = D,
                        .head_stride = BS * D}; /* vLLM HND */
    kvx_dense_desc d = {.struct_size = sizeof d,
                        .dtype = KVX_DTYPE_BFLOAT16,
                        .num_layers = L,
                        .num_kv = 2,
                        .num_heads = H,
                        .head_size = D,
                        .num_tokens = T,
                        .base = dense,
                        .kv_stride = (int64_t)L * T * H * D,
                        .layer_stride = (int64_t)T * H * D,
                        .token_stride = H * D,
                        .head_stride = D};
    memset(dense, 0, (size_t)2 * L * T * H * D * sizeof *dense);
    CHECK(kvx_transfer(&p, &d, slots, KVX_PAGED_TO_DENSE, NULL));
    print_digest("transfer.store", dense, (size_t)2 * L * T * H * D * sizeof *dense);
    for (int l = 0; l < L; l++)
        memset(paged[l], 0, 2 * plane * sizeof *paged[l]);
    CHECK(kvx_transfer(&p, &d, slots, KVX_DENSE_TO_PAGED, NULL));
    for (int l = 0; l < L; l++) {
        char label[32];
        snprintf(label, sizeof label, "transfer.load.%d", l);
        print_digest(label, paged[l], 2 * plane * sizeof *paged[l]);
        free(paged[l]);
    }
    free(dense);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        CHECK(kvx_set_num_threads(atoi(argv[1])));
    /* which variants ran (KVX_CPU_ISA), for the caller to check; not part of the digests */
    fprintf(stderr, "kernels: %s\n", kvx_cpu_kernels());
    rope_cases();
    codec_cases();
    coder_lane_cases();
    transfer_cases();
    return 0;
}
