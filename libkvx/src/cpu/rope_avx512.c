/*
 * rope_avx512.c - hand-written AVX-512 RoPE loops, and the tables of the two AVX-512 variants.
 *
 * Everything here works on blocks: up to 32 NeoX pairs, or 16 GPT-J pairs (32 values), whose
 * cos/sin sit in registers (block_angles). The token loops build each block of a token once,
 * from its cache rows, and apply it to every head of every layer; the per-call routines of the
 * generic loop (rope_cpu.h: jobs mixing dtypes, and the pairs past the token loops' whole
 * blocks) build blocks from the cos/sin arrays it passes. The float32 operations are those of
 * the generic loops, in the same order and without FMA, so every variant gives the same bits;
 * the tests check that through KVX_CPU_ISA.
 */
#include "rope_cpu.h"

#if KVX_ROPE_X86
#include <immintrin.h>

/* The generic loops, vectorised by gcc for AVX-512: the token loop for jobs mixing dtypes, and the
 * bf16 rotations of the table without AVX512-BF16 (the others are unused). */
DEFINE_ISA_FUNCTIONS(avx512, ATTR_AVX512)

/* ---------------------------------------------------------------- 16 values: loads, stores */

/* The first n of 16 lanes. Full vectors use plain loads and stores: masked memory operations
 * are slow on some cores (AMD Zen 4). */
static inline __mmask16 first_lanes(int64_t n)
{
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
}

ATTR_AVX512 static inline __m512 load16_f32(const void *p, int64_t n)
{
    return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(first_lanes(n), p);
}

ATTR_AVX512 static inline void store16_f32(void *p, __m512 v, int64_t n)
{
    if (n >= 16)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, first_lanes(n), v);
}

ATTR_AVX512 static inline __m256i load16_u16(const void *p, int64_t n)
{
    return n >= 16 ? _mm256_loadu_si256((const __m256i *)p)
                   : _mm256_maskz_loadu_epi16(first_lanes(n), p);
}

ATTR_AVX512 static inline void store16_u16(void *p, __m256i v, int64_t n)
{
    if (n >= 16)
        _mm256_storeu_si256((__m256i *)p, v);
    else
        _mm256_mask_storeu_epi16(p, first_lanes(n), v);
}

/* ---------------------------------------------------------------- 16-bit conversions */

ATTR_AVX512 static inline __m512 widen_f16(__m256i h) { return _mm512_cvtph_ps(h); }

ATTR_AVX512 static inline __m512 widen_bf16(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* float32 -> float16 exactly as kvx_f32_to_f16 (half.h): denormals, infinities and NaN
 * payloads included. */
ATTR_AVX512 static inline __m256i narrow_f16(__m512 v)
{
    return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* Round to nearest even by integer arithmetic, as half.h does: for the rare lanes
 * vcvtneps2bf16 gets wrong (it is exact for finite normal numbers, infinities and NaNs). */
ATTR_AVX512 static inline __m256i narrow_bf16_exact(__m512 v)
{
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

/* vcvtneps2bf16 flushes float32 denormals (|x| < 2^-126: practically never, but torch keeps
 * them, and so do we) to +-0; only lanes that came out +-0 need a closer look. */
ATTR_AVX512_BF16 static inline __m256i narrow_bf16(__m512 v)
{
    __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
    if (_mm256_testn_epi16_mask(h, _mm256_set1_epi16(0x7fff)))
        h = _mm256_mask_blend_epi16(_mm512_fpclass_ps_mask(v, 0x20), h, narrow_bf16_exact(v));
    return h;
}

ATTR_AVX512 static inline __m512 load16_f16(const void *p, int64_t n)
{
    return widen_f16(load16_u16(p, n));
}

ATTR_AVX512 static inline void store16_f16(void *p, __m512 v, int64_t n)
{
    store16_u16(p, narrow_f16(v), n);
}

ATTR_AVX512 static inline __m512 load16_bf16(const void *p, int64_t n)
{
    return widen_bf16(load16_u16(p, n));
}

ATTR_AVX512_BF16 static inline void store16_bf16(void *p, __m512 v, int64_t n)
{
    store16_u16(p, narrow_bf16(v), n);
}

/* ---------------------------------------------------------------- blocks */

typedef struct block_angles {
    __m512 cos[2], sin[2]; /* in the order the block's rotation routine wants them */
} block_angles;

/*
 * NeoX: rotates pairs [first, first + pairs), pairs <= 32, of the head at `head`, pairs
 * [first + 16 j, first + 16 j + 16) by cos[j] / sin[j].
 *
 * GPT-J pairs are adjacent values, so 16 values hold 8 whole pairs: with cos duplicated
 * (c0 c0 c1 c1 ...) and sin duplicated with the sign of the even lanes flipped (-s0 s0 -s1 s1
 * ...; see gptj_duplicate), the result is x * cc + swap(x) * ss, swap exchanging the members of
 * each pair. That is a*c + b*(-s) = a*c - b*s (IEEE subtraction is addition of the negation) and
 * b*c + a*s: the generic loop's roundings, bit for bit (except the sign of a NaN coming from the
 * cache's sin, which the negation flips), with one in-lane shuffle instead of de-interleaving.
 * The block rotates pairs [first, first + pairs), pairs <= 16, values [2 first + 16 j, ...) by
 * cos[j] / sin[j].
 */
#define DEFINE_BLOCKS(suffix, elem_size, LOAD16, STORE16, ATTR)                                  \
    ATTR static inline void neox_block_##suffix(char *head, int64_t first, int64_t half,       \
                                                const block_angles *a, int64_t pairs)          \
    {                                                                                          \
        for (int j = 0; j < 2 && pairs > 16 * j; j++) {                                        \
            int64_t n = pairs - 16 * j;                                                        \
            char *x = head + (first + 16 * j) * (elem_size), *y = x + half * (elem_size);      \
            __m512 xv = LOAD16(x, n), yv = LOAD16(y, n);                                       \
            STORE16(x, _mm512_sub_ps(_mm512_mul_ps(xv, a->cos[j]), _mm512_mul_ps(yv, a->sin[j])), \
                    n);                                                                        \
            STORE16(y, _mm512_add_ps(_mm512_mul_ps(yv, a->cos[j]), _mm512_mul_ps(xv, a->sin[j])), \
                    n);                                                                        \
        }                                                                                      \
    }                                                                                          \
    ATTR static inline void gptj_block_##suffix(char *head, int64_t first, int64_t half,       \
                                                const block_angles *a, int64_t pairs)          \
    {                                                                                          \
        (void)half;                                                                            \
        for (int j = 0; j < 2 && 2 * pairs > 16 * j; j++) {                                    \
            int64_t n = 2 * pairs - 16 * j;                                                    \
            char *p = head + (2 * first + 16 * j) * (elem_size);                               \
            __m512 v = LOAD16(p, n), swapped = _mm512_permute_ps(v, 0xb1);                     \
            __m512 rotated = _mm512_add_ps(_mm512_mul_ps(v, a->cos[j]),                        \
                                           _mm512_mul_ps(swapped, a->sin[j]));                 \
            STORE16(p, rotated, n);                                                            \
        }                                                                                      \
    }

DEFINE_BLOCKS(f32, 4, load16_f32, store16_f32, ATTR_AVX512)
DEFINE_BLOCKS(f16, 2, load16_f16, store16_f16, ATTR_AVX512)
DEFINE_BLOCKS(bf16, 2, load16_bf16, store16_bf16, ATTR_AVX512_BF16)

/* GPT-J angles for 16 pairs from their cos and sin: values [0, 16) and [16, 32). */
ATTR_AVX512 static inline block_angles gptj_duplicate(__m512 c, __m512 s)
{
    const __m512i dup_lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i dup_hi = _mm512_add_epi32(dup_lo, _mm512_set1_epi32(8));
    const __m512 even_sign = _mm512_castsi512_ps(_mm512_maskz_set1_epi32((__mmask16)0x5555,
                                                                         (int)0x80000000u));
    block_angles a;
    a.cos[0] = _mm512_permutexvar_ps(dup_lo, c);
    a.cos[1] = _mm512_permutexvar_ps(dup_hi, c);
    a.sin[0] = _mm512_xor_ps(_mm512_permutexvar_ps(dup_lo, s), even_sign);
    a.sin[1] = _mm512_xor_ps(_mm512_permutexvar_ps(dup_hi, s), even_sign);
    return a;
}

/* ---------------------------------------------------------------- whole bf16 blocks */

/*
 * Whole bf16 NeoX blocks of 32 values, for the token loops: widening bf16 is one unpack per 16
 * values (a zero low half makes a float32 of each bf16), which leaves them permuted within
 * 128-bit lanes as A = {0-3, 8-11, 16-19, 24-27} and B = {4-7, 12-15, 20-23, 28-31}; the angles
 * are permuted the same way once per token, and one vcvtne2ps2bf16 plus a qword permute restores
 * the order on the way back. About a third fewer instructions than 16 values at a time.
 */
ATTR_AVX512 static inline __m512 ab_pick(__m512 lo, __m512 hi, int b)
{
    const __m512i pick_a = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26,
                                             27);
    const __m512i pick_b = _mm512_add_epi32(pick_a, _mm512_set1_epi32(4));
    return _mm512_permutex2var_ps(lo, b ? pick_b : pick_a, hi);
}

/* Angles for values [0, 16) and [16, 32) of a block, put in A/B order. */
ATTR_AVX512 static inline block_angles ab_order(block_angles in)
{
    block_angles a;
    for (int b = 0; b < 2; b++) {
        a.cos[b] = ab_pick(in.cos[0], in.cos[1], b);
        a.sin[b] = ab_pick(in.sin[0], in.sin[1], b);
    }
    return a;
}

/* 32 bf16 values as float32 in A/B order. */
ATTR_AVX512 static inline void load32_bf16_ab(const uint16_t *p, __m512 *a, __m512 *b)
{
    __m512i v = _mm512_loadu_si512(p);
    *a = _mm512_castsi512_ps(_mm512_unpacklo_epi16(_mm512_setzero_si512(), v));
    *b = _mm512_castsi512_ps(_mm512_unpackhi_epi16(_mm512_setzero_si512(), v));
}

/* 32 float32 values in A/B order rounded to bf16 (still in A/B order). Lanes that came out +-0
 * go to `*zero`: only they can need store32_bf16_ab's fix-up (see narrow_bf16), and callers test
 * for any at once. */
ATTR_AVX512_BF16 static inline __m512i narrow32_bf16_ab(__m512 a, __m512 b, __mmask32 *zero)
{
    __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    *zero = _mm512_testn_epi16_mask(h, _mm512_set1_epi16(0x7fff));
    return h;
}

/* Redoes, by integer rounding, the lanes of h = vcvtne2ps2bf16(hi, lo) whose inputs were float32
 * denormals. */
ATTR_AVX512_BF16 static inline __m512i fix_denormals32(__m512i h, __m512 lo, __m512 hi)
{
    __mmask32 denormal = (__mmask32)_mm512_fpclass_ps_mask(lo, 0x20) |
                         ((__mmask32)_mm512_fpclass_ps_mask(hi, 0x20) << 16);
    __m512i exact = _mm512_inserti64x4(_mm512_castsi256_si512(narrow_bf16_exact(lo)),
                                       narrow_bf16_exact(hi), 1);
    return _mm512_mask_blend_epi16(denormal, h, exact);
}

/* Stores h = narrow32_bf16_ab(a, b) in memory order, first redoing denormal lanes if `fix`. */
ATTR_AVX512_BF16 static inline void store32_bf16_ab(uint16_t *p, __m512i h, __m512 a, __m512 b,
                                                    int fix)
{
    const __m512i restore = _mm512_setr_epi64(0, 4, 1, 5, 2, 6, 3, 7);
    if (fix)
        h = fix_denormals32(h, a, b);
    _mm512_storeu_si512(p, _mm512_permutexvar_epi64(restore, h));
}

/* As neox_block_bf16 for a whole block (pairs == 32), angles in A/B order. */
ATTR_AVX512_BF16 static inline void neox_block_bf16_ab(char *head, int64_t first, int64_t half,
                                                       const block_angles *a, int64_t pairs)
{
    (void)pairs;
    uint16_t *x = (uint16_t *)head + first, *y = x + half;
    __m512 xa, xb, ya, yb;
    load32_bf16_ab(x, &xa, &xb);
    load32_bf16_ab(y, &ya, &yb);
    __m512 rxa = _mm512_sub_ps(_mm512_mul_ps(xa, a->cos[0]), _mm512_mul_ps(ya, a->sin[0]));
    __m512 rxb = _mm512_sub_ps(_mm512_mul_ps(xb, a->cos[1]), _mm512_mul_ps(yb, a->sin[1]));
    __m512 rya = _mm512_add_ps(_mm512_mul_ps(ya, a->cos[0]), _mm512_mul_ps(xa, a->sin[0]));
    __m512 ryb = _mm512_add_ps(_mm512_mul_ps(yb, a->cos[1]), _mm512_mul_ps(xb, a->sin[1]));
    __mmask32 zx, zy;
    __m512i hx = narrow32_bf16_ab(rxa, rxb, &zx), hy = narrow32_bf16_ab(rya, ryb, &zy);
    int fix = !_kortestz_mask32_u8(zx, zy); /* one test for both halves */
    store32_bf16_ab(x, hx, rxa, rxb, fix);
    store32_bf16_ab(y, hy, rya, ryb, fix);
}

/*
 * As gptj_block_bf16 for a whole block (pairs == 16), angles in plain pair order (cos[0], sin[0]).
 * Each 32-bit lane holds one pair, a in its low half and b in its high half, so a = lane << 16
 * and b = the lane with its low half cleared are both members as float32 in the same lane: no
 * shuffle pairs them. vcvtne2ps2bf16 packs the rotated a's then b's, and one word permute
 * interleaves them back. Half the shuffles of the A/B order (about 1.3x faster single-threaded
 * when written).
 */
ATTR_AVX512_BF16 static inline void gptj_block_bf16_pairs(char *head, int64_t first, int64_t half,
                                                          const block_angles *ang, int64_t pairs)
{
    (void)half;
    (void)pairs;
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25,
                                                9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2,
                                                17, 1, 16, 0);
    uint16_t *p = (uint16_t *)head + 2 * first;
    __m512i v = _mm512_loadu_si512(p);
    __m512 a = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    __m512 b = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u)));
    __m512 ra = _mm512_sub_ps(_mm512_mul_ps(a, ang->cos[0]), _mm512_mul_ps(b, ang->sin[0]));
    __m512 rb = _mm512_add_ps(_mm512_mul_ps(b, ang->cos[0]), _mm512_mul_ps(a, ang->sin[0]));
    __mmask32 zero;
    __m512i h = narrow32_bf16_ab(ra, rb, &zero);
    if (zero)
        h = fix_denormals32(h, ra, rb);
    _mm512_storeu_si512(p, _mm512_permutexvar_epi16(interleave, h));
}

/* ---------------------------------------------------------------- per-call routines */

/* The generic loop's rotate_heads_fn from blocks, their angles loaded from its cos/sin arrays
 * (only the n values there). */
#define DEFINE_PER_CALL(suffix, ATTR)                                                          \
    ATTR static void rotate_neox_##suffix##_blocks(char *base, int32_t num_heads,              \
                                                   int64_t head_bytes, const float *c,         \
                                                   const float *s, int64_t first, int64_t n,   \
                                                   int64_t half)                               \
    {                                                                                          \
        for (int64_t i = 0; i < n; i += 32) {                                                  \
            int64_t pairs = n - i < 32 ? n - i : 32;                                           \
            block_angles a = {{load16_f32(c + i, pairs), _mm512_setzero_ps()},                 \
                              {load16_f32(s + i, pairs), _mm512_setzero_ps()}};                \
            if (pairs > 16) {                                                                  \
                a.cos[1] = load16_f32(c + i + 16, pairs - 16);                                 \
                a.sin[1] = load16_f32(s + i + 16, pairs - 16);                                 \
            }                                                                                  \
            for (int32_t h = 0; h < num_heads; h++)                                            \
                neox_block_##suffix(base + h * head_bytes, first + i, half, &a, pairs);        \
        }                                                                                      \
    }                                                                                          \
    ATTR static void rotate_gptj_##suffix##_blocks(char *base, int32_t num_heads,              \
                                                   int64_t head_bytes, const float *c,         \
                                                   const float *s, int64_t first, int64_t n,   \
                                                   int64_t half)                               \
    {                                                                                          \
        for (int64_t i = 0; i < n; i += 16) {                                                  \
            int64_t pairs = n - i < 16 ? n - i : 16;                                           \
            block_angles a = gptj_duplicate(load16_f32(c + i, pairs), load16_f32(s + i, pairs)); \
            for (int32_t h = 0; h < num_heads; h++)                                            \
                gptj_block_##suffix(base + h * head_bytes, first + i, half, &a, pairs);        \
        }                                                                                      \
    }

DEFINE_PER_CALL(f32, ATTR_AVX512)
DEFINE_PER_CALL(f16, ATTR_AVX512)
DEFINE_PER_CALL(bf16, ATTR_AVX512_BF16)

/* ---------------------------------------------------------------- token loops */

/* 16 angles of a cache row from index i, as float32 whatever the cache stores. */
ATTR_AVX512 static inline __m512 load_angles_x16(const void *row, int32_t dtype, int64_t i)
{
    if (dtype == KVX_DTYPE_FLOAT32)
        return _mm512_loadu_ps((const float *)row + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
    return dtype == KVX_DTYPE_FLOAT16 ? widen_f16(h) : widen_bf16(h);
}

/* cos/sin of pairs [i, i + 16): those of `new_row`, or, when `old_row` is given, those of
 * new - old with the roundings of combine_angles. */
ATTR_AVX512 static inline void angles_x16(const void *new_row, const void *old_row, int32_t dtype,
                                          int64_t i, int64_t half, __m512 *c, __m512 *s)
{
    *c = load_angles_x16(new_row, dtype, i);
    *s = load_angles_x16(new_row, dtype, half + i);
    if (old_row) {
        __m512 co = load_angles_x16(old_row, dtype, i);
        __m512 so = load_angles_x16(old_row, dtype, half + i);
        __m512 cn = *c, sn = *s;
        *c = _mm512_add_ps(_mm512_mul_ps(cn, co), _mm512_mul_ps(sn, so));
        *s = _mm512_sub_ps(_mm512_mul_ps(sn, co), _mm512_mul_ps(cn, so));
    }
}

/* A token's block of 32 NeoX pairs from `first`. */
ATTR_AVX512 static inline block_angles neox_angles(const void *new_row, const void *old_row,
                                                   int32_t dtype, int64_t first, int64_t half)
{
    block_angles a;
    for (int j = 0; j < 2; j++)
        angles_x16(new_row, old_row, dtype, first + 16 * j, half, &a.cos[j], &a.sin[j]);
    return a;
}

/* A token's block of 16 GPT-J pairs from `first`. */
ATTR_AVX512 static inline block_angles gptj_angles(const void *new_row, const void *old_row,
                                                   int32_t dtype, int64_t first, int64_t half)
{
    __m512 c, s;
    angles_x16(new_row, old_row, dtype, first, half, &c, &s);
    return gptj_duplicate(c, s);
}

ATTR_AVX512 static inline block_angles neox_angles_ab(const void *new_row, const void *old_row,
                                                      int32_t dtype, int64_t first, int64_t half)
{
    return ab_order(neox_angles(new_row, old_row, dtype, first, half));
}

/* A token's block of 16 GPT-J pairs from `first`, in plain pair order (cos[0], sin[0]). */
ATTR_AVX512 static inline block_angles gptj_angles_pairs(const void *new_row, const void *old_row,
                                                         int32_t dtype, int64_t first, int64_t half)
{
    block_angles a = {{_mm512_setzero_ps(), _mm512_setzero_ps()},
                      {_mm512_setzero_ps(), _mm512_setzero_ps()}};
    angles_x16(new_row, old_row, dtype, first, half, &a.cos[0], &a.sin[0]);
    return a;
}

/* Applies ROTATE to pairs [first, first + pairs) of every head of every layer of token t of x. */
#define ROTATE_TOKEN_BLOCK(x, elem_size, t, first, half, a, pairs, ROTATE)                      \
    do {                                                                                       \
        /* locals, so the stores to keys need not be assumed to change them */                \
        const int64_t layer_bytes = (x)->layer_stride * (elem_size);                           \
        const int64_t head_bytes = (x)->head_stride * (elem_size);                             \
        const int32_t num_layers = (x)->num_layers, num_heads = (x)->num_heads;                \
        char *layer = (char *)(x)->base + (t) * (x)->token_stride * (elem_size);               \
        /* pointer steps, not l * layer_bytes + h * head_bytes nor integer addresses: measured  \
         * 4-7% faster (the last step points past the tensor and is never dereferenced) */     \
        for (int32_t l = 0; l < num_layers; l++, layer += layer_bytes) {                       \
            char *head = layer;                                                                \
            for (int32_t h = 0; h < num_heads; h++, head += head_bytes)                        \
                ROTATE(head, first, half, a, pairs);                                           \
        }                                                                                      \
    } while (0)

/*
 * A token loop for jobs whose targets all share one dtype, over whole blocks of `pairs` pairs:
 * ANGLES builds a block's rotation once per token, ROTATE applies it to each head. The generic
 * loop instead writes a token's cos/sin to arrays and calls a routine per layer, which loads
 * (and for GPT-J re-shuffles) them again; single-threaded on Zen 5, re-rotating 4096 tokens x 8
 * heads x 128 bf16 keys took 277 us that way and about 175 us this way when this was written.
 * Pairs past the last whole block go through the generic per-token path.
 */
#define DEFINE_TOKEN_LOOP(name, pairs, elem_size, ANGLES, ROTATE, ATTR)                         \
    ATTR static void name(void *ctx, int64_t begin, int64_t end)                               \
    {                                                                                          \
        const rope_job *job = ctx;                                                             \
        int32_t dtype = job->cache->dtype;                                                     \
        int64_t half = job->cache->rot_dim / 2, whole = half / (pairs) * (pairs);              \
        for (int64_t t = begin; t < end; t++) {                                                \
            prefetch_ahead(job, t, end);                                                       \
            const void *new_row = cache_row(job, job->positions[t]);                          \
            const void *old_row =                                                              \
                job->old_positions ? cache_row(job, job->old_positions[t]) : NULL;             \
            for (int64_t first = 0; first < whole; first += (pairs)) {                         \
                block_angles a = ANGLES(new_row, old_row, dtype, first, half);                 \
                for (int i = 0; i < job->num_targets; i++)                                     \
                    ROTATE_TOKEN_BLOCK(job->targets[i].tensor, elem_size, t, first, half, &a,  \
                                       pairs, ROTATE);                                         \
            }                                                                                  \
            if (whole < half)                                                                  \
                rotate_token_pairs(job, t, whole, half - whole);                               \
        }                                                                                      \
    }

DEFINE_TOKEN_LOOP(token_loop_neox_f32, 32, 4, neox_angles, neox_block_f32, ATTR_AVX512)
DEFINE_TOKEN_LOOP(token_loop_neox_f16, 32, 2, neox_angles, neox_block_f16, ATTR_AVX512)
DEFINE_TOKEN_LOOP(token_loop_neox_bf16, 32, 2, neox_angles_ab, neox_block_bf16_ab, ATTR_AVX512_BF16)
DEFINE_TOKEN_LOOP(token_loop_gptj_f32, 16, 4, gptj_angles, gptj_block_f32, ATTR_AVX512)
DEFINE_TOKEN_LOOP(token_loop_gptj_f16, 16, 2, gptj_angles, gptj_block_f16, ATTR_AVX512)
DEFINE_TOKEN_LOOP(token_loop_gptj_bf16, 16, 2, gptj_angles_pairs, gptj_block_bf16_pairs,
                  ATTR_AVX512_BF16)

/* ---------------------------------------------------------------- tables */

const rope_isa kvx_rope_avx512_isa = {
    "avx512",
    rope_range_avx512,
    {
        {rotate_neox_f32_blocks, rotate_neox_f16_blocks, rotate_neox_bf16_avx512},
        {rotate_gptj_f32_blocks, rotate_gptj_f16_blocks, rotate_gptj_bf16_avx512},
    },
    {
        {token_loop_neox_f32, token_loop_neox_f16, NULL},
        {token_loop_gptj_f32, token_loop_gptj_f16, NULL},
    },
};

const rope_isa kvx_rope_avx512bf16_isa = {
    "avx512bf16",
    rope_range_avx512,
    {
        {rotate_neox_f32_blocks, rotate_neox_f16_blocks, rotate_neox_bf16_blocks},
        {rotate_gptj_f32_blocks, rotate_gptj_f16_blocks, rotate_gptj_bf16_blocks},
    },
    {
        {token_loop_neox_f32, token_loop_neox_f16, token_loop_neox_bf16},
        {token_loop_gptj_f32, token_loop_gptj_f16, token_loop_gptj_bf16},
    },
};
#endif /* KVX_ROPE_X86 */
