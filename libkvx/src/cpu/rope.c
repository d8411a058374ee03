/*
 * rope.c - RoPE re-rotation and application on the CPU backend.
 *
 * Work is split over tokens on the thread pool. For each token the cos/sin of its angles are
 * read from the cache once (and, for re-rotation, combined into the single rotation by
 * new - old: cos(n - o) = cos n cos o + sin n sin o, sin(n - o) = sin n cos o - cos n sin o), then
 * every head of every layer of every tensor of that token is rotated with them, so each key is
 * read and written exactly once. The per-head loops are specialised by storage type and
 * pairing, written so that gcc vectorises them (no branches; conversions by integer arithmetic
 * in half.h), compiled for several instruction sets and chosen at run time; on AVX-512 the
 * 16-bit NeoX loops and all GPT-J loops are hand-written, and jobs on bf16 NeoX keys have a
 * token loop of their own that keeps the angles in registers. What limits speed is the arithmetic,
 * shuffles and conversions per element, not memory. Every variant computes the same float32
 * operations, so all give the same bits (and the same bits as torch computing a*cos - b*sin in
 * float32).
 *
 * Positions were range-checked by src/core/rope.c before this runs.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "../core/half.h"

/* Pairs whose cos/sin a token holds at once; wider rotations are done in slices of this many
 * pairs, so stack use stays fixed (6 KiB) whatever rot_dim is. */
#define PAIR_SLICE 256

#define ALWAYS_INLINE inline __attribute__((always_inline))
/* A table may prefer a hand-written loop to the generic one of the same ISA. */
#define UNUSED __attribute__((unused))

/* Rotates pairs [first, first + n) of `num_heads` head vectors (head h at base + h*head_bytes)
 * by the angles whose cos/sin are c[0..n) and s[0..n); `half` is rot_dim / 2. */
typedef void (*rotate_heads_fn)(char *base, int32_t num_heads, int64_t head_bytes,
                                const float *c, const float *s, int64_t first, int64_t n,
                                int64_t half);

#define LOAD_F32(v) (v)
#define STORE_F32(v) (v)

/* One pair (a, b) -> (a cos - b sin, b cos + a sin), in float32 whatever T is, as separate
 * roundings (C11 mode keeps gcc from contracting into FMAs), so every ISA variant below gives
 * the same bits. */
#define DEFINE_ROTATE(suffix, T, LOAD, STORE, ATTR)                                           \
    ATTR UNUSED static void rotate_neox_##suffix(char *base, int32_t num_heads,              \
                                                 int64_t head_bytes, const float *restrict c, \
                                                 const float *restrict s, int64_t first,      \
                                                 int64_t n, int64_t half)                     \
    {                                                                                         \
        for (int32_t h = 0; h < num_heads; h++) {                                             \
            T *restrict x = (T *)(base + h * head_bytes) + first;                             \
            T *restrict y = x + half;                                                         \
            for (int64_t i = 0; i < n; i++) {                                                 \
                float a = LOAD(x[i]), b = LOAD(y[i]);                                         \
                x[i] = STORE(a * c[i] - b * s[i]);                                            \
                y[i] = STORE(b * c[i] + a * s[i]);                                            \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    ATTR UNUSED static void rotate_gptj_##suffix(char *base, int32_t num_heads,              \
                                                 int64_t head_bytes, const float *restrict c, \
                                                 const float *restrict s, int64_t first,      \
                                                 int64_t n, int64_t half)                     \
    {                                                                                         \
        (void)half;                                                                           \
        for (int32_t h = 0; h < num_heads; h++) {                                             \
            T *restrict p = (T *)(base + h * head_bytes) + 2 * first;                         \
            for (int64_t i = 0; i < n; i++) {                                                 \
                float a = LOAD(p[2 * i]), b = LOAD(p[2 * i + 1]);                             \
                p[2 * i] = STORE(a * c[i] - b * s[i]);                                        \
                p[2 * i + 1] = STORE(b * c[i] + a * s[i]);                                    \
            }                                                                                 \
        }                                                                                     \
    }

/* ---------------------------------------------------------------- per-token work */

/* cos[first .. first + n) and sin[...] of cache row `pos` as float32: pointers into the cache
 * itself when it is float32 (copying would only cost time), else converted into (c, s). */
static ALWAYS_INLINE void load_angles(const kvx_rope_cache *cache, int64_t pos, int64_t first,
                                      int64_t n, float *restrict c, float *restrict s,
                                      const float **c_out, const float **s_out)
{
    int64_t half = cache->rot_dim / 2;
    int64_t offset = pos * cache->row_stride + first;
    if (cache->dtype == KVX_DTYPE_FLOAT32) {
        const float *row = (const float *)cache->cos_sin + offset;
        *c_out = row;
        *s_out = row + half;
        return;
    }
    const uint16_t *row = (const uint16_t *)cache->cos_sin + offset;
    if (cache->dtype == KVX_DTYPE_FLOAT16) {
        for (int64_t i = 0; i < n; i++) {
            c[i] = kvx_f16_to_f32(row[i]);
            s[i] = kvx_f16_to_f32(row[half + i]);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            c[i] = kvx_bf16_to_f32(row[i]);
            s[i] = kvx_bf16_to_f32(row[half + i]);
        }
    }
    *c_out = c;
    *s_out = s;
}

/* (c, s) <- the rotation by new - old, given new in (cn, sn) and old in (co, so). */
static ALWAYS_INLINE void combine_angles(float *restrict c, float *restrict s,
                                         const float *cn, const float *sn, const float *co,
                                         const float *so, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        c[i] = cn[i] * co[i] + sn[i] * so[i];
        s[i] = sn[i] * co[i] - cn[i] * so[i];
    }
}

typedef struct rope_target {
    const kvx_rope_tensor *tensor;
    rotate_heads_fn rotate;
    int64_t elem_size;
} rope_target;

typedef struct rope_job {
    rope_target targets[2];
    int num_targets;
    const kvx_rope_cache *cache;
    const void *positions;     /* the angle to rotate to (new positions, or the positions) */
    const void *old_positions; /* re-rotation only: the angle to rotate from; else NULL */
    int32_t positions_dtype;
    int64_t row_bytes; /* distance between cache rows */
} rope_job;

static ALWAYS_INLINE int64_t position_at(const void *positions, int32_t dtype, int64_t t)
{
    return dtype == KVX_DTYPE_INT64 ? ((const int64_t *)positions)[t]
                                    : ((const int32_t *)positions)[t];
}

/* Rotates pairs [first, first + n) of every head of every layer of token t of one tensor. */
static ALWAYS_INLINE void rotate_token(const rope_target *target, int64_t t, const float *c,
                                       const float *s, int64_t first, int64_t n, int64_t half)
{
    const kvx_rope_tensor *x = target->tensor;
    int64_t size = target->elem_size;
    char *token = (char *)x->base + t * x->token_stride * size;
    for (int32_t l = 0; l < x->num_layers; l++)
        target->rotate(token + (int64_t)l * x->layer_stride * size, x->num_heads,
                       x->head_stride * size, c, s, first, n, half);
}

/* Row `pos` of the cos/sin cache. */
static ALWAYS_INLINE const void *cache_row(const rope_job *job, int64_t pos)
{
    return (const char *)job->cache->cos_sin + pos * job->row_bytes;
}

/* Cache rows are read at arbitrary positions. Runs of consecutive positions (a reused chunk, a
 * prompt) read consecutive rows, which the hardware prefetchers follow; elsewhere, ask for the
 * rows of a token a few tokens ahead while the heads of this one are rotated. Prefetching rows
 * that are on their way anyway measurably slows the consecutive case, hence the test. */
#define PREFETCH_TOKENS 4

static ALWAYS_INLINE void prefetch_row(const rope_job *job, const void *positions, int64_t t)
{
    int64_t pos = position_at(positions, job->positions_dtype, t);
    if (pos == position_at(positions, job->positions_dtype, t - 1) + 1)
        return;
    const char *row = cache_row(job, pos);
    int64_t bytes = (int64_t)job->cache->rot_dim * kvx_dtype_size(job->cache->dtype);
    for (int64_t offset = 0; offset < bytes; offset += 64)
        __builtin_prefetch(row + offset);
}

/* Prefetches the cache rows of token t + PREFETCH_TOKENS when it is before `end`. */
static ALWAYS_INLINE void prefetch_ahead(const rope_job *job, int64_t t, int64_t end)
{
    if (t + PREFETCH_TOKENS >= end)
        return;
    prefetch_row(job, job->positions, t + PREFETCH_TOKENS);
    if (job->old_positions)
        prefetch_row(job, job->old_positions, t + PREFETCH_TOKENS);
}

/* Rotates pairs [first, first + n), n <= PAIR_SLICE, of token t of every target. */
static ALWAYS_INLINE void rotate_token_pairs(const rope_job *job, int64_t t, int64_t first,
                                             int64_t n)
{
    const kvx_rope_cache *cache = job->cache;
    int64_t half = cache->rot_dim / 2;
    /* converted new / old rows (16-bit caches), and the combined rotation */
    float cn[PAIR_SLICE], sn[PAIR_SLICE], co[PAIR_SLICE], so[PAIR_SLICE];
    float c[PAIR_SLICE], s[PAIR_SLICE];
    const float *pc, *ps;
    load_angles(cache, position_at(job->positions, job->positions_dtype, t), first, n, cn, sn,
                &pc, &ps);
    if (job->old_positions) {
        const float *pco, *pso;
        load_angles(cache, position_at(job->old_positions, job->positions_dtype, t), first, n,
                    co, so, &pco, &pso);
        combine_angles(c, s, pc, ps, pco, pso, n);
        pc = c;
        ps = s;
    }
    for (int i = 0; i < job->num_targets; i++)
        rotate_token(&job->targets[i], t, pc, ps, first, n, half);
}

/* Tokens [begin, end) of a job. Compiled once per instruction set (the angle loops are worth
 * vectorising too: re-rotation combines two rows per token). */
static ALWAYS_INLINE void rope_range_body(void *ctx, int64_t begin, int64_t end)
{
    const rope_job *job = ctx;
    int64_t half = job->cache->rot_dim / 2;
    for (int64_t t = begin; t < end; t++) {
        prefetch_ahead(job, t, end);
        for (int64_t first = 0; first < half; first += PAIR_SLICE)
            rotate_token_pairs(job, t, first, half - first < PAIR_SLICE ? half - first : PAIR_SLICE);
    }
}

/* ---------------------------------------------------------------- variants by instruction set */

/* What one instruction set provides: the token loop, the rotations
 * [pairing: NeoX, GPT-J][dtype: f32, f16, bf16] it calls, and, optionally, token loops of their
 * own for jobs whose targets all have one dtype. */
typedef struct rope_isa {
    const char *name;
    kvx_range_fn range;
    rotate_heads_fn rotate[2][3];
    kvx_range_fn token_loop[2][3]; /* same indices; NULL: use `range` */
} rope_isa;

/* The same loops for each instruction set, gcc vectorising each for its own vector width. */
#define DEFINE_ISA_FUNCTIONS(isa, ATTR)                                                       \
    DEFINE_ROTATE(f32_##isa, float, LOAD_F32, STORE_F32, ATTR)                                \
    DEFINE_ROTATE(f16_##isa, uint16_t, kvx_f16_to_f32, kvx_f32_to_f16, ATTR)                  \
    DEFINE_ROTATE(bf16_##isa, uint16_t, kvx_bf16_to_f32, kvx_f32_to_bf16, ATTR)               \
    ATTR static void rope_range_##isa(void *ctx, int64_t begin, int64_t end)                 \
    {                                                                                         \
        rope_range_body(ctx, begin, end);                                                     \
    }

#define ISA_TABLE(isa)                                                                        \
    {                                                                                         \
        #isa, rope_range_##isa,                                                               \
        {                                                                                     \
            {rotate_neox_f32_##isa, rotate_neox_f16_##isa, rotate_neox_bf16_##isa},           \
            {rotate_gptj_f32_##isa, rotate_gptj_f16_##isa, rotate_gptj_bf16_##isa},           \
        },                                                                                    \
        {{NULL, NULL, NULL}, {NULL, NULL, NULL}},                                             \
    }

DEFINE_ISA_FUNCTIONS(baseline, )
static const rope_isa baseline_isa = ISA_TABLE(baseline);

#if defined(__x86_64__) && defined(__GNUC__)
#define KVX_ROPE_X86 1
#include <immintrin.h>

#define ATTR_AVX2 __attribute__((target("avx2")))
#define ATTR_AVX512                                                                           \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")))
#define ATTR_AVX512_BF16                                                                      \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,"                   \
                          "prefer-vector-width=512")))

DEFINE_ISA_FUNCTIONS(avx2, ATTR_AVX2)
DEFINE_ISA_FUNCTIONS(avx512, ATTR_AVX512)
static const rope_isa avx2_isa = ISA_TABLE(avx2);

/*
 * Hand-written NeoX loops for 16-bit keys on AVX-512: the hot case (Llama-style models in
 * bf16/fp16). Same arithmetic as the generic loop (no FMA), conversions by instruction:
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

static const rope_isa avx512_isa = {
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
static const rope_isa avx512bf16_isa = {
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
#endif

/*
 * The best variant this CPU runs, chosen once. KVX_CPU_ISA=baseline|avx2|avx512|avx512bf16
 * selects a lower one (the tests use it to check that every variant gives the same bits).
 */
static const rope_isa *choose_isa(void)
{
    const rope_isa *candidates[4];
    int count = 0;
#if KVX_ROPE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        if (__builtin_cpu_supports("avx512bf16"))
            candidates[count++] = &avx512bf16_isa;
        candidates[count++] = &avx512_isa;
    }
    if (__builtin_cpu_supports("avx2"))
        candidates[count++] = &avx2_isa;
#endif
    candidates[count++] = &baseline_isa;
    const char *wanted = getenv("KVX_CPU_ISA");
    for (int i = 0; wanted && i < count; i++)
        if (strcmp(wanted, candidates[i]->name) == 0)
            return candidates[i];
    return candidates[0];
}

static const rope_isa *_Atomic chosen_isa;

static const rope_isa *current_isa(void)
{
    const rope_isa *isa = atomic_load_explicit(&chosen_isa, memory_order_acquire);
    if (!isa) {
        /* Racing first calls compute the same answer; storing it twice is harmless. */
        isa = choose_isa();
        atomic_store_explicit(&chosen_isa, isa, memory_order_release);
    }
    return isa;
}

/* ---------------------------------------------------------------- entry points */

static rope_job new_job(const kvx_rope_cache *cache, const void *positions,
                        const void *old_positions, int32_t positions_dtype)
{
    return (rope_job){.cache = cache,
                      .positions = positions,
                      .old_positions = old_positions,
                      .positions_dtype = positions_dtype,
                      .row_bytes = cache->row_stride * kvx_dtype_size(cache->dtype)};
}

/* Index of a key dtype in the ISA tables: f32, f16, bf16. */
static int dtype_kind(int32_t dtype)
{
    return dtype == KVX_DTYPE_FLOAT16 ? 1 : dtype == KVX_DTYPE_BFLOAT16 ? 2 : 0;
}

static void add_target(rope_job *job, const rope_isa *isa, const kvx_rope_tensor *tensor)
{
    rope_target *target = &job->targets[job->num_targets++];
    target->tensor = tensor;
    target->rotate = isa->rotate[job->cache->pairing == KVX_ROPE_NEOX ? 0 : 1][dtype_kind(tensor->dtype)];
    target->elem_size = kvx_dtype_size(tensor->dtype);
}

/* The token loop for a job: the ISA's own for its pairing and dtype when every target has that
 * dtype and the ISA has one, else the generic loop. */
static kvx_range_fn job_range(const rope_job *job, const rope_isa *isa)
{
    int kind = dtype_kind(job->targets[0].tensor->dtype);
    for (int i = 1; i < job->num_targets; i++)
        if (dtype_kind(job->targets[i].tensor->dtype) != kind)
            return isa->range;
    kvx_range_fn loop = isa->token_loop[job->cache->pairing == KVX_ROPE_NEOX ? 0 : 1][kind];
    return loop ? loop : isa->range;
}

/* Enough tokens per chunk that a chunk is worth handing to another thread (~64 Ki elements). */
static int64_t token_grain(const rope_job *job)
{
    int64_t per_token = 0;
    for (int i = 0; i < job->num_targets; i++) {
        const kvx_rope_tensor *x = job->targets[i].tensor;
        per_token += (int64_t)x->num_layers * x->num_heads * job->cache->rot_dim;
    }
    int64_t grain = ((int64_t)1 << 16) / (per_token > 0 ? per_token : 1);
    return grain < 1 ? 1 : grain;
}

int32_t kvx_cpu_rope_rerotate(const kvx_rope_tensor *keys, const kvx_rope_cache *cache,
                              const void *old_positions, const void *new_positions,
                              int32_t positions_dtype, const kvx_stream *stream)
{
    (void)stream;
    const rope_isa *isa = current_isa();
    rope_job job = new_job(cache, new_positions, old_positions, positions_dtype);
    add_target(&job, isa, keys);
    kvx_parallel_for(keys->num_tokens, token_grain(&job), job_range(&job, isa), &job);
    return KVX_OK;
}

int32_t kvx_cpu_rope_apply(const kvx_rope_tensor *query, const kvx_rope_tensor *key,
                           const kvx_rope_cache *cache, const void *positions,
                           int32_t positions_dtype, const kvx_stream *stream)
{
    (void)stream;
    const rope_isa *isa = current_isa();
    rope_job job = new_job(cache, positions, NULL, positions_dtype);
    add_target(&job, isa, query);
    if (key)
        add_target(&job, isa, key);
    kvx_parallel_for(query->num_tokens, token_grain(&job), job_range(&job, isa), &job);
    return KVX_OK;
}
