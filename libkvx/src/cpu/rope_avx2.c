/*
 * rope_avx2.c - hand-written AVX2 RoPE token loops, and the table of the avx2 variant.
 *
 * The design of rope_avx512.c at half the width, through rope_cpu.h's sliced token loop: the
 * rotation of each block of pairs (16 NeoX pairs, 16 bf16 GPT-J pairs, 8 fp16 / fp32 GPT-J pairs)
 * is built once per token from its cache rows, and applied from registers to every head of every
 * layer of the token's targets. Pairs past the last whole block, and jobs mixing dtypes, go
 * through the generic loop (compiled here for AVX2). The float32 operations are the generic
 * loop's, in the same order and without FMA, and the narrowing rounds as half.h does, so every
 * variant gives the same bits.
 *
 * AVX2 has no bf16 instructions, so bf16 is converted with integer operations, arranged so that
 * neither direction needs a shuffle: the 32-bit lanes of 16 loaded values hold values 2i (low
 * half) and 2i + 1 (high half), and a shift or a mask makes each a float32 in place ("even" and
 * "odd" vectors). A rounded float32 keeps its bf16 in its high half, so one word blend of the
 * shifted even vector and the odd one puts all 16 back in memory order. NeoX pairs value i of x
 * with value i of y, so x and y split the same way and the angles are put in even/odd order once
 * per token; a GPT-J pair is a 32-bit lane, its angles stay in plain order.
 *
 * fp16 uses F16C (vcvtph2ps / vcvtps2ph), which agrees with half.h everywhere: the variant's
 * token loops run only where the CPU has F16C (rope.c).
 */
#include "rope_cpu.h"

#if KVX_ROPE_X86
#include <immintrin.h>

/* The generic loops, vectorised by gcc for AVX2: jobs mixing dtypes, the pairs past the token
 * loops' whole blocks, and everything on a CPU without F16C. */
DEFINE_ISA_FUNCTIONS(avx2, ATTR_AVX2)

#define ATTR ATTR_AVX2_F16C

/* ---------------------------------------------------------------- bf16 conversions */

/* The bf16 values in the low / high halves of v's 32-bit lanes, as float32. */
ATTR static inline __m256 bf16_low(__m256i v)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

ATTR static inline __m256 bf16_high(__m256i v)
{
    return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)));
}

/*
 * Narrowing leaves each lane's bf16 in its high half (the low half is left over), three ways:
 *
 * - round_bf16_nan: half.h's rule for every value: round to nearest even by adding 0x7fff plus
 *   the lowest kept bit, and truncate a NaN, setting its quiet bit (the addition could carry out
 *   of its payload).
 * - round_bf16: the same without the NaN case.
 * - round_bf16_half_up: add 0x8000, one operation instead of four (the loops are limited by
 *   vector operations, about three a cycle). It differs from round_bf16 only on ties, a low half
 *   of exactly 0x8000 (0 once rounded), which tied_lanes finds in four vectors at once.
 *
 * Only NaNs with low bits set need the first: a sum of products passes on one input's NaN payload
 * (quieted), or makes the default NaN 0xffc00000. bf16 keys have no payload bits below bit 16, so
 * with angles free of NaNs every NaN result is a quiet NaN with a zero low half, whose top half the
 * two others leave as half.h does; a NaN in a float32 or fp16 cache row can have them. Integer
 * rounding is exact on denormals in all three.
 */
ATTR static inline __m256i round_bf16(__m256 v)
{
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    return _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
}

ATTR static inline __m256i round_bf16_nan(__m256 v)
{
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    __m256i quiet = _mm256_or_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x400000));
    return _mm256_blendv_epi8(round_bf16(v), quiet, nan);
}

ATTR static inline __m256i round_bf16_half_up(__m256 v)
{
    return _mm256_add_epi32(_mm256_castps_si256(v), _mm256_set1_epi32(0x8000));
}

/* Whether a lane of four vectors rounded half up was a tie: its low half came out 0. Their
 * minimum, 16-bit half by 16-bit half, then has a zero low half; the compare's mask is narrowed to
 * the low halves' bytes in an integer register, since vector operations are what limits the loops.
 * Five vector operations for the four vectors. */
ATTR static inline int tied_lanes(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i min = _mm256_min_epu16(_mm256_min_epu16(a, b), _mm256_min_epu16(c, d));
    unsigned zero_bytes = (unsigned)_mm256_movemask_epi8(
        _mm256_cmpeq_epi16(min, _mm256_setzero_si256()));
    return (zero_bytes & 0x33333333u) != 0;
}

/* 16 bf16 in memory order from rounded even and odd vectors: one shift and one word blend. */
ATTR static inline __m256i pack_bf16(__m256i even, __m256i odd)
{
    return _mm256_blend_epi16(_mm256_srli_epi32(even, 16), odd, 0xaa);
}

/* Stores 16 values at p and 16 at q, each given as float32 even / odd vectors, as bf16.
 * `nan_angles`: whether the angles that made them may hold a NaN (a constant where inlined). */
ATTR static inline void store32_bf16(uint16_t *p, __m256 pe, __m256 po, uint16_t *q, __m256 qe,
                                     __m256 qo, int nan_angles)
{
    if (nan_angles) {
        _mm256_storeu_si256((__m256i *)p, pack_bf16(round_bf16_nan(pe), round_bf16_nan(po)));
        _mm256_storeu_si256((__m256i *)q, pack_bf16(round_bf16_nan(qe), round_bf16_nan(qo)));
        return;
    }
    __m256i rpe = round_bf16_half_up(pe), rpo = round_bf16_half_up(po);
    __m256i rqe = round_bf16_half_up(qe), rqo = round_bf16_half_up(qo);
    _mm256_storeu_si256((__m256i *)p, pack_bf16(rpe, rpo));
    _mm256_storeu_si256((__m256i *)q, pack_bf16(rqe, rqo));
    /* rare (about one block in 2000 on random data): stored again rather than branched around,
     * so the usual path runs straight through */
    if (__builtin_expect(tied_lanes(rpe, rpo, rqe, rqo), 0)) {
        _mm256_storeu_si256((__m256i *)p, pack_bf16(round_bf16(pe), round_bf16(po)));
        _mm256_storeu_si256((__m256i *)q, pack_bf16(round_bf16(qe), round_bf16(qo)));
    }
}

/* ---------------------------------------------------------------- 8 values: fp16, fp32 */

ATTR static inline __m256 load8_f32(const void *p) { return _mm256_loadu_ps(p); }

ATTR static inline void store8_f32(void *p, __m256 v) { _mm256_storeu_ps(p, v); }

ATTR static inline __m256 load8_f16(const void *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* float32 -> float16 exactly as kvx_f32_to_f16 (half.h): denormals, infinities and NaN
 * payloads included. */
ATTR static inline void store8_f16(void *p, __m256 v)
{
    _mm_storeu_si128((__m128i *)p,
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* ---------------------------------------------------------------- blocks */

typedef struct block_angles {
    __m256 cos[2], sin[2]; /* in the order the block's rotation routine wants them */
} block_angles;

/*
 * NeoX, fp16 / fp32: rotates pairs [first, first + 16) of the head at `head`, pairs
 * [first + 8 j, first + 8 j + 8) by cos[j] / sin[j].
 *
 * GPT-J, fp16 / fp32: 8 values hold 4 whole pairs. With cos duplicated (c0 c0 c1 c1 ...) and sin
 * duplicated with the sign of the even lanes flipped (-s0 s0 -s1 s1 ...; see gptj_angles), the
 * result is x * cc + swap(x) * ss, swap exchanging the members of each pair: a*c + b*(-s) =
 * a*c - b*s and b*c + a*s, the generic loop's roundings bit for bit (except the sign of a NaN
 * coming from the cache's sin, which the negation flips), as on AVX-512. Rotates pairs
 * [first, first + 8), values [2 first + 8 j, ...) by cos[j] / sin[j].
 */
#define DEFINE_BLOCKS(suffix, elem_size, LOAD8, STORE8)                                           \
    ATTR static inline void neox_block_##suffix(char *head, int64_t first, int64_t half,          \
                                                const block_angles *a)                            \
    {                                                                                             \
        for (int j = 0; j < 2; j++) {                                                             \
            char *x = head + (first + 8 * j) * (elem_size), *y = x + half * (elem_size);          \
            __m256 xv = LOAD8(x), yv = LOAD8(y);                                                  \
            STORE8(x, _mm256_sub_ps(_mm256_mul_ps(xv, a->cos[j]), _mm256_mul_ps(yv, a->sin[j]))); \
            STORE8(y, _mm256_add_ps(_mm256_mul_ps(yv, a->cos[j]), _mm256_mul_ps(xv, a->sin[j]))); \
        }                                                                                         \
    }                                                                                             \
    ATTR static inline void gptj_block_##suffix(char *head, int64_t first, int64_t half,          \
                                                const block_angles *a)                            \
    {                                                                                             \
        (void)half;                                                                               \
        for (int j = 0; j < 2; j++) {                                                             \
            char *p = head + (2 * first + 8 * j) * (elem_size);                                   \
            __m256 v = LOAD8(p), swapped = _mm256_permute_ps(v, 0xb1);                            \
            STORE8(p, _mm256_add_ps(_mm256_mul_ps(v, a->cos[j]),                                  \
                                    _mm256_mul_ps(swapped, a->sin[j])));                          \
        }                                                                                         \
    }

DEFINE_BLOCKS(f32, 4, load8_f32, store8_f32)
DEFINE_BLOCKS(f16, 2, load8_f16, store8_f16)

/* NeoX, bf16: pairs [first, first + 16), angles in even / odd order (cos[0]: pairs first + 2i,
 * cos[1]: pairs first + 2i + 1). */
ATTR static inline void neox_bf16(char *head, int64_t first, int64_t half, const block_angles *a,
                                  int nan_angles)
{
    uint16_t *x = (uint16_t *)head + first, *y = x + half;
    __m256i xv = _mm256_loadu_si256((const __m256i *)x);
    __m256i yv = _mm256_loadu_si256((const __m256i *)y);
    __m256 xe = bf16_low(xv), xo = bf16_high(xv), ye = bf16_low(yv), yo = bf16_high(yv);
    __m256 rxe = _mm256_sub_ps(_mm256_mul_ps(xe, a->cos[0]), _mm256_mul_ps(ye, a->sin[0]));
    __m256 rxo = _mm256_sub_ps(_mm256_mul_ps(xo, a->cos[1]), _mm256_mul_ps(yo, a->sin[1]));
    __m256 rye = _mm256_add_ps(_mm256_mul_ps(ye, a->cos[0]), _mm256_mul_ps(xe, a->sin[0]));
    __m256 ryo = _mm256_add_ps(_mm256_mul_ps(yo, a->cos[1]), _mm256_mul_ps(xo, a->sin[1]));
    store32_bf16(x, rxe, rxo, y, rye, ryo, nan_angles);
}

/* GPT-J, bf16: pairs [first, first + 16), angles in plain order (cos[j]: pairs first + 8 j ...).
 * Each 32-bit lane holds one pair, a in its low half and b in its high half: the even / odd
 * vectors of a load are the pairs' a's and b's, lane by lane, as the rotation wants them. */
ATTR static inline void gptj_bf16(char *head, int64_t first, int64_t half, const block_angles *ang,
                                  int nan_angles)
{
    (void)half;
    uint16_t *p = (uint16_t *)head + 2 * first;
    __m256i v0 = _mm256_loadu_si256((const __m256i *)p);
    __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + 16));
    __m256 a0 = bf16_low(v0), b0 = bf16_high(v0), a1 = bf16_low(v1), b1 = bf16_high(v1);
    __m256 ra0 = _mm256_sub_ps(_mm256_mul_ps(a0, ang->cos[0]), _mm256_mul_ps(b0, ang->sin[0]));
    __m256 rb0 = _mm256_add_ps(_mm256_mul_ps(b0, ang->cos[0]), _mm256_mul_ps(a0, ang->sin[0]));
    __m256 ra1 = _mm256_sub_ps(_mm256_mul_ps(a1, ang->cos[1]), _mm256_mul_ps(b1, ang->sin[1]));
    __m256 rb1 = _mm256_add_ps(_mm256_mul_ps(b1, ang->cos[1]), _mm256_mul_ps(a1, ang->sin[1]));
    store32_bf16(p, ra0, rb0, p + 16, ra1, rb1, nan_angles);
}

/* The two for angles free of NaNs, and for any angles. */
ATTR static inline void neox_block_bf16(char *head, int64_t first, int64_t half,
                                        const block_angles *a)
{
    neox_bf16(head, first, half, a, 0);
}

ATTR static inline void neox_block_bf16_nan(char *head, int64_t first, int64_t half,
                                            const block_angles *a)
{
    neox_bf16(head, first, half, a, 1);
}

ATTR static inline void gptj_block_bf16(char *head, int64_t first, int64_t half,
                                        const block_angles *a)
{
    gptj_bf16(head, first, half, a, 0);
}

ATTR static inline void gptj_block_bf16_nan(char *head, int64_t first, int64_t half,
                                            const block_angles *a)
{
    gptj_bf16(head, first, half, a, 1);
}

/* Whether any angle of blocks a[0 .. blocks) is a NaN. */
ATTR static inline int angles_have_nan(const block_angles *a, int64_t blocks)
{
    __m256 nan = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; b++) {
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a[b].cos[0], a[b].cos[1], _CMP_UNORD_Q));
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a[b].sin[0], a[b].sin[1], _CMP_UNORD_Q));
    }
    return _mm256_movemask_ps(nan) != 0;
}

/* ---------------------------------------------------------------- a token's angles */

/* 8 angles of a cache row from index i, as float32 whatever the cache stores. */
ATTR static inline __m256 load_angles_x8(const void *row, int32_t dtype, int64_t i)
{
    if (dtype == KVX_DTYPE_FLOAT32)
        return _mm256_loadu_ps((const float *)row + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
    if (dtype == KVX_DTYPE_FLOAT16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* (*c, *s) <- the rotation by new - old, given new in (*c, *s) and old in (co, so), with the
 * roundings of combine_angles. */
ATTR static inline void combine_x8(__m256 *c, __m256 *s, __m256 co, __m256 so)
{
    __m256 cn = *c, sn = *s;
    *c = _mm256_add_ps(_mm256_mul_ps(cn, co), _mm256_mul_ps(sn, so));
    *s = _mm256_sub_ps(_mm256_mul_ps(sn, co), _mm256_mul_ps(cn, so));
}

/* cos/sin of pairs [i, i + 8): those of `new_row`, or, when `old_row` is given, those of
 * new - old with the roundings of combine_angles. */
ATTR static inline void angles_x8(const void *new_row, const void *old_row, int32_t dtype,
                                  int64_t i, int64_t half, __m256 *c, __m256 *s)
{
    *c = load_angles_x8(new_row, dtype, i);
    *s = load_angles_x8(new_row, dtype, half + i);
    if (old_row)
        combine_x8(c, s, load_angles_x8(old_row, dtype, i),
                   load_angles_x8(old_row, dtype, half + i));
}

/* A token's block of 16 pairs from `first`, in plain order: NeoX fp16 / fp32, GPT-J bf16. */
ATTR static inline block_angles plain_angles(const void *new_row, const void *old_row,
                                             int32_t dtype, int64_t first, int64_t half)
{
    block_angles a;
    for (int j = 0; j < 2; j++)
        angles_x8(new_row, old_row, dtype, first + 8 * j, half, &a.cos[j], &a.sin[j]);
    return a;
}

/* Pairs 0, 2, 4 ... 14 and 1, 3 ... 15 of 16 values held as [0, 8) and [8, 16): 128-bit halves
 * regrouped as [0, 4) [8, 12) and [4, 8) [12, 16), then in-lane picks. */
ATTR static inline void even_odd(__m256 lo, __m256 hi, __m256 *even, __m256 *odd)
{
    __m256 a = _mm256_permute2f128_ps(lo, hi, 0x20), b = _mm256_permute2f128_ps(lo, hi, 0x31);
    *even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    *odd = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
}

/* 16 angles of a bf16 cache row from index i, split even / odd as the keys are: no shuffle. */
ATTR static inline void load_bf16_even_odd(const void *row, int64_t i, __m256 *even, __m256 *odd)
{
    __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + i));
    *even = bf16_low(v);
    *odd = bf16_high(v);
}

/* A token's block of 16 NeoX pairs from `first` in even / odd order, for bf16 keys. */
ATTR static inline block_angles neox_angles_even_odd(const void *new_row, const void *old_row,
                                                     int32_t dtype, int64_t first, int64_t half)
{
    if (dtype == KVX_DTYPE_BFLOAT16) { /* vLLM's cache in a bf16 model */
        block_angles a, o;
        load_bf16_even_odd(new_row, first, &a.cos[0], &a.cos[1]);
        load_bf16_even_odd(new_row, half + first, &a.sin[0], &a.sin[1]);
        if (old_row) {
            load_bf16_even_odd(old_row, first, &o.cos[0], &o.cos[1]);
            load_bf16_even_odd(old_row, half + first, &o.sin[0], &o.sin[1]);
            for (int j = 0; j < 2; j++)
                combine_x8(&a.cos[j], &a.sin[j], o.cos[j], o.sin[j]);
        }
        return a;
    }
    block_angles p = plain_angles(new_row, old_row, dtype, first, half), a;
    even_odd(p.cos[0], p.cos[1], &a.cos[0], &a.cos[1]);
    even_odd(p.sin[0], p.sin[1], &a.sin[0], &a.sin[1]);
    return a;
}

/* GPT-J angles for 8 pairs, fp16 / fp32 keys: values [0, 8) and [8, 16), see DEFINE_BLOCKS. */
ATTR static inline block_angles gptj_angles(const void *new_row, const void *old_row, int32_t dtype,
                                            int64_t first, int64_t half)
{
    const __m256i dup_lo = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m256i dup_hi = _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7);
    const __m256 even_sign = _mm256_castsi256_ps(_mm256_setr_epi32(
        (int)0x80000000u, 0, (int)0x80000000u, 0, (int)0x80000000u, 0, (int)0x80000000u, 0));
    __m256 c, s;
    angles_x8(new_row, old_row, dtype, first, half, &c, &s);
    block_angles a;
    a.cos[0] = _mm256_permutevar8x32_ps(c, dup_lo);
    a.cos[1] = _mm256_permutevar8x32_ps(c, dup_hi);
    a.sin[0] = _mm256_xor_ps(_mm256_permutevar8x32_ps(s, dup_lo), even_sign);
    a.sin[1] = _mm256_xor_ps(_mm256_permutevar8x32_ps(s, dup_hi), even_sign);
    return a;
}

/* ---------------------------------------------------------------- token loops */

DEFINE_TAIL(rotate_tail, ATTR_AVX2)

/* rope_cpu.h's sliced token loop, with the AVX2 generic loop for rotations narrower than a block
 * (see store32_bf16 for ROTATE_NAN). */
#define DEFINE_TOKEN_LOOP(name, pairs, elem_size, ANGLES, ROTATE, ROTATE_NAN, NAN_CHECK)          \
    DEFINE_SLICED_TOKEN_LOOP(name, pairs, elem_size, ANGLES, ROTATE, ROTATE_NAN, NAN_CHECK, ATTR, \
                             rope_range_avx2, rotate_tail)

DEFINE_TOKEN_LOOP(token_loop_neox_f32, 16, 4, plain_angles, neox_block_f32, neox_block_f32, 0)
DEFINE_TOKEN_LOOP(token_loop_neox_f16, 16, 2, plain_angles, neox_block_f16, neox_block_f16, 0)
DEFINE_TOKEN_LOOP(token_loop_neox_bf16, 16, 2, neox_angles_even_odd, neox_block_bf16,
                  neox_block_bf16_nan, 1)
DEFINE_TOKEN_LOOP(token_loop_gptj_f32, 8, 4, gptj_angles, gptj_block_f32, gptj_block_f32, 0)
DEFINE_TOKEN_LOOP(token_loop_gptj_f16, 8, 2, gptj_angles, gptj_block_f16, gptj_block_f16, 0)
DEFINE_TOKEN_LOOP(token_loop_gptj_bf16, 16, 2, plain_angles, gptj_block_bf16, gptj_block_bf16_nan,
                  1)

/* ---------------------------------------------------------------- tables */

const rope_isa kvx_rope_avx2_isa = {
    "avx2",
    rope_range_avx2,
    {
        {rotate_neox_f32_avx2, rotate_neox_f16_avx2, rotate_neox_bf16_avx2},
        {rotate_gptj_f32_avx2, rotate_gptj_f16_avx2, rotate_gptj_bf16_avx2},
    },
    {
        {token_loop_neox_f32, token_loop_neox_f16, token_loop_neox_bf16},
        {token_loop_gptj_f32, token_loop_gptj_f16, token_loop_gptj_bf16},
    },
};

/* The token loops convert with F16C (fp16 keys or caches): without it, the generic loop alone. */
const rope_isa kvx_rope_avx2_generic_isa = {
    "avx2",
    rope_range_avx2,
    {
        {rotate_neox_f32_avx2, rotate_neox_f16_avx2, rotate_neox_bf16_avx2},
        {rotate_gptj_f32_avx2, rotate_gptj_f16_avx2, rotate_gptj_bf16_avx2},
    },
    {{NULL, NULL, NULL}, {NULL, NULL, NULL}},
};
#endif /* KVX_ROPE_X86 */
