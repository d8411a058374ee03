/*
 * gpu_codec_core_harness.cpp - runs the GPU codec's per-token and per-stream logic
 * (libkvx/src/gpu/codec_core.h) on the host, so tests/test_gpu_codec_core.py can compare it with
 * the CPU backend and LMCache's golden vectors without a GPU. Built with g++ -ffp-contract=off.
 *
 * Usage: harness OP DIR. DIR/args holds whitespace-separated integers; inputs and outputs are
 * raw little-endian arrays DIR/NAME.bin. `lanes` splits each token's channels the way a thread
 * block does (lane i takes channels i, i + lanes, ...; the scale is the max over lanes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include "../../libkvx/src/gpu/codec_core.h"

static std::string dir;

static std::vector<long long> read_args()
{
    std::vector<long long> args;
    FILE *f = fopen((dir + "/args").c_str(), "r");
    long long v;
    while (f && fscanf(f, "%lld", &v) == 1)
        args.push_back(v);
    if (f)
        fclose(f);
    return args;
}

template <typename T> static std::vector<T> load(const char *name)
{
    std::vector<T> data;
    FILE *f = fopen((dir + "/" + name + ".bin").c_str(), "rb");
    if (!f) {
        fprintf(stderr, "missing %s.bin\n", name);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    data.resize((size_t)size / sizeof(T));
    if (!data.empty() && fread(data.data(), sizeof(T), data.size(), f) != data.size())
        exit(2);
    fclose(f);
    return data;
}

template <typename T> static void save(const char *name, const std::vector<T> &data)
{
    FILE *f = fopen((dir + "/" + name + ".bin").c_str(), "wb");
    if (!f || (!data.empty() && fwrite(data.data(), sizeof(T), data.size(), f) != data.size()))
        exit(2);
    fclose(f);
}

static int64_t elem_size(int32_t dtype) { return dtype == KVX_DTYPE_FLOAT32 ? 4 : 2; }

/* args: dtype rows tokens channels lanes bins[rows]. In: x. Out: symbols, scales, bad. */
static void quantize(const std::vector<long long> &a)
{
    int32_t dtype = (int32_t)a[0];
    int64_t rows = a[1], tokens = a[2], n = a[3], lanes = a[4], es = elem_size(dtype);
    std::vector<uint8_t> x = load<uint8_t>("x"), symbols((size_t)(rows * tokens * n), 0);
    std::vector<float> scales((size_t)(rows * tokens), 0.0f);
    std::vector<uint8_t> bad((size_t)(rows * tokens), 0);
    for (int64_t i = 0; i < rows * tokens; i++) {
        const void *token = x.data() + i * n * es;
        int32_t max_int = (int32_t)a[5 + i / tokens] / 2 - 1;
        uint8_t *out = symbols.data() + i * n;
        if (lanes == 1) {
            bad[i] = (uint8_t)kvx_cc_quantize_token(token, dtype, n, max_int, out, &scales[i]);
            continue;
        }
        uint32_t bits = 0;
        for (int64_t lane = 0; lane < lanes; lane++) {
            uint32_t m = kvx_cc_max_magnitude(token, dtype, n, lane, lanes);
            bits = m > bits ? m : bits;
        }
        if (bits >= kvx_cc_inf_bits(dtype)) {
            bad[i] = 1;
            continue;
        }
        scales[i] = kvx_cc_from_bits(bits, dtype);
        for (int64_t lane = 0; lane < lanes; lane++)
            kvx_cc_quantize_channels(token, dtype, n, lane, lanes, max_int, scales[i], out);
    }
    save("symbols", symbols);
    save("scales", scales);
    save("bad", bad);
}

/* args: dtype rows tokens channels lanes bins[rows]. In: symbols, scales. Out: out. */
static void dequantize(const std::vector<long long> &a)
{
    int32_t dtype = (int32_t)a[0];
    int64_t rows = a[1], tokens = a[2], n = a[3], lanes = a[4], es = elem_size(dtype);
    std::vector<uint8_t> symbols = load<uint8_t>("symbols");
    std::vector<float> scales = load<float>("scales");
    std::vector<uint8_t> out((size_t)(rows * tokens * n * es), 0);
    for (int64_t i = 0; i < rows * tokens; i++) {
        int32_t max_int = (int32_t)a[5 + i / tokens] / 2 - 1;
        for (int64_t lane = 0; lane < lanes; lane++)
            kvx_cc_dequantize_channels(symbols.data() + i * n, scales[i], max_int, dtype,
                                       out.data() + i * n * es, n, lane, lanes);
    }
    save("out", out);
}

/* args: layers tokens channels num_bins. In: symbols. Out: cdf, bad (first bad token or -1). */
static void cdf(const std::vector<long long> &a)
{
    int64_t layers = a[0], tokens = a[1], n = a[2];
    int32_t nb = (int32_t)a[3];
    std::vector<uint8_t> symbols = load<uint8_t>("symbols");
    std::vector<uint16_t> tables((size_t)(layers * n * (nb + 1)));
    std::vector<int64_t> bad((size_t)(layers * n));
    std::vector<uint32_t> counts((size_t)nb + 1);
    for (int64_t i = 0; i < layers * n; i++) {
        int64_t l = i / n, c = i % n;
        bad[i] = kvx_cc_cdf_column(symbols.data() + l * tokens * n + c, n, tokens, nb,
                                   counts.data(), tables.data() + i * (nb + 1));
    }
    save("cdf", tables);
    save("bad", bad);
}

/* args: layers tokens channels cdf_len capacity. In: cdf, symbols. Out: streams, lengths,
 * needed, bad_symbol (token or -1), bad_cdf (entry or -1). */
static void encode(const std::vector<long long> &a)
{
    int64_t layers = a[0], tokens = a[1], n = a[2], capacity = a[4];
    int32_t cdf_len = (int32_t)a[3];
    std::vector<uint16_t> tables = load<uint16_t>("cdf");
    std::vector<uint8_t> symbols = load<uint8_t>("symbols");
    /* 0xee marks bytes the encoder must not touch: the test checks the slack stays as it was. */
    std::vector<uint8_t> streams((size_t)(layers * n * capacity), 0xee);
    std::vector<int32_t> lengths((size_t)(layers * n));
    std::vector<int64_t> needed((size_t)(layers * n), 0), bad_symbol((size_t)(layers * n), -1);
    std::vector<int32_t> bad_cdf((size_t)(layers * n));
    for (int64_t i = 0; i < layers * n; i++) {
        int64_t l = i / n, c = i % n;
        const uint16_t *table = tables.data() + i * cdf_len;
        bad_cdf[i] = kvx_cc_cdf_bad_entry(table, cdf_len);
        if (bad_cdf[i] >= 0)
            continue;
        bad_symbol[i] = kvx_cc_encode_stream(table, cdf_len, symbols.data() + l * tokens * n + c, n,
                                             tokens, streams.data() + i * capacity, capacity,
                                             &needed[i]);
        lengths[i] = (int32_t)(needed[i] < capacity ? needed[i] : capacity);
    }
    save("streams", streams);
    save("lengths", lengths);
    save("needed", needed);
    save("bad_symbol", bad_symbol);
    save("bad_cdf", bad_cdf);
}

/* args: layers tokens channels cdf_len prefsum capacity num_bytes. In: cdf, bytes, and lengths
 * (int32) or ends (int64). Out: symbols (0xee where a stream was skipped), bad (per stream:
 * 0 ok, 1 extent, 2 cdf). */
static void decode(const std::vector<long long> &a)
{
    int64_t layers = a[0], tokens = a[1], n = a[2], capacity = a[5], num_bytes = a[6];
    int32_t cdf_len = (int32_t)a[3];
    bool prefsum = a[4] != 0;
    std::vector<uint16_t> tables = load<uint16_t>("cdf");
    std::vector<uint8_t> bytes = load<uint8_t>("bytes");
    std::vector<int32_t> lengths;
    std::vector<int64_t> ends;
    if (prefsum)
        ends = load<int64_t>("ends");
    else
        lengths = load<int32_t>("lengths");
    std::vector<uint8_t> symbols((size_t)(layers * tokens * n), 0xee);
    std::vector<uint8_t> bad((size_t)(layers * n), 0);
    for (int64_t i = 0; i < layers * n; i++) {
        int64_t l = i / n, c = i % n, start = 0, len = 0;
        const uint16_t *table = tables.data() + i * cdf_len;
        if (kvx_cc_stream_extent(prefsum ? nullptr : lengths.data(),
                                 prefsum ? ends.data() : nullptr, capacity, num_bytes, i, &start,
                                 &len)) {
            bad[i] = 1;
            continue;
        }
        if (kvx_cc_cdf_bad_entry(table, cdf_len) >= 0) {
            bad[i] = 2;
            continue;
        }
        kvx_cc_decode_stream(table, cdf_len, bytes.data() + start, len, tokens,
                             symbols.data() + l * tokens * n + c, n);
    }
    save("symbols", symbols);
    save("bad", bad);
}

/* ---------------------------------------------------------------- the decoder's count */

/* What kvx_cc_count replaces: the 64-bit division, clamped to 65536. */
static int32_t divided_count(uint32_t target, uint64_t span)
{
    uint64_t quotient = ((((uint64_t)target + 1) << 16) - 1) / span;
    return quotient < 65536u ? (int32_t)quotient : 65536;
}

static uint64_t next_random(uint64_t *state) /* splitmix64 */
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static long long checked_pairs = 0;

/* kvx_cc_count(target, span) must equal the division. Where the quotient is below 2^16, the
 * float estimate must also be within 1 of it when it errs by 2 ulp either way (a GPU's fast
 * division), and the correction must recover the quotient from any estimate within 1. */
static void check_count(uint32_t target, uint64_t span)
{
    const int32_t want = divided_count(target, span), got = kvx_cc_count(target, span);
    if (got != want) {
        fprintf(stderr, "kvx_cc_count(%u, %llu) = %d, the division gives %d\n", target,
                (unsigned long long)span, got, want);
        exit(1);
    }
    checked_pairs++;
    if (target >= span)
        return;
    const uint64_t num = (((uint64_t)target + 1) << 16) - 1;
    float estimate = (float)num / (float)span;
    float low = nextafterf(nextafterf(estimate, 0.0f), 0.0f);
    float high = nextafterf(nextafterf(estimate, 1e9f), 1e9f);
    for (float e : {low, estimate, high})
        if ((int64_t)e < want - 1 || (int64_t)e > want + 1) {
            fprintf(stderr, "estimate %.9g for %u / %llu is more than 1 from %d\n", (double)e,
                    target, (unsigned long long)span, want);
            exit(1);
        }
    for (int64_t off = -1; off <= 1; off++)
        if (kvx_cc_correct_quotient(num, span, want + off) != want) {
            fprintf(stderr, "correcting %lld for %u / %llu does not give %d\n",
                    (long long)(want + off), target, (unsigned long long)span, want);
            exit(1);
        }
}

/* Targets around span (valid below it, damaged from it on), random ones, and those around the
 * steps of the quotient, where an estimate is likeliest to be off: for q = 0, 1, 65534, 65535
 * and random ones, the smallest target whose quotient reaches q, and its neighbours. */
static void check_span(uint64_t span, uint64_t *rng, int steps)
{
    const uint64_t top = 0xffffffffull;
    const uint64_t fixed[] = {0, 1, 2, span - 2, span - 1, span, span + 1, top - 1, top, top / 2};
    for (uint64_t t : fixed)
        if (t <= top)
            check_count((uint32_t)t, span);
    for (int i = 0; i < steps; i++) {
        uint64_t q = i < 4 ? (uint64_t)(i < 2 ? i : 65534 + i - 2) : next_random(rng) % 65536;
        uint64_t first = (q * span + 1 + 65535) / 65536 -
                         1; /* (first + 1) * 2^16 - 1 >= q * span */
        for (uint64_t t = first >= 1 ? first - 1 : 0; t <= first + 1; t++)
            if (t <= top)
                check_count((uint32_t)t, span);
    }
    check_count((uint32_t)(next_random(rng) % span), span);
    check_count((uint32_t)next_random(rng), span);
}

/* args: random_spans seed. Out: checked (the number of (target, span) pairs). */
static void count(const std::vector<long long> &a)
{
    uint64_t rng = (uint64_t)a[1];
    for (uint64_t span = 1; span <= 2048; span++) /* every target, damaged ones too */
        for (uint64_t t = 0; t <= span + 2; t++)
            check_count((uint32_t)t, span);
    for (int bits = 1; bits <= 32; bits++) /* powers of two and their neighbours */
        for (int64_t off = -2; off <= 2; off++) {
            uint64_t span = (1ull << bits) + (uint64_t)off;
            if (span >= 1 && span <= (1ull << 32))
                check_span(span, &rng, 64);
        }
    for (long long i = 0; i < a[0]; i++) { /* random spans, uniform in 1 .. 2^32 and in log */
        uint64_t r = next_random(&rng);
        uint64_t span = i % 2 ? r % (1ull << 32) + 1 : ((r >> 6) & ((1ull << (r % 33)) - 1)) + 1;
        check_span(span, &rng, 4);
    }
    save("checked", std::vector<long long>{checked_pairs});
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s quantize|dequantize|cdf|encode|decode|count DIR\n", argv[0]);
        return 2;
    }
    dir = argv[2];
    std::vector<long long> a = read_args();
    std::string op = argv[1];
    if (op == "quantize")
        quantize(a);
    else if (op == "dequantize")
        dequantize(a);
    else if (op == "cdf")
        cdf(a);
    else if (op == "encode")
        encode(a);
    else if (op == "decode")
        decode(a);
    else if (op == "count")
        count(a);
    else
        return 2;
    return 0;
}
