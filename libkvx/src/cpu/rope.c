/*
 * rope.c - RoPE re-rotation and application on the CPU backend: the entry points, the baseline
 * variant, and the choice of variant.
 *
 * Work is split over tokens on the thread pool. For each token the cos/sin of its angles are
 * read from the cache once (and, for re-rotation, combined into the single rotation by
 * new - old: cos(n - o) = cos n cos o + sin n sin o, sin(n - o) = sin n cos o - cos n sin o), then
 * every head of every layer of every tensor of that token is rotated with them, so each key is
 * read and written exactly once. The generic per-head loops (rope_cpu.h) are specialised by
 * storage type and pairing, written so that gcc vectorises them (no branches; conversions by
 * integer arithmetic in half.h), and compiled for several instruction sets; on AVX2, AVX-512 and
 * NEON, rope_avx2.c, rope_avx512.c and rope_neon.c add hand-written token loops that build a
 * token's rotation once and keep it in registers over the heads. The best variant is chosen at run
 * time. Every variant computes the same float32 operations, so all give the same bits (and the same
 * bits as torch computing a*cos - b*sin in float32).
 *
 * Positions come from src/ops/rope.c as checked int64 copies (every entry in [0, max_position)),
 * which nothing else writes during the call.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rope_cpu.h"

#if KVX_ROPE_X86
#include <cpuid.h>
#endif

DEFINE_ISA_FUNCTIONS(baseline, )
static const rope_isa baseline_isa = ISA_TABLE(baseline);

#if KVX_ROPE_X86
/* F16C, which the AVX2 token loops use for fp16. Asked of CPUID: clang's __builtin_cpu_supports
 * does not know "f16c" (clang 14). Its vcvtph2ps / vcvtps2ph take VEX registers, whose OS
 * support the AVX2 check below includes. */
static int cpu_has_f16c(void)
{
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}
#endif

/*
 * The best variant this CPU runs, chosen once. KVX_CPU_ISA=baseline|avx2|avx512|avx512bf16 (on
 * 64-bit ARM: baseline|neon) selects a lower one (the tests use it to check that every variant
 * gives the same bits).
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
            candidates[count++] = &kvx_rope_avx512bf16_isa;
        candidates[count++] = &kvx_rope_avx512_isa;
    }
    if (__builtin_cpu_supports("avx2"))
        candidates[count++] = cpu_has_f16c() ? &kvx_rope_avx2_isa : &kvx_rope_avx2_generic_isa;
#endif
#if KVX_ROPE_NEON
    candidates[count++] = &kvx_rope_neon_isa;
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
        kvx_cpu_check_isa_setting();
    }
    return isa;
}

const char *kvx_cpu_rope_variant(void) { return current_isa()->name; }

/* ---------------------------------------------------------------- entry points */

static rope_job new_job(const kvx_rope_cache *cache, const void *positions,
                        const void *old_positions)
{
    return (rope_job){.cache = cache,
                      .positions = positions,
                      .old_positions = old_positions,
                      .row_bytes = cache->row_stride * kvx_dtype_size(cache->dtype),
                      .angle_bytes = (int64_t)cache->rot_dim * kvx_dtype_size(cache->dtype)};
}

/* The core hands this backend checked int64 copies of the positions; anything else is a bug. */
static int32_t require_checked_positions(int32_t positions_dtype)
{
    if (positions_dtype != KVX_DTYPE_INT64)
        return kvx_fail(KVX_ERR_INTERNAL,
                        "rope: the CPU backend got positions of dtype %d, "
                        "not the checked int64 copy",
                        (int)positions_dtype);
    return KVX_OK;
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
    int pairing = job->cache->pairing == KVX_ROPE_NEOX ? 0 : 1;
    target->rotate = isa->rotate[pairing][dtype_kind(tensor->dtype)];
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

/* Enough tokens per chunk that a chunk is worth handing to another thread (~64 Ki elements).
 * In floating point: the element count of a token cannot overflow it, whatever the strides. */
static int64_t token_grain(const rope_job *job)
{
    double per_token = 0.0;
    for (int i = 0; i < job->num_targets; i++) {
        const kvx_rope_tensor *x = job->targets[i].tensor;
        per_token += (double)x->num_layers * x->num_heads * job->cache->rot_dim;
    }
    double grain = 65536.0 / per_token;
    return grain < 1.0 ? 1 : (int64_t)grain;
}

int32_t kvx_cpu_rope_rerotate(const kvx_rope_rerotate_args *args, const kvx_stream *stream)
{
    (void)stream;
    int32_t rc = require_checked_positions(args->positions_dtype);
    if (rc)
        return rc;
    const rope_isa *isa = current_isa();
    rope_job job = new_job(args->cache, args->new_positions, args->old_positions);
    add_target(&job, isa, args->keys);
    kvx_parallel_for(args->keys->num_tokens, token_grain(&job), job_range(&job, isa), &job);
    return KVX_OK;
}

int32_t kvx_cpu_rope_apply(const kvx_rope_apply_args *args, const kvx_stream *stream)
{
    (void)stream;
    int32_t rc = require_checked_positions(args->positions_dtype);
    if (rc)
        return rc;
    const rope_isa *isa = current_isa();
    rope_job job = new_job(args->cache, args->positions, NULL);
    add_target(&job, isa, args->query);
    if (args->key)
        add_target(&job, isa, args->key);
    kvx_parallel_for(args->query->num_tokens, token_grain(&job), job_range(&job, isa), &job);
    return KVX_OK;
}
