/*
 * codec_range_coder_lanes_avx2.c - the range coder over 16 streams at once: stream g of a group
 * lives in lane g % 8 of vector g / 8, and each token advances all 16 by one symbol.
 *
 * The streams are independent, so the lanes compute exactly what range_coder_scalar.h computes
 * for each stream, with 32-bit vector operations:
 *
 * - Narrowing needs (span * edge) >> 16 with span up to 2^32 and edge up to 65536. Splitting
 *   span - 1 = 65536 * sh + sl gives span * edge >> 16 = sh * edge + ((sl + 1) * edge >> 16),
 *   both products below 2^32 for every edge below 65536; the top edge (65536, only ever the
 *   upper edge of the last symbol) leaves high as it was, which a blend does.
 * - Renormalisation counts leading zeros, which AVX2 lacks: the float conversion of x / 2 with
 *   the bit below its top bit cleared (so that rounding cannot carry into the exponent) has
 *   exponent 127 + 30 - clz(x).
 * - The decoder's count is the scalar decoder's double-precision division, four lanes at a time.
 *   Its symbol search counts the table edges <= count in 16-bit lanes, all 16 streams in one
 *   compare per edge (the tables are stored transposed: row j holds edge j of the 16 streams).
 *   Both sides gather the two edges of each lane's symbol from 32-bit transposed tables.
 * - The encoder appends each lane's output bits to a 32-bit buffer and stores a word when one is
 *   complete; the decoder reads each lane's next bits with a gather from a copy of its streams,
 *   each followed by zero bytes, so that every read stays inside the copy and bytes past a
 *   stream's end read as zero.
 */
#include "range_coder_lanes.h"

#if KVX_CODER_LANES
#include <immintrin.h>
#include <stdlib.h>

#define ATTR __attribute__((target("avx2")))
#define LANES 8
#define VECTORS (KVX_CODEC_GROUP / LANES)

/* Row j of the transposed tables: entry j of the KVX_CODEC_GROUP streams' tables, with the
 * implicit 65536 as row cdf_len - 1. */
typedef struct lane_tables {
    uint32_t row[KVX_CODEC_MAX_CDF_LEN][KVX_CODEC_GROUP];
} lane_tables;

static void transpose_tables(lane_tables *tables, const uint16_t *cdf, int32_t cdf_len)
{
    for (int g = 0; g < KVX_CODEC_GROUP; g++) {
        for (int32_t j = 0; j + 1 < cdf_len; j++)
            tables->row[j][g] = cdf[(int64_t)g * cdf_len + j];
        tables->row[cdf_len - 1][g] = 0x10000u;
    }
}

ATTR static inline __m256i splat(uint32_t x) { return _mm256_set1_epi32((int)x); }

/* Lane offsets g of the vector that starts at stream `first`. */
ATTR static inline __m256i lane_index(int first)
{
    return _mm256_setr_epi32(first, first + 1, first + 2, first + 3, first + 4, first + 5,
                             first + 6, first + 7);
}

/* Edge s[lane] of each lane's table (row s, column lane). */
ATTR static inline __m256i edge_at(const lane_tables *tables, __m256i s, __m256i lanes)
{
    __m256i index = _mm256_add_epi32(_mm256_slli_epi32(s, 4), lanes); /* s * 16 + lane */
    return _mm256_i32gather_epi32((const int *)tables->row, index, 4);
}

/* Leading zeros of each lane, none of which may be 0. */
ATTR static inline __m256i clz_nonzero(__m256i x)
{
    __m256i half = _mm256_srli_epi32(x, 1);
    __m256i single = _mm256_andnot_si256(_mm256_srli_epi32(half, 1), half);
    __m256i exponent = _mm256_srli_epi32(_mm256_castps_si256(_mm256_cvtepi32_ps(single)), 23);
    /* half == 0 (x == 1) converts to 0.0, exponent 0: the min makes that 31. */
    return _mm256_min_epi32(_mm256_sub_epi32(splat(157), exponent), splat(31));
}

/* The range narrowed to the symbol whose edges are lo and hi: returns the new low and sets
 * *high; the scalar coder's low + (span * lo >> 16) and low - 1 + (span * hi >> 16). */
ATTR static inline __m256i narrow(__m256i low, __m256i *high, __m256i lo, __m256i hi)
{
    __m256i d = _mm256_sub_epi32(*high, low); /* span - 1 */
    __m256i sh = _mm256_srli_epi32(d, 16);
    __m256i sl = _mm256_add_epi32(_mm256_and_si256(d, splat(0xffff)), splat(1));
    __m256i r_lo = _mm256_add_epi32(_mm256_mullo_epi32(sh, lo),
                                    _mm256_srli_epi32(_mm256_mullo_epi32(sl, lo), 16));
    __m256i r_hi = _mm256_add_epi32(_mm256_mullo_epi32(sh, hi),
                                    _mm256_srli_epi32(_mm256_mullo_epi32(sl, hi), 16));
    __m256i top = _mm256_cmpeq_epi32(hi, splat(0x10000u));
    __m256i new_high = _mm256_add_epi32(low, _mm256_sub_epi32(r_hi, splat(1)));
    *high = _mm256_blendv_epi8(new_high, *high, top);
    return _mm256_add_epi32(low, r_lo);
}

/* The E1/E2 shifts by n (known), then the E3 shifts: sets *k and *e3 (bit 31 where k > 0). */
ATTR static inline void renormalise(__m256i *low, __m256i *high, __m256i n, __m256i *k, __m256i *e3)
{
    __m256i ones = splat(0xffffffffu);
    __m256i l = _mm256_sllv_epi32(*low, n);
    __m256i h = _mm256_xor_si256(_mm256_sllv_epi32(_mm256_xor_si256(*high, ones), n), ones);
    *k = clz_nonzero(_mm256_xor_si256(_mm256_slli_epi32(_mm256_andnot_si256(h, l), 1), ones));
    *e3 = _mm256_and_si256(_mm256_cmpgt_epi32(*k, _mm256_setzero_si256()), splat(0x80000000u));
    *low = _mm256_andnot_si256(*e3, _mm256_sllv_epi32(l, *k));
    *high = _mm256_or_si256(
        _mm256_xor_si256(_mm256_sllv_epi32(_mm256_xor_si256(h, ones), *k), ones), *e3);
}

ATTR static inline __m256i shared_top_bits(__m256i low, __m256i high)
{
    return clz_nonzero(_mm256_or_si256(_mm256_xor_si256(low, high), splat(1)));
}

/* Reverses the bytes of each 32-bit lane (the streams are big-endian). */
ATTR static inline __m256i byte_swap(__m256i x)
{
    const __m256i order = _mm256_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3,
                                           2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
    return _mm256_shuffle_epi8(x, order);
}

/* ---------------------------------------------------------------- encoder */

typedef struct encoder_lanes {
    __m256i low, high, pending;
    __m256i buffer; /* output bits not yet stored, MSB-aligned */
    __m256i buffered; /* how many: 0 .. 31 */
} encoder_lanes;

ATTR static void store_words(encoder *enc, __m256i words, int full)
{
    uint32_t word[LANES];
    _mm256_storeu_si256((__m256i *)word, words);
    while (full) {
        int g = __builtin_ctz((unsigned)full);
        full &= full - 1;
        store_word(&enc[g], word[g]);
    }
}

/* Appends the low `count` (0 .. 32) bits of bits (nothing above them) to each lane's output. */
ATTR static inline void append_bits(encoder_lanes *v, encoder *enc, __m256i bits, __m256i count)
{
    __m256i total = _mm256_add_epi32(v->buffered, count);
    /* Shift counts above 31 give 0: of the two shifts, the one for the other case vanishes. */
    __m256i word = _mm256_or_si256(
        v->buffer, _mm256_or_si256(_mm256_srlv_epi32(bits, _mm256_sub_epi32(total, splat(32))),
                                   _mm256_sllv_epi32(bits, _mm256_sub_epi32(splat(32), total))));
    __m256i full = _mm256_cmpgt_epi32(total, splat(31));
    __m256i rest = _mm256_sllv_epi32(bits, _mm256_sub_epi32(splat(64), total));
    v->buffer = _mm256_blendv_epi8(word, rest, full);
    v->buffered = _mm256_sub_epi32(total, _mm256_and_si256(full, splat(32)));
    int stored = _mm256_movemask_ps(_mm256_castsi256_ps(full));
    if (stored)
        store_words(enc, word, stored);
}

/* One symbol per lane. Needs pending <= 14 in every lane: with n <= 18 shared top bits (see
 * range_coder_scalar.h), the bits to emit then fit one 32-bit append. */
ATTR static inline void encode_step(encoder_lanes *v, encoder *enc, const lane_tables *tables,
                                    __m256i lanes, __m256i s)
{
    __m256i high = v->high;
    __m256i low = narrow(v->low, &high, edge_at(tables, s, lanes),
                         edge_at(tables, _mm256_add_epi32(s, splat(1)), lanes));
    __m256i n = shared_top_bits(low, high);
    __m256i zero = _mm256_setzero_si256();
    /* The top n bits of low, the pending bits (copies of the first one's complement) right
     * after the first; nothing while n == 0, when the pending bits stay pending. */
    __m256i emits = _mm256_cmpgt_epi32(n, zero);
    __m256i first = _mm256_srli_epi32(low, 31);
    __m256i rest = _mm256_srlv_epi32(_mm256_slli_epi32(low, 1), _mm256_sub_epi32(splat(33), n));
    __m256i fill = _mm256_andnot_si256(_mm256_cmpgt_epi32(first, zero),
                                       _mm256_srlv_epi32(splat(0xffffffffu),
                                                         _mm256_sub_epi32(splat(32), v->pending)));
    __m256i n_less_1 = _mm256_sub_epi32(n, splat(1));
    __m256i bits = _mm256_or_si256(_mm256_sllv_epi32(first, _mm256_add_epi32(v->pending, n_less_1)),
                                   _mm256_or_si256(_mm256_sllv_epi32(fill, n_less_1), rest));
    append_bits(v, enc, _mm256_and_si256(bits, emits),
                _mm256_and_si256(_mm256_add_epi32(n, v->pending), emits));
    __m256i k, e3;
    renormalise(&low, &high, n, &k, &e3);
    v->pending = _mm256_add_epi32(_mm256_andnot_si256(emits, v->pending), k);
    v->low = low;
    v->high = high;
}

ATTR static void load_encoders(encoder_lanes *v, const encoder *enc)
{
    kvx_encoder_words words;
    kvx_cpu_lanes_from_encoders(enc, &words);
    for (int i = 0; i < VECTORS; i++) {
        v[i].low = _mm256_loadu_si256((const __m256i *)&words.low[i * LANES]);
        v[i].high = _mm256_loadu_si256((const __m256i *)&words.high[i * LANES]);
        v[i].pending = _mm256_loadu_si256((const __m256i *)&words.pending[i * LANES]);
        v[i].buffer = _mm256_loadu_si256((const __m256i *)&words.buffer[i * LANES]);
        v[i].buffered = _mm256_loadu_si256((const __m256i *)&words.buffered[i * LANES]);
    }
}

ATTR static void store_encoders(const encoder_lanes *v, encoder *enc)
{
    kvx_encoder_words words;
    for (int i = 0; i < VECTORS; i++) {
        _mm256_storeu_si256((__m256i *)&words.low[i * LANES], v[i].low);
        _mm256_storeu_si256((__m256i *)&words.high[i * LANES], v[i].high);
        _mm256_storeu_si256((__m256i *)&words.pending[i * LANES], v[i].pending);
        _mm256_storeu_si256((__m256i *)&words.buffer[i * LANES], v[i].buffer);
        _mm256_storeu_si256((__m256i *)&words.buffered[i * LANES], v[i].buffered);
    }
    kvx_cpu_lanes_to_encoders(&words, enc);
}

ATTR void kvx_cpu_encode_lanes_avx2(const uint16_t *cdf, int32_t cdf_len, const uint8_t *symbols,
                                    int64_t stride, int64_t num_tokens,
                                    encoder enc[KVX_CODEC_GROUP])
{
    lane_tables tables;
    transpose_tables(&tables, cdf, cdf_len);
    encoder_lanes v[VECTORS];
    load_encoders(v, enc);
    const __m256i lanes0 = lane_index(0), lanes1 = lane_index(LANES);
    const __m256i max_pending = splat(KVX_LANE_MAX_PENDING);
    for (int64_t t = 0; t < num_tokens; t++) {
        __m256i deep = _mm256_or_si256(_mm256_cmpgt_epi32(v[0].pending, max_pending),
                                       _mm256_cmpgt_epi32(v[1].pending, max_pending));
        if (!_mm256_testz_si256(deep, deep)) {
            /* A long run of pending bits (rare): scalar steps until every stream is back. */
            store_encoders(v, enc);
            while (!kvx_cpu_lanes_encode_token(enc, cdf, cdf_len, symbols + t * stride))
                if (++t == num_tokens)
                    return;
            load_encoders(v, enc);
            continue;
        }
        __m128i bytes = _mm_loadu_si128((const __m128i *)(symbols + t * stride));
        encode_step(&v[0], enc, &tables, lanes0, _mm256_cvtepu8_epi32(bytes));
        encode_step(&v[1], enc + LANES, &tables, lanes1,
                    _mm256_cvtepu8_epi32(_mm_srli_si128(bytes, LANES)));
    }
    store_encoders(v, enc);
}

/* ---------------------------------------------------------------- decoder */

typedef struct decoder_lanes {
    __m256i low, high, value;
    __m256i bitpos; /* next input bit of each stream */
    __m256i start;  /* where each stream starts in the padded copy */
    __m256i length; /* its length in bytes */
} decoder_lanes;

/* Converts unsigned 32-bit lanes (4 of them) to double, exactly. */
ATTR static inline __m256d u32_to_double(__m128i x)
{
    __m256d biased = _mm256_cvtepi32_pd(_mm_xor_si128(x, _mm_set1_epi32((int)0x80000000u)));
    return _mm256_add_pd(biased, _mm256_set1_pd(2147483648.0));
}

/* LMCache's count = ((target + 1) * 65536 - 1) / (d + 1), capped at 65536, for 4 lanes: the
 * scalar decoder's double-precision division (exact, see range_coder_scalar.h). */
ATTR static inline __m128i count_half(__m128i target, __m128i d)
{
    __m256d numerator = _mm256_add_pd(_mm256_mul_pd(u32_to_double(target), _mm256_set1_pd(65536.0)),
                                      _mm256_set1_pd(65535.0));
    __m256d span = _mm256_add_pd(u32_to_double(d), _mm256_set1_pd(1.0));
    __m256d quotient = _mm256_min_pd(_mm256_div_pd(numerator, span), _mm256_set1_pd(65536.0));
    return _mm256_cvttpd_epi32(quotient);
}

ATTR static inline __m256i lmcache_count(__m256i target, __m256i d)
{
    __m128i lo = count_half(_mm256_castsi256_si128(target), _mm256_castsi256_si128(d));
    __m128i hi = count_half(_mm256_extracti128_si256(target, 1), _mm256_extracti128_si256(d, 1));
    return _mm256_set_m128i(hi, lo);
}

/* The 32 bits at each lane's bitpos (the copy's padding makes every read land inside it). */
ATTR static inline __m256i peek_lanes(const decoder_lanes *v, const uint8_t *copy)
{
    __m256i byte = _mm256_min_epu32(_mm256_srli_epi32(v->bitpos, 3), v->length);
    __m256i word = _mm256_i32gather_epi32((const int *)copy, _mm256_add_epi32(v->start, byte), 1);
    return _mm256_sllv_epi32(byte_swap(word), _mm256_and_si256(v->bitpos, splat(7)));
}

/* The decoder's search rows: row j holds edge j of the 16 streams as 16-bit integers biased by
 * -32768 (AVX2 compares 16-bit lanes as signed), in the order _mm256_packus_epi32 leaves the
 * counts of the two vectors: streams 0-3, 8-11, 4-7, 12-15. One compare then serves 16 streams. */
typedef struct search_rows {
    int16_t row[KVX_CODEC_MAX_CDF_LEN][KVX_CODEC_GROUP];
} search_rows;

static void fill_search_rows(search_rows *rows, const uint16_t *cdf, int32_t cdf_len)
{
    static const int order[KVX_CODEC_GROUP] = {0, 1, 2, 3, 8,  9,  10, 11,
                                               4, 5, 6, 7, 12, 13, 14, 15};
    for (int i = 0; i < KVX_CODEC_GROUP; i++)
        for (int32_t j = 0; j + 1 < cdf_len; j++)
            rows->row[j][i] = (int16_t)(cdf[(int64_t)order[i] * cdf_len + j] ^ 0x8000u);
}

/* Each lane's symbol: how many of its table's edges 1 .. num_symbols - 1 are <= count, that is
 * num_symbols - 1 less the edges above it. A count of 65536 (damaged streams) saturates to 65535
 * in the packing, which no edge exceeds either way. */
ATTR static inline void find_symbols(const search_rows *rows, __m256i count0, __m256i count1,
                                     int32_t num_symbols, __m256i *s0, __m256i *s1)
{
    __m256i count = _mm256_xor_si256(_mm256_packus_epi32(count0, count1),
                                     _mm256_set1_epi16((short)0x8000));
    __m256i s = _mm256_set1_epi16((short)(num_symbols - 1));
    for (int32_t j = 1; j < num_symbols; j++) {
        __m256i edge = _mm256_loadu_si256((const __m256i *)rows->row[j]);
        s = _mm256_add_epi16(s, _mm256_cmpgt_epi16(edge, count));
    }
    *s0 = _mm256_unpacklo_epi16(s, _mm256_setzero_si256());
    *s1 = _mm256_unpackhi_epi16(s, _mm256_setzero_si256());
}

ATTR static inline __m256i decode_count(const decoder_lanes *v)
{
    return lmcache_count(_mm256_sub_epi32(v->value, v->low), _mm256_sub_epi32(v->high, v->low));
}

/* Moves each lane past its decoded symbol s. */
ATTR static inline void decode_advance(decoder_lanes *v, const lane_tables *tables, int first,
                                       const uint8_t *copy, __m256i s)
{
    __m256i lanes = lane_index(first), high = v->high;
    __m256i low = narrow(v->low, &high, edge_at(tables, s, lanes),
                         edge_at(tables, _mm256_add_epi32(s, splat(1)), lanes));
    __m256i n = shared_top_bits(low, high), k, e3;
    renormalise(&low, &high, n, &k, &e3);
    v->low = low;
    v->high = high;
    /* n + k <= 18 bits enter value, as in the scalar decoder; a shift by 32 (m = 0) gives 0. */
    __m256i m = _mm256_add_epi32(n, k);
    __m256i bits = _mm256_srlv_epi32(peek_lanes(v, copy), _mm256_sub_epi32(splat(32), m));
    v->bitpos = _mm256_add_epi32(v->bitpos, m);
    v->value = _mm256_xor_si256(_mm256_or_si256(_mm256_sllv_epi32(v->value, m), bits), e3);
}

/* The 16 lanes' symbols of one token, as bytes. */
ATTR static inline void store_symbols(uint8_t *out, __m256i s0, __m256i s1)
{
    __m128i w0 = _mm_packs_epi32(_mm256_castsi256_si128(s0), _mm256_extracti128_si256(s0, 1));
    __m128i w1 = _mm_packs_epi32(_mm256_castsi256_si128(s1), _mm256_extracti128_si256(s1, 1));
    _mm_storeu_si128((__m128i *)out, _mm_packus_epi16(w0, w1));
}

/* The token loop, inlined with LMCache's bin counts as constants (unrolled searches). The last
 * symbol leaves the state as it is (LMCache's decoder stops there). */
ATTR static inline void decode_tokens(decoder_lanes *v, const lane_tables *tables,
                                      const search_rows *rows, const uint8_t *copy,
                                      int64_t num_tokens, uint8_t *symbols, int64_t stride,
                                      int32_t num_symbols)
{
    for (int64_t t = 0; t < num_tokens; t++) {
        __m256i s0, s1;
        find_symbols(rows, decode_count(&v[0]), decode_count(&v[1]), num_symbols, &s0, &s1);
        store_symbols(symbols + t * stride, s0, s1);
        if (t + 1 < num_tokens) {
            decode_advance(&v[0], tables, 0, copy, s0);
            decode_advance(&v[1], tables, LANES, copy, s1);
        }
    }
}

ATTR static void load_decoders(decoder_lanes *v, const uint8_t *copy, const uint32_t *start,
                               const int64_t *len)
{
    uint32_t length[LANES];
    for (int g = 0; g < LANES; g++)
        length[g] = (uint32_t)len[g];
    v->start = _mm256_loadu_si256((const __m256i *)start);
    v->length = _mm256_loadu_si256((const __m256i *)length);
    v->low = _mm256_setzero_si256();
    v->high = splat(0xffffffffu);
    v->bitpos = _mm256_setzero_si256();
    v->value = peek_lanes(v, copy); /* the first 32 bits */
    v->bitpos = splat(32);
}

ATTR int kvx_cpu_decode_lanes_avx2(const uint16_t *cdf, int32_t cdf_len,
                                   const uint8_t *const src[KVX_CODEC_GROUP],
                                   const int64_t len[KVX_CODEC_GROUP], int64_t num_tokens,
                                   uint8_t *symbols, int64_t stride)
{
    uint32_t start[KVX_CODEC_GROUP];
    uint8_t *copy = kvx_cpu_lanes_padded_copy(src, len, num_tokens, start);
    if (!copy)
        return 0;
    lane_tables tables;
    search_rows rows;
    transpose_tables(&tables, cdf, cdf_len);
    fill_search_rows(&rows, cdf, cdf_len);
    decoder_lanes v[VECTORS];
    for (int i = 0; i < VECTORS; i++)
        load_decoders(&v[i], copy, start + i * LANES, len + i * LANES);
    switch (cdf_len - 1) {
    case 32: decode_tokens(v, &tables, &rows, copy, num_tokens, symbols, stride, 32); break;
    case 16: decode_tokens(v, &tables, &rows, copy, num_tokens, symbols, stride, 16); break;
    default:
        decode_tokens(v, &tables, &rows, copy, num_tokens, symbols, stride, cdf_len - 1);
        break;
    }
    free(copy);
    return 1;
}
#endif
