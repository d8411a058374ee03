/*
 * rope_avx512.c - hand-written AVX-512 RoPE loops, and the tables of the two AVX-512 variants.
 *
 * Same float32 operations in the same order as the generic loops of rope_cpu.h (no FMA), so every
 * variant gives the same bits; the tests check that through KVX_CPU_ISA.
 */
#include "rope_cpu.h"

#if KVX_ROPE_X86
#include <immintrin.h>

DEFINE_ISA_FUNCTIONS(avx512, ATTR_AVX512)

/*
 * Per-call rotations for the generic token loop, 16 pairs at a time: NeoX on 16-bit keys here,
 * GPT-J below (they serve jobs mixing dtypes and the pairs past the token loops' whole blocks).
 * Same arithmetic as the generic loop (no FMA), conversions by instruction:
 * vcvtneps2bf16 rounds to nearest even but flushes float32 denormals, so lanes holding one
 * (|x| < 2^-126, practically never) are redone by the integer rounding; vcvtps2ph rounds to
 * nearest even with denormals, NaN and infinity handled like the scalar code. Full vectors
 * use plain loads and stores: masked memory operations are slow on some cores (AMD Zen 4).
 */
ATTR_AVX512 static inline __m256i load_x16(const uint16_t *p, int64_t n)
{
    if (n >= 16)
        return _mm256_loadu_si256((const __m256i *)p);
    return _mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1u), p);
}

ATTR_AVX512 static inline void store_x16(uint16_t *p, __m256i v, int64_t n)
{
    if (n >= 16)
        _mm256_storeu_si256((__m256i *)p, v);
    else
        _mm256_mask_storeu_epi16(p, (__mmask16)((1u << n) - 1u), v);
}

ATTR_AVX512 static inline __m512 load_f32x16(const float *p, int64_t n)
{
    if (n >= 16)
        return _mm512_loadu_ps(p);
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}

ATTR_AVX512 static inline __m512 widen_bf16(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Round to nearest even by integer arithmetic: for the rare lanes vcvtneps2bf16 gets wrong. */
ATTR_AVX512 static inline __m256i narrow_bf16_exact(__m512 v)
{
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

/* Narrows two vectors; one test covers both for float32 denormals, which vcvtneps2bf16 flushes
 * to zero (|x| < 2^-126: practically never, but torch keeps them, and so do we). */
ATTR_AVX512_BF16 static inline void narrow_bf16_pair(__m512 vx, __m512 vy, __m256i *hx,
                                                     __m256i *hy)
{
    *hx = (__m256i)_mm512_cvtneps_pbh(vx);
    *hy = (__m256i)_mm512_cvtneps_pbh(vy);
    __mmask16 dx = _mm512_fpclass_ps_mask(vx, 0x20), dy = _mm512_fpclass_ps_mask(vy, 0x20);
    if (!_kortestz_mask16_u8(dx, dy)) {
        *hx = _mm256_mask_blend_epi16(dx, *hx, narrow_bf16_exact(vx));
        *hy = _mm256_mask_blend_epi16(dy, *hy, narrow_bf16_exact(vy));
    }
}

ATTR_AVX512 static inline __m512 widen_f16(__m256i h) { return _mm512_cvtph_ps(h); }

ATTR_AVX512 static inline void narrow_f16_pair(__m512 vx, __m512 vy, __m256i *hx, __m256i *hy)
{
    *hx = _mm512_cvtps_ph(vx, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    *hy = _mm512_cvtps_ph(vy, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

#define DEFINE_ROTATE_NEOX_X16(suffix, WIDEN, NARROW_PAIR, ATTR)                                   \
    ATTR static void rotate_neox_##suffix(char *base, int32_t num_heads, int64_t head_bytes, \
                                          const float *c, const float *s, int64_t first,      \
                                          int64_t n, int64_t half)                            \
    {                                                                                         \
        for (int32_t h = 0; h < num_heads; h++) {                                             \
            uint16_t *x = (uint16_t *)(base + h * head_bytes) + first;                        \
            uint16_t *y = x + half;                                                           \
            for (int64_t i = 0; i < n; i += 16) {                                             \
                __m512 a = WIDEN(load_x16(x + i, n - i)), b = WIDEN(load_x16(y + i, n - i));  \
                __m512 cv = load_f32x16(c + i, n - i), sv = load_f32x16(s + i, n - i);        \
                __m512 rx = _mm512_sub_ps(_mm512_mul_ps(a, cv), _mm512_mul_ps(b, sv));        \
                __m512 ry = _mm512_add_ps(_mm512_mul_ps(b, cv), _mm512_mul_ps(a, sv));        \
                __m256i hx, hy;                                                               \
                NARROW_PAIR(rx, ry, &hx, &hy);                                                \
                store_x16(x + i, hx, n - i);                                                  \
                store_x16(y + i, hy, n - i);                                                  \
            }                                                                                 \
        }                                                                                     \
    }

DEFINE_ROTATE_NEOX_X16(f16_avx512x, widen_f16, narrow_f16_pair, ATTR_AVX512)
DEFINE_ROTATE_NEOX_X16(bf16_avx512bf16, widen_bf16, narrow_bf16_pair, ATTR_AVX512_BF16)

/* Redoes, by integer rounding, the lanes of a vcvtne2ps2bf16(b, a) result whose inputs were
 * float32 denormals. */
ATTR_AVX512_BF16 static inline __m512i fix_denormals_x32(__m512i h, __m512 a, __m512 b)
{
    __mmask32 denormal = (__mmask32)_mm512_fpclass_ps_mask(a, 0x20) |
                         ((__mmask32)_mm512_fpclass_ps_mask(b, 0x20) << 16);
    __m512i exact = _mm512_inserti64x4(_mm512_castsi256_si512(narrow_bf16_exact(a)),
                                       narrow_bf16_exact(b), 1);
    return _mm512_mask_blend_epi16(denormal, h, exact);
}

/*
 * GPT-J pairs are adjacent values, so a vector of 16 holds 8 whole pairs: with cos duplicated
 * (c0 c0 c1 c1 ...) and sin duplicated with the sign of the even lanes flipped (-s0 s0 -s1 s1
 * ...), the result is x * cc + swap(x) * ss, swap exchanging the members of each pair. That is
 * a*c + b*(-s) = a*c - b*s (IEEE subtraction is addition of the negation) and b*c + a*s: the
 * generic loop's roundings, bit for bit, with one in-lane shuffle instead of de-interleaving.
 */
ATTR_AVX512 static inline __m512 load16_f32(const void *p, int64_t n)
{
    return load_f32x16((const float *)p, n);
}

ATTR_AVX512 static inline void store16_f32(void *p, __m512 v, int64_t n)
{
    if (n >= 16)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v);
}

ATTR_AVX512 static inline __m512 load16_f16(const void *p, int64_t n)
{
    return widen_f16(load_x16((const uint16_t *)p, n));
}

ATTR_AVX512 static inline void store16_f16(void *p, __m512 v, int64_t n)
{
    store_x16((uint16_t *)p, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), n);
}

ATTR_AVX512 static inline __m512 load16_bf16(const void *p, int64_t n)
{
    return widen_bf16(load_x16((const uint16_t *)p, n));
}

ATTR_AVX512_BF16 static inline void store16_bf16(void *p, __m512 v, int64_t n)
{
    __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
    /* float32 denormals come out as +-0: only then look closer */
    if (_mm256_testn_epi16_mask(h, _mm256_set1_epi16(0x7fff)))
        h = _mm256_mask_blend_epi16(_mm512_fpclass_ps_mask(v, 0x20), h, narrow_bf16_exact(v));
    store_x16((uint16_t *)p, h, n);
}

#define DEFINE_ROTATE_GPTJ_X16(suffix, elem_size, LOAD16, STORE16, ATTR)                      \
    ATTR static void rotate_gptj_##suffix(char *base, int32_t num_heads, int64_t head_bytes, \
                                          const float *c, const float *s, int64_t first,      \
                                          int64_t n, int64_t half)                            \
    {                                                                                         \
        (void)half;                                                                           \
        const __m512i dup_lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7); \
        const __m512i dup_hi = _mm512_add_epi32(dup_lo, _mm512_set1_epi32(8));                \
        const __m512 even_sign = _mm512_castsi512_ps(                                         \
            _mm512_maskz_set1_epi32((__mmask16)0x5555, (int)0x80000000u));                    \
        float cc[2 * PAIR_SLICE] __attribute__((aligned(64)));                               \
        float ss[2 * PAIR_SLICE] __attribute__((aligned(64)));                               \
        for (int64_t i = 0; i < n; i += 16) {                                                 \
            __m512 cv = load_f32x16(c + i, n - i), sv = load_f32x16(s + i, n - i);            \
            _mm512_store_ps(cc + 2 * i, _mm512_permutexvar_ps(dup_lo, cv));                   \
            _mm512_store_ps(cc + 2 * i + 16, _mm512_permutexvar_ps(dup_hi, cv));              \
            _mm512_store_ps(ss + 2 * i, _mm512_xor_ps(_mm512_permutexvar_ps(dup_lo, sv),      \
                                                      even_sign));                            \
            _mm512_store_ps(ss + 2 * i + 16, _mm512_xor_ps(_mm512_permutexvar_ps(dup_hi, sv), \
                                                           even_sign));                       \
        }                                                                                     \
        int64_t count = 2 * n; /* values, not pairs */                                        \
        for (int32_t h = 0; h < num_heads; h++) {                                             \
            char *p = base + h * head_bytes + 2 * first * (elem_size);                        \
            for (int64_t j = 0; j < count; j += 16) {                                         \
                void *at = p + j * (elem_size);                                               \
                __m512 v = LOAD16(at, count - j);                                             \
                __m512 swapped = _mm512_permute_ps(v, 0xb1);                                  \
                __m512 r = _mm512_add_ps(_mm512_mul_ps(v, _mm512_load_ps(cc + j)),            \
                                         _mm512_mul_ps(swapped, _mm512_load_ps(ss + j)));     \
                STORE16(at, r, count - j);                                                    \
            }                                                                                 \
        }                                                                                     \
    }

DEFINE_ROTATE_GPTJ_X16(f32_avx512x, 4, load16_f32, store16_f32, ATTR_AVX512)
DEFINE_ROTATE_GPTJ_X16(f16_avx512x, 2, load16_f16, store16_f16, ATTR_AVX512)
DEFINE_ROTATE_GPTJ_X16(bf16_avx512bf16, 2, load16_bf16, store16_bf16, ATTR_AVX512_BF16)

/* ---------------------------------------------------------------- AVX-512 token loops */

/*
 * Token loops of their own for jobs whose targets all share one dtype. The generic loop writes a
 * token's cos/sin to arrays and calls a routine per layer, which re-reads (and for GPT-J
 * re-shuffles) them; these build each block's rotation once per token in registers and apply it
 * to every head of every layer. Single-threaded on Zen 5, re-rotating 4096 tokens x 8 heads x
 * 128 bf16 keys went from 277 to ~175 us. Pairs past the last whole block go through the
 * generic per-token path.
 */
typedef struct block_angles {
    __m512 cos[2], sin[2]; /* in the order the block's rotation routine wants them */
} block_angles;

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
        __m512 co = load_angles_x16(old_row, dtype, i), so = load_angles_x16(old_row, dtype, half + i);
        __m512 cn = *c, sn = *s;
        *c = _mm512_add_ps(_mm512_mul_ps(cn, co), _mm512_mul_ps(sn, so));
        *s = _mm512_sub_ps(_mm512_mul_ps(sn, co), _mm512_mul_ps(cn, so));
    }
}

/* NeoX, 32 pairs: pairs [first, first + 16) and [first + 16, first + 32), in order. */
ATTR_AVX512 static inline block_angles neox_angles(const void *new_row, const void *old_row,
                                                   int32_t dtype, int64_t first, int64_t half)
{
    block_angles a;
    for (int j = 0; j < 2; j++)
        angles_x16(new_row, old_row, dtype, first + 16 * j, half, &a.cos[j], &a.sin[j]);
    return a;
}

/* GPT-J, 16 pairs (32 values): cos duplicated and sin duplicated with the even lanes negated, as
 * in DEFINE_ROTATE_GPTJ_X16, for values [2 first, 2 first + 16) and [2 first + 16, 2 first + 32). */
ATTR_AVX512 static inline block_angles gptj_angles(const void *new_row, const void *old_row,
                                                   int32_t dtype, int64_t first, int64_t half)
{
    const __m512i dup_lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i dup_hi = _mm512_add_epi32(dup_lo, _mm512_set1_epi32(8));
    const __m512 even_sign =
        _mm512_castsi512_ps(_mm512_maskz_set1_epi32((__mmask16)0x5555, (int)0x80000000u));
    __m512 c, s;
    angles_x16(new_row, old_row, dtype, first, half, &c, &s);
    block_angles a;
    a.cos[0] = _mm512_permutexvar_ps(dup_lo, c);
    a.cos[1] = _mm512_permutexvar_ps(dup_hi, c);
    a.sin[0] = _mm512_xor_ps(_mm512_permutexvar_ps(dup_lo, s), even_sign);
    a.sin[1] = _mm512_xor_ps(_mm512_permutexvar_ps(dup_hi, s), even_sign);
    return a;
}

/*
 * bf16 blocks of 32 values in "A/B order": widening bf16 is one unpack per 16 values (a zero low
 * half makes a float32 of each bf16), which leaves them permuted within 128-bit lanes as
 * A = {0-3, 8-11, 16-19, 24-27} and B = {4-7, 12-15, 20-23, 28-31} (GPT-J pairs stay adjacent);
 * the angles are permuted the same way once per token, and one vcvtne2ps2bf16 plus a qword
 * permute restores the order on the way back. About a third fewer instructions than 16 values
 * at a time.
 */
ATTR_AVX512 static inline __m512 ab_pick(__m512 lo, __m512 hi, int b)
{
    const __m512i pick_a = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25,
                                             26, 27);
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

ATTR_AVX512 static inline block_angles neox_angles_ab(const void *new_row, const void *old_row,
                                                      int32_t dtype, int64_t first, int64_t half)
{
    return ab_order(neox_angles(new_row, old_row, dtype, first, half));
}

ATTR_AVX512 static inline block_angles gptj_angles_ab(const void *new_row, const void *old_row,
                                                      int32_t dtype, int64_t first, int64_t half)
{
    return ab_order(gptj_angles(new_row, old_row, dtype, first, half));
}

/* 32 bf16 values as float32 in A/B order. */
ATTR_AVX512 static inline void load_x32_bf16_ab(const uint16_t *p, __m512 *a, __m512 *b)
{
    __m512i v = _mm512_loadu_si512(p);
    *a = _mm512_castsi512_ps(_mm512_unpacklo_epi16(_mm512_setzero_si512(), v));
    *b = _mm512_castsi512_ps(_mm512_unpackhi_epi16(_mm512_setzero_si512(), v));
}

/* 32 float32 values in A/B order rounded to bf16 (still in A/B order). vcvtne2ps2bf16 flushes
 * float32 denormals to zero, so a lane can only need store_x32_bf16_ab's fix-up if it came out
 * +-0: `*zero` gets those lanes, which are rare, so that callers test for any at once. */
ATTR_AVX512_BF16 static inline __m512i narrow_x32_bf16_ab(__m512 a, __m512 b, __mmask32 *zero)
{
    __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a);
    *zero = _mm512_testn_epi16_mask(h, _mm512_set1_epi16(0x7fff));
    return h;
}

/* Stores h = narrow_x32_bf16_ab(a, b) in memory order, redoing denormal lanes if `fix`. */
ATTR_AVX512_BF16 static inline void store_x32_bf16_ab(uint16_t *p, __m512i h, __m512 a, __m512 b,
                                                      int fix)
{
    const __m512i restore = _mm512_setr_epi64(0, 4, 1, 5, 2, 6, 3, 7);
    if (fix)
        h = fix_denormals_x32(h, a, b);
    _mm512_storeu_si512(p, _mm512_permutexvar_epi64(restore, h));
}

/* Rotates pairs [first, first + 32) of the bf16 NeoX head at `head`, angles in A/B order. */
ATTR_AVX512_BF16 static inline void rotate_neox_block_bf16(char *head, int64_t first,
                                                           int64_t half, const block_angles *a)
{
    uint16_t *x = (uint16_t *)head + first, *y = x + half;
    __m512 xa, xb, ya, yb;
    load_x32_bf16_ab(x, &xa, &xb);
    load_x32_bf16_ab(y, &ya, &yb);
    __m512 rxa = _mm512_sub_ps(_mm512_mul_ps(xa, a->cos[0]), _mm512_mul_ps(ya, a->sin[0]));
    __m512 rxb = _mm512_sub_ps(_mm512_mul_ps(xb, a->cos[1]), _mm512_mul_ps(yb, a->sin[1]));
    __m512 rya = _mm512_add_ps(_mm512_mul_ps(ya, a->cos[0]), _mm512_mul_ps(xa, a->sin[0]));
    __m512 ryb = _mm512_add_ps(_mm512_mul_ps(yb, a->cos[1]), _mm512_mul_ps(xb, a->sin[1]));
    __mmask32 zx, zy;
    __m512i hx = narrow_x32_bf16_ab(rxa, rxb, &zx), hy = narrow_x32_bf16_ab(rya, ryb, &zy);
    int fix = !_kortestz_mask32_u8(zx, zy); /* one test for both halves */
    store_x32_bf16_ab(x, hx, rxa, rxb, fix);
    store_x32_bf16_ab(y, hy, rya, ryb, fix);
}

/* Rotates pairs [first, first + 16) of the bf16 GPT-J head at `head`, angles in A/B order. */
ATTR_AVX512_BF16 static inline void rotate_gptj_block_bf16(char *head, int64_t first,
                                                           int64_t half, const block_angles *a)
{
    (void)half;
    uint16_t *p = (uint16_t *)head + 2 * first;
    __m512 va, vb;
    load_x32_bf16_ab(p, &va, &vb);
    __m512 ra = _mm512_add_ps(_mm512_mul_ps(va, a->cos[0]),
                              _mm512_mul_ps(_mm512_permute_ps(va, 0xb1), a->sin[0]));
    __m512 rb = _mm512_add_ps(_mm512_mul_ps(vb, a->cos[1]),
                              _mm512_mul_ps(_mm512_permute_ps(vb, 0xb1), a->sin[1]));
    __mmask32 zero;
    __m512i h = narrow_x32_bf16_ab(ra, rb, &zero);
    store_x32_bf16_ab(p, h, ra, rb, zero != 0);
}

/* Rotates pairs [first, first + 32) of the NeoX head at `head` (16 at a time, in order). */
#define DEFINE_NEOX_BLOCK(suffix, elem_size, LOAD16, STORE16, ATTR)                             \
    ATTR static inline void rotate_neox_block_##suffix(char *head, int64_t first, int64_t half, \
                                                       const block_angles *a)                    \
    {                                                                                           \
        for (int j = 0; j < 2; j++) {                                                           \
            char *x = head + (first + 16 * j) * (elem_size), *y = x + half * (elem_size);       \
            __m512 xv = LOAD16(x, 16), yv = LOAD16(y, 16);                                      \
            STORE16(x, _mm512_sub_ps(_mm512_mul_ps(xv, a->cos[j]), _mm512_mul_ps(yv, a->sin[j])), \
                    16);                                                                        \
            STORE16(y, _mm512_add_ps(_mm512_mul_ps(yv, a->cos[j]), _mm512_mul_ps(xv, a->sin[j])), \
                    16);                                                                        \
        }                                                                                       \
    }

/* Rotates pairs [first, first + 16) of the GPT-J head at `head`: x * cos + swap(x) * sin. */
#define DEFINE_GPTJ_BLOCK(suffix, elem_size, LOAD16, STORE16, ATTR)                             \
    ATTR static inline void rotate_gptj_block_##suffix(char *head, int64_t first, int64_t half, \
                                                       const block_angles *a)                    \
    {                                                                                           \
        (void)half;                                                                             \
        for (int j = 0; j < 2; j++) {                                                           \
            char *p = head + (2 * first + 16 * j) * (elem_size);                                \
            __m512 v = LOAD16(p, 16), swapped = _mm512_permute_ps(v, 0xb1);                     \
            STORE16(p, _mm512_add_ps(_mm512_mul_ps(v, a->cos[j]),                               \
                                     _mm512_mul_ps(swapped, a->sin[j])),                        \
                    16);                                                                        \
        }                                                                                       \
    }

DEFINE_NEOX_BLOCK(f32, 4, load16_f32, store16_f32, ATTR_AVX512)
DEFINE_NEOX_BLOCK(f16, 2, load16_f16, store16_f16, ATTR_AVX512)
DEFINE_GPTJ_BLOCK(f32, 4, load16_f32, store16_f32, ATTR_AVX512)
DEFINE_GPTJ_BLOCK(f16, 2, load16_f16, store16_f16, ATTR_AVX512)

/* Applies ROTATE (pairs [first, first + pairs)) to every head of every layer of token t of x. */
#define ROTATE_TOKEN_BLOCK(x, elem_size, t, first, half, a, ROTATE)                              \
    do {                                                                                        \
        /* locals, so the stores to keys need not be assumed to change them */                 \
        const int64_t layer_bytes = (x)->layer_stride * (elem_size);                            \
        const int64_t head_bytes = (x)->head_stride * (elem_size);                              \
        const int32_t num_layers = (x)->num_layers, num_heads = (x)->num_heads;                 \
        char *layer = (char *)(x)->base + (t) * (x)->token_stride * (elem_size);                \
        for (int32_t l = 0; l < num_layers; l++, layer += layer_bytes) {                        \
            char *head = layer;                                                                 \
            for (int32_t h = 0; h < num_heads; h++, head += head_bytes)                         \
                ROTATE(head, first, half, a);                                                   \
        }                                                                                       \
    } while (0)

/* A token loop over blocks of `pairs` pairs: ANGLES builds a block's rotation, ROTATE applies it
 * to one head. */
#define DEFINE_TOKEN_LOOP(name, pairs, elem_size, ANGLES, ROTATE, ATTR)                         \
    ATTR static void name(void *ctx, int64_t begin, int64_t end)                                \
    {                                                                                           \
        const rope_job *job = ctx;                                                              \
        int32_t dtype = job->cache->dtype;                                                      \
        int64_t half = job->cache->rot_dim / 2, whole = half / (pairs) * (pairs);               \
        for (int64_t t = begin; t < end; t++) {                                                 \
            prefetch_ahead(job, t, end);                                                        \
            const void *new_row = cache_row(job, position_at(job->positions,                    \
                                                             job->positions_dtype, t));         \
            const void *old_row =                                                               \
                job->old_positions                                                              \
                    ? cache_row(job, position_at(job->old_positions, job->positions_dtype, t))  \
                    : NULL;                                                                     \
            for (int64_t first = 0; first < whole; first += (pairs)) {                          \
                block_angles a = ANGLES(new_row, old_row, dtype, first, half);                  \
                for (int i = 0; i < job->num_targets; i++)                                      \
                    ROTATE_TOKEN_BLOCK(job->targets[i].tensor, elem_size, t, first, half, &a,   \
                                       ROTATE);                                                 \
            }                                                                                   \
            if (whole < half)                                                                   \
                rotate_token_pairs(job, t, whole, half - whole);                                \
        }                                                                                       \
    }

DEFINE_TOKEN_LOOP(token_loop_neox_f32, 32, 4, neox_angles, rotate_neox_block_f32, ATTR_AVX512)
DEFINE_TOKEN_LOOP(token_loop_neox_f16, 32, 2, neox_angles, rotate_neox_block_f16, ATTR_AVX512)
DEFINE_TOKEN_LOOP(token_loop_neox_bf16, 32, 2, neox_angles_ab, rotate_neox_block_bf16,
                  ATTR_AVX512_BF16)
DEFINE_TOKEN_LOOP(token_loop_gptj_f32, 16, 4, gptj_angles, rotate_gptj_block_f32, ATTR_AVX512)
DEFINE_TOKEN_LOOP(token_loop_gptj_f16, 16, 2, gptj_angles, rotate_gptj_block_f16, ATTR_AVX512)
DEFINE_TOKEN_LOOP(token_loop_gptj_bf16, 16, 2, gptj_angles_ab, rotate_gptj_block_bf16,
                  ATTR_AVX512_BF16)

const rope_isa kvx_rope_avx512_isa = {
    "avx512",
    rope_range_avx512,
    {
        {rotate_neox_f32_avx512, rotate_neox_f16_avx512x, rotate_neox_bf16_avx512},
        {rotate_gptj_f32_avx512x, rotate_gptj_f16_avx512x, rotate_gptj_bf16_avx512},
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
        {rotate_neox_f32_avx512, rotate_neox_f16_avx512x, rotate_neox_bf16_avx512bf16},
        {rotate_gptj_f32_avx512x, rotate_gptj_f16_avx512x, rotate_gptj_bf16_avx512bf16},
    },
    {
        {token_loop_neox_f32, token_loop_neox_f16, token_loop_neox_bf16},
        {token_loop_gptj_f32, token_loop_gptj_f16, token_loop_gptj_bf16},
    },
};
#endif /* KVX_ROPE_X86 */
