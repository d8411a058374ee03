/*
 * codec_range_coder_lanes_neon.c - the range coder over 16 streams at once on 64-bit ARM: stream
 * g of a group lives in lane g % 4 of vector g / 4, and each token advances all 16 by one symbol.
 *
 * The design of codec_range_coder_lanes_avx2.c (read its header first) at 128 bits; the lanes
 * compute exactly what range_coder_scalar.h computes for each stream. Where NEON differs:
 *
 * - Narrowing multiplies 32x32->64 (umull): (span * edge) >> 16 = (d * edge + edge) >> 16 with
 *   d = span - 1, narrowed to 32 bits as the scalar coder truncates it, so the top edge (65536)
 *   needs no blend: it gives low - 1 + span = high modulo 2^32.
 * - Leading zeros are native (clz); one shift instruction (ushl) takes a signed count, shifting
 *   left or right and giving 0 past 31 either way, so the AVX2 pairs of opposite shifts fold.
 * - NEON has no gather. A lane's two edges s and s + 1 are adjacent in its own (untransposed)
 *   table: one 64-bit load per stream, at the symbol read back as a byte (the encoder's input,
 *   the decoder's output), and two unzips make the vectors of lower and upper edges. That is 3
 *   instructions per symbol and does not grow with the alphabet, unlike keeping running
 *   maxima and minima of masked rows in the search (4 more per row and vector).
 * - The decoder's count is the scalar decoder's division, two lanes per fdiv. Its symbol search
 *   compares 16-bit edges, 8 lanes at once, against the count narrowed with saturation: edges
 *   1 .. num_symbols - 1 are at most 65535, so a count of 65536 (damaged streams) counts them all
 *   as 65535 does.
 * - The decoder reads each lane's next 32 bits with a scalar load from the padded copy of its
 *   streams (as the AVX2 gather does, inside the copy, bytes past each end reading as zero).
 *
 * Not timed on ARM hardware; tests/test_cross_build.py checks its bits under qemu.
 */
#include "range_coder_lanes.h"

#if KVX_CODER_LANES_NEON
#include <arm_neon.h>
#include <stdlib.h>
#include <string.h>

#define LANES 4
#define VECTORS (KVX_CODEC_GROUP / LANES)

static inline uint32x4_t splat(uint32_t x) { return vdupq_n_u32(x); }

/* x shifted left by count (right where negative; 0 where 32 or more bits either way). */
static inline uint32x4_t shift(uint32x4_t x, uint32x4_t count)
{
    return vshlq_u32(x, vreinterpretq_s32_u32(count));
}

/* Edges s and s + 1 of the tables of streams first .. first + 3, s being symbols[first + i]. */
static inline void edges_at(const cdf_tables *tables, int first, const uint8_t *symbols,
                            uint32x4_t *lo, uint32x4_t *hi)
{
    const uint8_t *s = symbols + first;
    uint32x4_t ab = vcombine_u32(vld1_u32(&tables->entry[first][s[0]]),
                                 vld1_u32(&tables->entry[first + 1][s[1]]));
    uint32x4_t cd = vcombine_u32(vld1_u32(&tables->entry[first + 2][s[2]]),
                                 vld1_u32(&tables->entry[first + 3][s[3]]));
    *lo = vuzp1q_u32(ab, cd);
    *hi = vuzp2q_u32(ab, cd);
}

/* (span * edge) >> 16 modulo 2^32, span = d + 1: the scalar coder's uint32_t cast. */
static inline uint32x4_t scale(uint32x4_t d, uint32x4_t edge)
{
    uint32x2_t d_lo = vget_low_u32(d), edge_lo = vget_low_u32(edge);
    uint64x2_t lo = vmlal_u32(vmovl_u32(edge_lo), d_lo, edge_lo);
    uint64x2_t hi = vmlal_high_u32(vmovl_high_u32(edge), d, edge);
    return vshrn_high_n_u64(vshrn_n_u64(lo, 16), hi, 16);
}

/* The range narrowed to the symbol whose edges are lo and hi: returns the new low and sets
 * *high; the scalar coder's low + (span * lo >> 16) and low - 1 + (span * hi >> 16). */
static inline uint32x4_t narrow(uint32x4_t low, uint32x4_t *high, uint32x4_t lo, uint32x4_t hi)
{
    uint32x4_t d = vsubq_u32(*high, low); /* span - 1 */
    *high = vaddq_u32(vsubq_u32(low, splat(1)), scale(d, hi));
    return vaddq_u32(low, scale(d, lo));
}

/* The E1/E2 shifts by n (known), then the E3 shifts: sets *k and *e3 (bit 31 where k > 0). */
static inline void renormalise(uint32x4_t *low, uint32x4_t *high, uint32x4_t n, uint32x4_t *k,
                               uint32x4_t *e3)
{
    uint32x4_t l = shift(*low, n);
    uint32x4_t h = vmvnq_u32(shift(vmvnq_u32(*high), n));
    *k = vclzq_u32(vmvnq_u32(vshlq_n_u32(vbicq_u32(l, h), 1)));
    *e3 = vandq_u32(vtstq_u32(*k, *k), splat(0x80000000u));
    *low = vbicq_u32(shift(l, *k), *e3);
    *high = vorrq_u32(vmvnq_u32(shift(vmvnq_u32(h), *k)), *e3);
}

static inline uint32x4_t shared_top_bits(uint32x4_t low, uint32x4_t high)
{
    return vclzq_u32(vorrq_u32(veorq_u32(low, high), splat(1)));
}

/* ---------------------------------------------------------------- encoder */

typedef struct encoder_lanes {
    uint32x4_t low, high, pending;
    uint32x4_t buffer;   /* output bits not yet stored, MSB-aligned */
    uint32x4_t buffered; /* how many: 0 .. 31 */
} encoder_lanes;

static void store_words(encoder *enc, uint32x4_t words, unsigned full)
{
    uint32_t word[LANES];
    vst1q_u32(word, words);
    while (full) {
        int g = __builtin_ctz(full);
        full &= full - 1;
        store_word(&enc[g], word[g]);
    }
}

/* Bit g set where lane g of mask is set. */
static inline unsigned lane_bits(uint32x4_t mask)
{
    const uint32x4_t bit = {1, 2, 4, 8};
    return vaddvq_u32(vandq_u32(mask, bit));
}

/* Appends the low `count` (0 .. 32) bits of bits (nothing above them) to each lane's output. */
static inline void append_bits(encoder_lanes *v, encoder *enc, uint32x4_t bits, uint32x4_t count)
{
    uint32x4_t total = vaddq_u32(v->buffered, count);
    /* Left by 32 - total, or right by total - 32 once the word overflows. */
    uint32x4_t word = vorrq_u32(v->buffer, shift(bits, vsubq_u32(splat(32), total)));
    uint32x4_t full = vcgtq_u32(total, splat(31));
    uint32x4_t rest = shift(bits, vsubq_u32(splat(64), total));
    v->buffer = vbslq_u32(full, rest, word);
    v->buffered = vsubq_u32(total, vandq_u32(full, splat(32)));
    unsigned stored = lane_bits(full);
    if (stored)
        store_words(enc, word, stored);
}

/* One symbol per lane, its edges lo and hi. Needs pending <= 14 in every lane: with n <= 18
 * shared top bits (see range_coder_scalar.h), the bits to emit then fit one 32-bit append. */
static inline void encode_step(encoder_lanes *v, encoder *enc, uint32x4_t lo, uint32x4_t hi)
{
    uint32x4_t high = v->high;
    uint32x4_t low = narrow(v->low, &high, lo, hi);
    uint32x4_t n = shared_top_bits(low, high);
    /* The top n bits of low, the pending bits (copies of the first one's complement) right
     * after the first; nothing while n == 0, when the pending bits stay pending (the shifts by
     * n - 1 = -1 then give bits that the mask drops). */
    uint32x4_t emits = vtstq_u32(n, n);
    uint32x4_t first = vshrq_n_u32(low, 31);
    uint32x4_t rest = shift(vshlq_n_u32(low, 1), vsubq_u32(n, splat(33)));
    uint32x4_t fill = vbicq_u32(shift(splat(0xffffffffu), vsubq_u32(v->pending, splat(32))),
                                vtstq_u32(first, first));
    uint32x4_t n_less_1 = vsubq_u32(n, splat(1));
    uint32x4_t bits = vorrq_u32(shift(first, vaddq_u32(v->pending, n_less_1)),
                                vorrq_u32(shift(fill, n_less_1), rest));
    append_bits(v, enc, vandq_u32(bits, emits), vandq_u32(vaddq_u32(n, v->pending), emits));
    uint32x4_t k, e3;
    renormalise(&low, &high, n, &k, &e3);
    v->pending = vaddq_u32(vbicq_u32(v->pending, emits), k);
    v->low = low;
    v->high = high;
}

static void load_encoders(encoder_lanes *v, const encoder *enc)
{
    kvx_encoder_words words;
    kvx_cpu_lanes_from_encoders(enc, &words);
    for (int i = 0; i < VECTORS; i++) {
        v[i].low = vld1q_u32(&words.low[i * LANES]);
        v[i].high = vld1q_u32(&words.high[i * LANES]);
        v[i].pending = vld1q_u32(&words.pending[i * LANES]);
        v[i].buffer = vld1q_u32(&words.buffer[i * LANES]);
        v[i].buffered = vld1q_u32(&words.buffered[i * LANES]);
    }
}

static void store_encoders(const encoder_lanes *v, encoder *enc)
{
    kvx_encoder_words words;
    for (int i = 0; i < VECTORS; i++) {
        vst1q_u32(&words.low[i * LANES], v[i].low);
        vst1q_u32(&words.high[i * LANES], v[i].high);
        vst1q_u32(&words.pending[i * LANES], v[i].pending);
        vst1q_u32(&words.buffer[i * LANES], v[i].buffer);
        vst1q_u32(&words.buffered[i * LANES], v[i].buffered);
    }
    kvx_cpu_lanes_to_encoders(&words, enc);
}

static inline int too_deep(const encoder_lanes *v)
{
    uint32x4_t deepest = vmaxq_u32(vmaxq_u32(v[0].pending, v[1].pending),
                                   vmaxq_u32(v[2].pending, v[3].pending));
    return vmaxvq_u32(deepest) > KVX_LANE_MAX_PENDING;
}

void kvx_cpu_encode_lanes_neon(const uint16_t *cdf, int32_t cdf_len, const uint8_t *symbols,
                               int64_t stride, int64_t num_tokens, encoder enc[KVX_CODEC_GROUP])
{
    cdf_tables tables;
    load_tables(&tables, cdf, cdf_len, KVX_CODEC_GROUP);
    encoder_lanes v[VECTORS];
    load_encoders(v, enc);
    for (int64_t t = 0; t < num_tokens; t++) {
        const uint8_t *row = symbols + t * stride;
        if (too_deep(v)) {
            /* A long run of pending bits (rare): scalar steps until every stream is back. */
            store_encoders(v, enc);
            while (!kvx_cpu_lanes_encode_token(enc, cdf, cdf_len, symbols + t * stride))
                if (++t == num_tokens)
                    return;
            load_encoders(v, enc);
            continue;
        }
#pragma GCC unroll 4
        for (int i = 0; i < VECTORS; i++) {
            uint32x4_t lo, hi;
            edges_at(&tables, i * LANES, row, &lo, &hi);
            encode_step(&v[i], enc + i * LANES, lo, hi);
        }
    }
    store_encoders(v, enc);
}

/* ---------------------------------------------------------------- decoder */

/* Edge j of the KVX_CODEC_GROUP streams in row j, for the symbol search (rows 1 .. cdf_len - 2,
 * all at most 65535). */
typedef struct search_rows {
    uint16_t row[KVX_CODEC_MAX_CDF_LEN][KVX_CODEC_GROUP];
} search_rows;

static void transpose_rows(search_rows *rows, const uint16_t *cdf, int32_t cdf_len)
{
    for (int g = 0; g < KVX_CODEC_GROUP; g++)
        for (int32_t j = 0; j + 1 < cdf_len; j++)
            rows->row[j][g] = cdf[(int64_t)g * cdf_len + j];
}

typedef struct decoder_lanes {
    uint32x4_t low, high, value;
    uint32x4_t bitpos; /* next input bit of each stream */
    uint32x4_t start;  /* where each stream starts in the padded copy */
    uint32x4_t length; /* its length in bytes */
} decoder_lanes;

/* LMCache's count = ((target + 1) * 65536 - 1) / (d + 1) of 2 lanes, as the scalar decoder's
 * double-precision division (exact, see range_coder_scalar.h), saturated to 32 bits. */
static inline uint32x2_t count_pair(uint32x2_t target, uint32x2_t d)
{
    float64x2_t numerator = vcvtq_f64_u64(vaddq_u64(vshll_n_u32(target, 16), vdupq_n_u64(65535)));
    float64x2_t span = vcvtq_f64_u64(vaddw_u32(vdupq_n_u64(1), d));
    return vqmovn_u64(vcvtq_u64_f64(vdivq_f64(numerator, span)));
}

/* The counts of 8 lanes (two vectors), saturated to 16 bits: the scalar decoder caps them at
 * 65536, which the search counts as it does 65535. */
static inline uint16x8_t lmcache_counts(const decoder_lanes *v)
{
    uint32x4_t count[2];
    for (int i = 0; i < 2; i++) {
        uint32x4_t target = vsubq_u32(v[i].value, v[i].low), d = vsubq_u32(v[i].high, v[i].low);
        count[i] = vcombine_u32(count_pair(vget_low_u32(target), vget_low_u32(d)),
                                count_pair(vget_high_u32(target), vget_high_u32(d)));
    }
    return vqmovn_high_u32(vqmovn_u32(count[0]), count[1]);
}

/* Each of 8 lanes' symbol: how many of its table's edges 1 .. num_symbols - 1 are <= count. */
static inline uint16x8_t find_symbols(const search_rows *rows, int first, uint16x8_t count,
                                      int32_t num_symbols)
{
    uint16x8_t s = vdupq_n_u16(0);
#pragma GCC unroll 32 /* gcc leaves the loop rolled otherwise, even for constant counts */
    for (int32_t j = 1; j < num_symbols; j++)
        s = vsubq_u16(s, vcleq_u16(vld1q_u16(&rows->row[j][first]), count));
    return s;
}

/* The 32 bits at each lane's bitpos (the copy's padding makes every read land inside it). */
static inline uint32x4_t peek_lanes(const decoder_lanes *v, const uint8_t *copy)
{
    uint32x4_t at = vaddq_u32(v->start, vminq_u32(vshrq_n_u32(v->bitpos, 3), v->length));
    uint32_t index[LANES], word[LANES];
    vst1q_u32(index, at);
    for (int g = 0; g < LANES; g++)
        memcpy(&word[g], copy + index[g], 4);
    uint32x4_t words = vld1q_u32(word);
    words = vreinterpretq_u32_u8(vrev32q_u8(vreinterpretq_u8_u32(words)));
    return shift(words, vandq_u32(v->bitpos, splat(7)));
}

/* Moves the state of one vector past the symbols just decoded (in symbols[first ..]). */
static inline void advance(decoder_lanes *v, const cdf_tables *tables, int first,
                           const uint8_t *symbols, const uint8_t *copy)
{
    uint32x4_t lo, hi, high = v->high;
    edges_at(tables, first, symbols, &lo, &hi);
    uint32x4_t low = narrow(v->low, &high, lo, hi);
    uint32x4_t n = shared_top_bits(low, high), k, e3;
    renormalise(&low, &high, n, &k, &e3);
    v->low = low;
    v->high = high;
    /* n + k <= 18 bits enter value, as in the scalar decoder; a shift by -32 (m = 0) gives 0. */
    uint32x4_t m = vaddq_u32(n, k);
    uint32x4_t bits = shift(peek_lanes(v, copy), vsubq_u32(m, splat(32)));
    v->bitpos = vaddq_u32(v->bitpos, m);
    v->value = veorq_u32(vorrq_u32(shift(v->value, m), bits), e3);
}

/* The token loop, inlined with LMCache's bin counts as constants (unrolled searches). The state
 * does not move past the last token (LMCache's decoder stops there). */
static inline __attribute__((always_inline)) void decode_tokens(
    decoder_lanes *v, const search_rows *rows, const cdf_tables *tables, const uint8_t *copy,
    int64_t num_tokens, uint8_t *symbols, int64_t stride, int32_t num_symbols)
{
    for (int64_t t = 0; t < num_tokens; t++) {
        uint8_t *row = symbols + t * stride;
        uint16x8_t s0 = find_symbols(rows, 0, lmcache_counts(v), num_symbols);
        uint16x8_t s1 = find_symbols(rows, 2 * LANES, lmcache_counts(v + 2), num_symbols);
        vst1q_u8(row, vmovn_high_u16(vmovn_u16(s0), s1));
        if (t == num_tokens - 1)
            break;
#pragma GCC unroll 4 /* as the AVX2 file's two calls: independent chains, interleaved */
        for (int i = 0; i < VECTORS; i++)
            advance(&v[i], tables, i * LANES, row, copy);
    }
}

static void load_decoders(decoder_lanes *v, const uint8_t *copy, const uint32_t *start,
                          const int64_t *len)
{
    uint32_t length[LANES];
    for (int g = 0; g < LANES; g++)
        length[g] = (uint32_t)len[g];
    v->start = vld1q_u32(start);
    v->length = vld1q_u32(length);
    v->low = vdupq_n_u32(0);
    v->high = splat(0xffffffffu);
    v->bitpos = vdupq_n_u32(0);
    v->value = peek_lanes(v, copy); /* the first 32 bits */
    v->bitpos = splat(32);
}

int kvx_cpu_decode_lanes_neon(const uint16_t *cdf, int32_t cdf_len,
                              const uint8_t *const src[KVX_CODEC_GROUP],
                              const int64_t len[KVX_CODEC_GROUP], int64_t num_tokens,
                              uint8_t *symbols, int64_t stride)
{
    uint32_t start[KVX_CODEC_GROUP];
    uint8_t *copy = kvx_cpu_lanes_padded_copy(src, len, num_tokens, start);
    if (!copy)
        return 0;
    cdf_tables tables;
    search_rows rows;
    load_tables(&tables, cdf, cdf_len, KVX_CODEC_GROUP);
    transpose_rows(&rows, cdf, cdf_len);
    decoder_lanes v[VECTORS];
    for (int i = 0; i < VECTORS; i++)
        load_decoders(&v[i], copy, start + i * LANES, len + i * LANES);
    switch (cdf_len - 1) {
    case 32: decode_tokens(v, &rows, &tables, copy, num_tokens, symbols, stride, 32); break;
    case 16: decode_tokens(v, &rows, &tables, copy, num_tokens, symbols, stride, 16); break;
    default:
        decode_tokens(v, &rows, &tables, copy, num_tokens, symbols, stride, cdf_len - 1);
        break;
    }
    free(copy);
    return 1;
}
#endif
