/*
 * rope_cpu.h - what the CPU RoPE files share: the job a call becomes, the per-token work of the
 * generic loop (written so that gcc vectorises it for whatever instruction set includes it), and
 * the table of loops one instruction set provides. rope.c holds the baseline variant and the
 * entry points; rope_avx2.c, rope_avx512.c and rope_neon.c the hand-written AVX2, AVX-512 and NEON
 * loops.
 */
#ifndef KVX_CPU_ROPE_CPU_H
#define KVX_CPU_ROPE_CPU_H

#include <stdint.h>

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
typedef void (*rotate_heads_fn)(char *base, int32_t num_heads, int64_t head_bytes, const float *c,
                                const float *s, int64_t first, int64_t n, int64_t half);

#define LOAD_F32(v) (v)
#define STORE_F32(v) (v)

/* One pair (a, b) -> (a cos - b sin, b cos + a sin), in float32 whatever T is, as separate
 * roundings (the build passes -ffp-contract=off, so no compiler fuses them into FMAs), so every
 * ISA variant gives the same bits. Except for one thing IEEE leaves open: when both members of a
 * pair are NaNs, which payload a sum passes on depends on the operand order the compiler picks. */
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
static ALWAYS_INLINE void combine_angles(float *restrict c, float *restrict s, const float *cn,
                                         const float *sn, const float *co, const float *so,
                                         int64_t n)
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
    /* Checked copies (src/ops/rope.c), private to the call: every entry is in [0, max_position)
     * however often it is read. */
    const int64_t *positions;     /* the angle to rotate to (new positions, or the positions) */
    const int64_t *old_positions; /* re-rotation only: the angle to rotate from; else NULL */
    int64_t row_bytes;   /* distance between cache rows */
    int64_t angle_bytes; /* the rot_dim values of a row */
} rope_job;

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

static ALWAYS_INLINE void prefetch_row(const rope_job *job, const int64_t *positions, int64_t t)
{
    int64_t pos = positions[t];
    if (pos == positions[t - 1] + 1)
        return;
    const char *row = cache_row(job, pos);
    for (int64_t offset = 0; offset < job->angle_bytes; offset += 64)
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
    load_angles(cache, job->positions[t], first, n, cn, sn, &pc, &ps);
    if (job->old_positions) {
        const float *pco, *pso;
        load_angles(cache, job->old_positions[t], first, n, co, so, &pco, &pso);
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
            rotate_token_pairs(job, t, first,
                               half - first < PAIR_SLICE ? half - first : PAIR_SLICE);
    }
}

/* ---------------------------------------------------------------- sliced token loops */

/* Blocks whose angles a token loop holds at once: 128 to 256 pairs, 4 KiB of stack for two sets. */
#define SLICE_BLOCKS 16

/* One token's share of work: pairs [first, first + blocks * pairs) of token t. */
typedef struct token_slice {
    int64_t t, first, blocks;
} token_slice;

/* The slice of token t from pair `first`, whole blocks of `pairs` pairs up to `whole`. */
static inline token_slice slice_at(int64_t t, int64_t first, int64_t pairs, int64_t whole)
{
    int64_t left = (whole - first) / pairs;
    return (token_slice){t, first, left < SLICE_BLOCKS ? left : SLICE_BLOCKS};
}

/* The slice after s, in the order the token loop does them (the next token's first when s ends
 * its token). */
static inline token_slice next_slice(token_slice s, int64_t pairs, int64_t whole)
{
    int64_t first = s.first + s.blocks * pairs;
    return first < whole ? slice_at(s.t, first, pairs, whole) : slice_at(s.t + 1, 0, pairs, whole);
}

/* `name`(job, t, first, n): the pairs of token t past the last whole block, by the generic loop.
 * Not inlined: its 6 KiB of cos/sin arrays would sit in every token loop's stack frame. */
#define DEFINE_TAIL(name, ATTR)                                                                    \
    __attribute__((noinline)) ATTR static void name(const rope_job *job, int64_t t, int64_t first, \
                                                    int64_t n)                                     \
    {                                                                                              \
        rotate_token_pairs(job, t, first, n);                                                      \
    }

/* The angles of slice s into a[0 .. s.blocks), built by ANGLES from the token's cache rows. */
#define ANGLES_OF_SLICE(job, s, pairs, dtype, half, a, ANGLES)                                 \
    do {                                                                                       \
        const void *new_row = cache_row(job, (job)->positions[(s).t]);                         \
        const void *old_row =                                                                  \
            (job)->old_positions ? cache_row(job, (job)->old_positions[(s).t]) : NULL;         \
        for (int64_t b = 0; b < (s).blocks; b++)                                               \
            (a)[b] = ANGLES(new_row, old_row, dtype, (s).first + b * (pairs), half);           \
    } while (0)

/* Applies ROTATE with angles a[0 .. s.blocks) to the pairs of slice s of every head of every
 * layer of tensor x. */
#define ROTATE_TOKEN_SLICE(x, elem_size, s, pairs, half, a, ROTATE)                            \
    do {                                                                                       \
        /* locals, so the stores to keys need not be assumed to change them */                 \
        const int64_t layer_bytes = (x)->layer_stride * (elem_size);                           \
        const int64_t head_bytes = (x)->head_stride * (elem_size);                             \
        const int32_t num_layers = (x)->num_layers, num_heads = (x)->num_heads;                \
        const int64_t blocks = (s).blocks, first = (s).first;                                  \
        char *token = (char *)(x)->base + (s).t * (x)->token_stride * (elem_size);             \
        /* blocks outside, so a block's angles stay in registers over the heads; pointer steps \
         * (the last points past the tensor and is never dereferenced) */                      \
        for (int64_t b = 0; b < blocks; b++) {                                                 \
            const block_angles ang = (a)[b];                                                   \
            const int64_t pair = first + b * (pairs);                                          \
            char *layer = token;                                                               \
            for (int32_t l = 0; l < num_layers; l++, layer += layer_bytes) {                   \
                char *head = layer;                                                            \
                for (int32_t h = 0; h < num_heads; h++, head += head_bytes)                    \
                    ROTATE(head, pair, half, &ang);                                            \
            }                                                                                  \
        }                                                                                      \
    } while (0)

/*
 * A token loop for jobs whose targets all share one dtype, over whole blocks of `pairs` pairs,
 * for an instruction set whose registers do not hold a token's whole rotation (AVX2, NEON): the
 * including file defines `block_angles` (a block's rotation) and angles_have_nan(a, blocks).
 * ANGLES builds a block's rotation from the token's cache rows, ROTATE applies it to a head
 * (ROTATE_NAN where the angles hold a NaN, when NAN_CHECK), ATTR is the functions' target
 * attribute, GENERIC the instruction set's generic loop (for rotations narrower than a block) and
 * TAIL a DEFINE_TAIL routine (for the pairs past the last whole block).
 *
 * The angles of up to SLICE_BLOCKS blocks of a token (a slice) wait in an array on the stack; each
 * block's are loaded into registers and applied to every head before the next. The next slice's
 * (the next token's, mostly) are built before the heads of this one are rotated: nothing in the
 * rotation waits for them, so the core overlaps the two. Built right before its own heads
 * instead, each block's angles held them up; single-threaded on AVX2, re-rotating 4096 x 8 x 128
 * bf16 keys took about 5% longer.
 */
#define DEFINE_SLICED_TOKEN_LOOP(name, pairs, elem_size, ANGLES, ROTATE, ROTATE_NAN, NAN_CHECK,   \
                                 ATTR, GENERIC, TAIL)                                           \
    ATTR static void name(void *ctx, int64_t begin, int64_t end)                                \
    {                                                                                           \
        const rope_job *job = ctx;                                                              \
        int32_t dtype = job->cache->dtype;                                                      \
        int64_t half = job->cache->rot_dim / 2, whole = half / (pairs) * (pairs);               \
        if (whole == 0) {                                                                       \
            GENERIC(ctx, begin, end);                                                           \
            return;                                                                             \
        }                                                                                       \
        block_angles angles[2][SLICE_BLOCKS];                                                   \
        token_slice s = slice_at(begin, 0, pairs, whole);                                       \
        ANGLES_OF_SLICE(job, s, pairs, dtype, half, angles[0], ANGLES);                         \
        for (int set = 0; s.t < end; set ^= 1) {                                                \
            token_slice next = next_slice(s, pairs, whole);                                     \
            if (s.first == 0)                                                                   \
                prefetch_ahead(job, s.t, end);                                                  \
            if (next.t < end)                                                                   \
                ANGLES_OF_SLICE(job, next, pairs, dtype, half, angles[set ^ 1], ANGLES);        \
            const block_angles *a = angles[set];                                                \
            int nan = (NAN_CHECK) && angles_have_nan(a, s.blocks);                              \
            for (int i = 0; i < job->num_targets; i++) {                                        \
                if (nan)                                                                        \
                    ROTATE_TOKEN_SLICE(job->targets[i].tensor, elem_size, s, pairs, half, a,    \
                                       ROTATE_NAN);                                             \
                else                                                                            \
                    ROTATE_TOKEN_SLICE(job->targets[i].tensor, elem_size, s, pairs, half, a,    \
                                       ROTATE);                                                 \
            }                                                                                   \
            if (next.t != s.t && whole < half)                                                  \
                TAIL(job, s.t, whole, half - whole);                                            \
            s = next;                                                                           \
        }                                                                                       \
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

#if defined(__x86_64__) && defined(__GNUC__)
#define KVX_ROPE_X86 1

#define ATTR_AVX2 __attribute__((target("avx2")))
/* F16C converts fp16 in the hand-written AVX2 loops; every AVX2 CPU has it, but a hypervisor can
 * hide it (rope.c checks). */
#define ATTR_AVX2_F16C __attribute__((target("avx2,f16c")))
/* 512-bit vectors in the AVX-512 functions. gcc's prefer-vector-width target option keeps its
 * vectoriser at 512 bits even when tuning for cores that prefer 256 (-mtune=skylake-avx512 and
 * later). clang rejects that option, and would then drop the whole attribute, features included;
 * its min_vector_width(512) keeps 512-bit vectors legal in the function (its vectoriser picks them
 * under the default tuning; a 256-bit -mtune also needs -mprefer-vector-width=512). */
#if defined(__clang__)
#define ATTR_WIDE_VECTORS(features) __attribute__((target(features), min_vector_width(512)))
#else
#define ATTR_WIDE_VECTORS(features) __attribute__((target(features ",prefer-vector-width=512")))
#endif
#define ATTR_AVX512 ATTR_WIDE_VECTORS("avx512f,avx512bw,avx512vl,avx512dq")
#define ATTR_AVX512_BF16 ATTR_WIDE_VECTORS("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

/* rope_avx2.c: AVX2 and F16C; AVX2 alone (the generic loop only). */
extern const rope_isa kvx_rope_avx2_isa;
extern const rope_isa kvx_rope_avx2_generic_isa;
/* rope_avx512.c: AVX-512 (F, BW, VL, DQ) and the same with AVX512-BF16. */
extern const rope_isa kvx_rope_avx512_isa;
extern const rope_isa kvx_rope_avx512bf16_isa;
#endif

#if defined(__aarch64__) && defined(__GNUC__) && defined(__ARM_NEON) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KVX_ROPE_NEON 1
/* rope_neon.c: NEON, which every 64-bit ARM CPU has. */
extern const rope_isa kvx_rope_neon_isa;
#endif

#endif /* KVX_CPU_ROPE_CPU_H */
