/*
 * rope_neon.c - hand-written NEON RoPE token loops (64-bit ARM), and the table of the neon variant.
 *
 * The design of rope_avx2.c at 128 bits (rope_cpu.h's sliced token loop): a token loop builds the
 * rotation of a block of 16 pairs from the token's cache rows once, and applies it to every head
 * of every layer of the token's targets. Pairs past the last whole block, and jobs mixing dtypes,
 * go through the generic loop (compiled here too, as in the baseline variant). The float32
 * operations are the generic loop's, in the same order and without FMA (the build passes
 * -ffp-contract=off, so the compiler fuses no multiply-add intrinsics), and the narrowing rounds as
 * half.h does, so every variant gives the same bits; tests/test_cross_build.py checks them under
 * qemu against the baseline variant and the x86-64 build. Not timed on ARM hardware.
 *
 * NEON widens and narrows 16-bit values between halves of a register and a full one (vshll,
 * vaddhn, vcvt), and loads and stores pairs de-interleaved (vld2 / vst2), so no layout trick is
 * needed: every block keeps its values and angles in plain order, and GPT-J's members come apart
 * on the load, without AVX2's negated sin (so a NaN keeps its sign there).
 */
#include "rope_cpu.h"

#if KVX_ROPE_NEON
#include <arm_neon.h>

/* The generic loops (the baseline variant's code, vectorised by gcc for NEON): jobs mixing dtypes,
 * the pairs past the token loops' whole blocks. */
DEFINE_ISA_FUNCTIONS(neon, )

#define ATTR

/* ---------------------------------------------------------------- conversions */

/* The low / high four bf16 of v as float32: bf16 is the top half of a float32. */
static inline float32x4_t bf16_low(uint16x8_t v)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16));
}

static inline float32x4_t bf16_high(uint16x8_t v)
{
    return vreinterpretq_f32_u32(vshll_high_n_u16(v, 16));
}

/* 0x7fff plus the lowest kept bit, bit 16, of each lane: added to the float32 bits, it rounds to
 * nearest even at bit 16 as half.h does. */
static inline uint32x4_t bf16_rounding(uint32x4_t u)
{
    return vsraq_n_u32(vdupq_n_u32(0x7fff), vshlq_n_u32(u, 15), 31);
}

/*
 * 8 float32 (lo, hi) rounded to bf16: add and keep the high halves (vaddhn), three operations per
 * four values. half.h truncates a NaN instead and sets its quiet bit (the addition could carry out
 * of its payload); that matters only for a NaN with low payload bits, which products of bf16 keys
 * by NaN-free angles never make (an arithmetic NaN is one input's payload, quieted, or the
 * default NaN, and bf16 keys have no bits below bit 16), so only `nan_angles` pays for the rule.
 */
static inline uint16x8_t narrow_bf16(float32x4_t lo, float32x4_t hi, int nan_angles)
{
    uint32x4_t ul = vreinterpretq_u32_f32(lo), uh = vreinterpretq_u32_f32(hi);
    uint16x8_t h = vaddhn_high_u32(vaddhn_u32(ul, bf16_rounding(ul)), uh, bf16_rounding(uh));
    if (nan_angles) {
        const uint32x4_t quiet = vdupq_n_u32(0x400000);
        uint16x8_t nan_h = vshrn_high_n_u32(vshrn_n_u32(vorrq_u32(ul, quiet), 16),
                                            vorrq_u32(uh, quiet), 16);
        uint16x8_t is_nan = vcombine_u16(vmovn_u32(vmvnq_u32(vceqq_f32(lo, lo))),
                                         vmovn_u32(vmvnq_u32(vceqq_f32(hi, hi))));
        h = vbslq_u16(is_nan, nan_h, h);
    }
    return h;
}

/* fp16: FCVTL / FCVTN round to nearest even (the FPCR's default mode), keep denormals (flushing
 * is off by default) and keep a NaN's payload as x86's vcvtps2ph does, so as half.h. */
static inline float32x4_t f16_low(uint16x8_t v)
{
    return vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(v)));
}

static inline float32x4_t f16_high(uint16x8_t v)
{
    return vcvt_high_f32_f16(vreinterpretq_f16_u16(v));
}

static inline uint16x8_t narrow_f16(float32x4_t lo, float32x4_t hi, int nan_angles)
{
    (void)nan_angles;
    return vreinterpretq_u16_f16(vcvt_high_f16_f32(vcvt_f16_f32(lo), hi));
}

/* ---------------------------------------------------------------- blocks */

typedef struct block_angles {
    float32x4_t cos[4], sin[4]; /* pairs first + 4 j .. first + 4 j + 3 in cos[j] / sin[j] */
} block_angles;

/* One pair of vectors (a, b) -> (a cos - b sin, b cos + a sin), the generic loop's roundings. */
#define ROTATE4(a, b, c, s, ra, rb)                                                                \
    do {                                                                                           \
        (ra) = vsubq_f32(vmulq_f32(a, c), vmulq_f32(b, s));                                        \
        (rb) = vaddq_f32(vmulq_f32(b, c), vmulq_f32(a, s));                                        \
    } while (0)

/*
 * 16-bit keys: 8 values per load, widened by LOW / HIGH, narrowed by NARROW. NeoX rotates pairs
 * [first, first + 16) of the head at `head`, x from `first`, y `half` values further; GPT-J the
 * 16 pairs from value 2 first, vld2 parting each pair's members.
 */
#define DEFINE_BLOCKS16(suffix, LOW, HIGH, NARROW)                                                 \
    static inline void neox_##suffix(char *head, int64_t first, int64_t half,                      \
                                     const block_angles *a, int nan_angles)                        \
    {                                                                                              \
        uint16_t *x = (uint16_t *)head + first, *y = x + half;                                     \
        for (int j = 0; j < 2; j++) {                                                              \
            uint16x8_t xv = vld1q_u16(x + 8 * j), yv = vld1q_u16(y + 8 * j);                       \
            float32x4_t rx0, ry0, rx1, ry1;                                                        \
            ROTATE4(LOW(xv), LOW(yv), a->cos[2 * j], a->sin[2 * j], rx0, ry0);                     \
            ROTATE4(HIGH(xv), HIGH(yv), a->cos[2 * j + 1], a->sin[2 * j + 1], rx1, ry1);           \
            vst1q_u16(x + 8 * j, NARROW(rx0, rx1, nan_angles));                                    \
            vst1q_u16(y + 8 * j, NARROW(ry0, ry1, nan_angles));                                    \
        }                                                                                          \
    }                                                                                              \
    static inline void gptj_##suffix(char *head, int64_t first, int64_t half,                      \
                                     const block_angles *a, int nan_angles)                        \
    {                                                                                              \
        (void)half;                                                                                \
        uint16_t *p = (uint16_t *)head + 2 * first;                                                \
        for (int j = 0; j < 2; j++) {                                                              \
            uint16x8x2_t v = vld2q_u16(p + 16 * j);                                                \
            float32x4_t ra0, rb0, ra1, rb1;                                                        \
            ROTATE4(LOW(v.val[0]), LOW(v.val[1]), a->cos[2 * j], a->sin[2 * j], ra0, rb0);         \
            ROTATE4(HIGH(v.val[0]), HIGH(v.val[1]), a->cos[2 * j + 1], a->sin[2 * j + 1], ra1,     \
                    rb1);                                                                          \
            uint16x8x2_t r = {{NARROW(ra0, ra1, nan_angles), NARROW(rb0, rb1, nan_angles)}};       \
            vst2q_u16(p + 16 * j, r);                                                              \
        }                                                                                          \
    }

DEFINE_BLOCKS16(bf16, bf16_low, bf16_high, narrow_bf16)
DEFINE_BLOCKS16(f16, f16_low, f16_high, narrow_f16)

/* fp32 keys, 4 values per load. */
static inline void neox_f32(char *head, int64_t first, int64_t half, const block_angles *a,
                            int nan_angles)
{
    (void)nan_angles;
    float *x = (float *)head + first, *y = x + half;
    for (int j = 0; j < 4; j++) {
        float32x4_t rx, ry;
        ROTATE4(vld1q_f32(x + 4 * j), vld1q_f32(y + 4 * j), a->cos[j], a->sin[j], rx, ry);
        vst1q_f32(x + 4 * j, rx);
        vst1q_f32(y + 4 * j, ry);
    }
}

static inline void gptj_f32(char *head, int64_t first, int64_t half, const block_angles *a,
                            int nan_angles)
{
    (void)half;
    (void)nan_angles;
    float *p = (float *)head + 2 * first;
    for (int j = 0; j < 4; j++) {
        float32x4x2_t v = vld2q_f32(p + 8 * j), r;
        ROTATE4(v.val[0], v.val[1], a->cos[j], a->sin[j], r.val[0], r.val[1]);
        vst2q_f32(p + 8 * j, r);
    }
}

/* The block routines the token loops call: for angles free of NaNs, and for any angles (which
 * only bf16 narrowing tells apart). */
#define DEFINE_ROTATE_BLOCK(pairing, suffix)                                                       \
    static inline void pairing##_block_##suffix(char *head, int64_t first, int64_t half,           \
                                                const block_angles *a)                             \
    {                                                                                              \
        pairing##_##suffix(head, first, half, a, 0);                                               \
    }                                                                                              \
    static inline void pairing##_block_##suffix##_nan(char *head, int64_t first, int64_t half,     \
                                                      const block_angles *a)                       \
    {                                                                                              \
        pairing##_##suffix(head, first, half, a, 1);                                               \
    }

DEFINE_ROTATE_BLOCK(neox, f32)
DEFINE_ROTATE_BLOCK(neox, f16)
DEFINE_ROTATE_BLOCK(neox, bf16)
DEFINE_ROTATE_BLOCK(gptj, f32)
DEFINE_ROTATE_BLOCK(gptj, f16)
DEFINE_ROTATE_BLOCK(gptj, bf16)

/* Whether any angle of blocks a[0 .. blocks) is a NaN. */
static inline int angles_have_nan(const block_angles *a, int64_t blocks)
{
    uint32x4_t nan = vdupq_n_u32(0);
    for (int64_t b = 0; b < blocks; b++)
        for (int j = 0; j < 4; j++) {
            nan = vorrq_u32(nan, vmvnq_u32(vceqq_f32(a[b].cos[j], a[b].cos[j])));
            nan = vorrq_u32(nan, vmvnq_u32(vceqq_f32(a[b].sin[j], a[b].sin[j])));
        }
    return vmaxvq_u32(nan) != 0;
}

/* ---------------------------------------------------------------- a token's angles */

/* 4 angles of a cache row from index i, as float32 whatever the cache stores. */
static inline float32x4_t load_angles_x4(const void *row, int32_t dtype, int64_t i)
{
    if (dtype == KVX_DTYPE_FLOAT32)
        return vld1q_f32((const float *)row + i);
    uint16x4_t h = vld1_u16((const uint16_t *)row + i);
    if (dtype == KVX_DTYPE_FLOAT16)
        return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

/* A token's block of 16 pairs from `first`: those of `new_row`, or, when `old_row` is given,
 * those of new - old with the roundings of combine_angles. */
static inline block_angles block_angles_at(const void *new_row, const void *old_row, int32_t dtype,
                                           int64_t first, int64_t half)
{
    block_angles a;
    for (int j = 0; j < 4; j++) {
        int64_t i = first + 4 * j;
        float32x4_t c = load_angles_x4(new_row, dtype, i),
                    s = load_angles_x4(new_row, dtype, half + i);
        if (old_row) {
            float32x4_t co = load_angles_x4(old_row, dtype, i);
            float32x4_t so = load_angles_x4(old_row, dtype, half + i);
            float32x4_t cn = c, sn = s;
            c = vaddq_f32(vmulq_f32(cn, co), vmulq_f32(sn, so));
            s = vsubq_f32(vmulq_f32(sn, co), vmulq_f32(cn, so));
        }
        a.cos[j] = c;
        a.sin[j] = s;
    }
    return a;
}

/* ---------------------------------------------------------------- token loops */

DEFINE_TAIL(rotate_tail, ATTR)

#define DEFINE_TOKEN_LOOP(name, ROTATE, NAN_CHECK, elem_size)                                      \
    DEFINE_SLICED_TOKEN_LOOP(name, 16, elem_size, block_angles_at, ROTATE, ROTATE##_nan,           \
                             NAN_CHECK, ATTR, rope_range_neon, rotate_tail)

DEFINE_TOKEN_LOOP(token_loop_neox_f32, neox_block_f32, 0, 4)
DEFINE_TOKEN_LOOP(token_loop_neox_f16, neox_block_f16, 0, 2)
DEFINE_TOKEN_LOOP(token_loop_neox_bf16, neox_block_bf16, 1, 2)
DEFINE_TOKEN_LOOP(token_loop_gptj_f32, gptj_block_f32, 0, 4)
DEFINE_TOKEN_LOOP(token_loop_gptj_f16, gptj_block_f16, 0, 2)
DEFINE_TOKEN_LOOP(token_loop_gptj_bf16, gptj_block_bf16, 1, 2)

/* ---------------------------------------------------------------- table */

const rope_isa kvx_rope_neon_isa = {
    "neon",
    rope_range_neon,
    {
        {rotate_neox_f32_neon, rotate_neox_f16_neon, rotate_neox_bf16_neon},
        {rotate_gptj_f32_neon, rotate_gptj_f16_neon, rotate_gptj_bf16_neon},
    },
    {
        {token_loop_neox_f32, token_loop_neox_f16, token_loop_neox_bf16},
        {token_loop_gptj_f32, token_loop_gptj_f16, token_loop_gptj_bf16},
    },
};
#endif /* KVX_ROPE_NEON */
