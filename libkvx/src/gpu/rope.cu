/*
 * rope.cu - RoPE re-rotation and application on CUDA and HIP GPUs.
 *
 * One thread block per token: its threads read the token's cos/sin from the cache once into
 * shared memory (for re-rotation, combined into the rotation by new - old), then rotate every
 * pair of every head of every layer of the token's tensors. The arithmetic is the CPU backend's,
 * operation for operation, and the build turns off FMA contraction, so results are bit-identical
 * to the CPU's. Positions outside the cache are skipped and recorded for kvx_synchronize().
 */
#include "../core/half.h"
#include "gpu_device.h"

#define ROPE_THREADS 128
#define MAX_LAUNCH_TOKENS (1LL << 30) /* grid.x limit, with margin */

struct rope_target_args {
    char *base;
    int dtype;
    int num_layers;
    int num_heads;
    long long layer_stride, token_stride, head_stride; /* bytes */
};

struct rope_args {
    rope_target_args targets[2];
    int num_targets;
    const void *cos_sin;
    int cache_dtype;
    int half; /* rot_dim / 2 */
    int neox;
    long long max_position, row_stride; /* row_stride in elements */
    const void *positions;     /* the angle to rotate to */
    const void *old_positions; /* re-rotation: the angle to rotate from; else NULL */
    int positions_are_int64;
    long long first_token, num_tokens;
    kvx_gpu_deferred_error *error;
};

/* One volatile load: positions may be pinned host memory that a host thread rewrites while the
 * kernel runs, and the value checked must be the value used. */
__device__ inline long long position_at(const void *positions, int is_int64, long long t)
{
    return is_int64 ? ((const volatile long long *)positions)[t]
                    : ((const volatile int *)positions)[t];
}

__device__ inline float load_value(const void *base, int dtype, long long i)
{
    if (dtype == KVX_DTYPE_FLOAT32)
        return ((const float *)base)[i];
    unsigned short bits = ((const unsigned short *)base)[i];
    return dtype == KVX_DTYPE_FLOAT16 ? kvx_f16_to_f32(bits) : kvx_bf16_to_f32(bits);
}

__device__ inline void store_value(void *base, int dtype, long long i, float v)
{
    if (dtype == KVX_DTYPE_FLOAT32)
        ((float *)base)[i] = v;
    else
        ((unsigned short *)base)[i] = dtype == KVX_DTYPE_FLOAT16 ? kvx_f32_to_f16(v)
                                                                 : kvx_f32_to_bf16(v);
}

/* Thread 0's part: reads token t's positions once and checks them; rows[0] = the new position,
 * rows[1] = the old one (0 without re-rotation), or rows[0] = -1 (recorded) when one is outside
 * the cache. Shared memory then gives every thread of the block the same checked values, where
 * threads reading for themselves could see different ones and disagree about skipping. */
__device__ void read_positions(const rope_args &a, long long t, long long *rows)
{
    long long pos = position_at(a.positions, a.positions_are_int64, t);
    long long old = a.old_positions ? position_at(a.old_positions, a.positions_are_int64, t) : 0;
    bool bad_new = pos < 0 || pos >= a.max_position, bad_old = old < 0 || old >= a.max_position;
    if (bad_new || bad_old) {
        kvx_gpu_record_error(a.error, bad_old ? KVX_GPU_BAD_OLD_POSITION : KVX_GPU_BAD_POSITION, t,
                             bad_old ? old : pos, a.max_position);
        pos = -1;
    }
    rows[0] = pos;
    rows[1] = old;
}

/* Reads the cos/sin of checked position pos (or, with old_positions, the rotation pos - old)
 * into shared memory. */
__device__ void load_angles(const rope_args &a, long long pos, long long old, float *c, float *s)
{
    const char *row = (const char *)a.cos_sin;
    long long elem = a.cache_dtype == KVX_DTYPE_FLOAT32 ? 4 : 2;
    const void *now = row + pos * a.row_stride * elem, *then = row + old * a.row_stride * elem;
    for (int i = threadIdx.x; i < a.half; i += blockDim.x) {
        float cn = load_value(now, a.cache_dtype, i),
              sn = load_value(now, a.cache_dtype, a.half + i);
        if (!a.old_positions) {
            c[i] = cn;
            s[i] = sn;
            continue;
        }
        float co = load_value(then, a.cache_dtype, i),
              so = load_value(then, a.cache_dtype, a.half + i);
        c[i] = cn * co + sn * so;
        s[i] = sn * co - cn * so;
    }
}

__device__ void rotate_target(const rope_target_args &x, const rope_args &a, long long t,
                              const float *c, const float *s)
{
    const long long per_layer = (long long)x.num_heads * a.half;
    const long long total = per_layer * x.num_layers;
    for (long long k = threadIdx.x; k < total; k += blockDim.x) {
        const long long layer = k / per_layer, rest = k - layer * per_layer;
        const long long head = rest / a.half, i = rest - head * a.half;
        char *vec = x.base + t * x.token_stride + layer * x.layer_stride + head * x.head_stride;
        const long long ia = a.neox ? i : 2 * i, ib = a.neox ? i + a.half : 2 * i + 1;
        const float va = load_value(vec, x.dtype, ia), vb = load_value(vec, x.dtype, ib);
        store_value(vec, x.dtype, ia, va * c[i] - vb * s[i]);
        store_value(vec, x.dtype, ib, vb * c[i] + va * s[i]);
    }
}

__global__ void __launch_bounds__(ROPE_THREADS) rope_tokens(const rope_args a)
{
    KVX_DYNAMIC_SHARED(float, angles); /* c[half], then s[half] */
    __shared__ long long rows[2];     /* the token's checked positions (read_positions) */
    const long long t = a.first_token + blockIdx.x;
    if (threadIdx.x == 0)
        read_positions(a, t, rows);
    __syncthreads();
    if (rows[0] < 0) /* the same for every thread of the block */
        return;
    load_angles(a, rows[0], rows[1], angles, angles + a.half);
    __syncthreads();
    for (int i = 0; i < a.num_targets; i++)
        rotate_target(a.targets[i], a, t, angles, angles + a.half);
}

static rope_target_args target_args(const kvx_rope_tensor *x)
{
    long long elem = kvx_dtype_size(x->dtype);
    rope_target_args t = {};
    t.base = (char *)x->base;
    t.dtype = x->dtype;
    t.num_layers = x->num_layers;
    t.num_heads = x->num_heads;
    t.layer_stride = x->layer_stride * elem;
    t.token_stride = x->token_stride * elem;
    t.head_stride = x->head_stride * elem;
    return t;
}

static int32_t run(rope_args &a, const kvx_rope_cache *cache, const kvx_stream *stream)
{
    int device = kvx_gpu_device_index(stream);
    kvx_gpu_device_scope scope(device);
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    size_t shared = 2 * (size_t)a.half * sizeof(float);
    if (shared > 48 * 1024)
        return kvx_fail(KVX_ERR_UNSUPPORTED,
                        "cache->rot_dim: the %s backend supports up to %d, got %d", KVX_GPU_NAME,
                        48 * 1024 / (int)sizeof(float), (int)cache->rot_dim);
    int32_t rc = kvx_gpu_error_record(device, &a.error);
    if (rc != KVX_OK)
        return rc;
    long long total = a.num_tokens;
    for (long long first = 0; first < total; first += MAX_LAUNCH_TOKENS) {
        long long count = total - first < MAX_LAUNCH_TOKENS ? total - first : MAX_LAUNCH_TOKENS;
        a.first_token = first;
        KVX_LAUNCH(rope_tokens, (unsigned)count, ROPE_THREADS, shared, kvx_gpu_stream(stream))(a);
        gpuError_t error = gpuGetLastError();
        if (error != gpuSuccess)
            return kvx_gpu_fail(error, "launching the RoPE kernel");
    }
    return KVX_OK;
}

static rope_args common_args(const kvx_rope_cache *cache, const void *positions,
                             int32_t positions_dtype, long long num_tokens)
{
    rope_args a = {};
    a.cos_sin = cache->cos_sin;
    a.cache_dtype = cache->dtype;
    a.half = cache->rot_dim / 2;
    a.neox = cache->pairing == KVX_ROPE_NEOX;
    a.max_position = cache->max_position;
    a.row_stride = cache->row_stride;
    a.positions = positions;
    a.positions_are_int64 = positions_dtype == KVX_DTYPE_INT64;
    a.num_tokens = num_tokens;
    return a;
}

extern "C" int32_t kvx_gpu_rope_rerotate(const kvx_rope_rerotate_args *args,
                                         const kvx_stream *stream)
{
    rope_args a = common_args(args->cache, args->new_positions, args->positions_dtype,
                              args->keys->num_tokens);
    a.old_positions = args->old_positions;
    a.targets[0] = target_args(args->keys);
    a.num_targets = 1;
    return run(a, args->cache, stream);
}

extern "C" int32_t kvx_gpu_rope_apply(const kvx_rope_apply_args *args, const kvx_stream *stream)
{
    rope_args a = common_args(args->cache, args->positions, args->positions_dtype,
                              args->query->num_tokens);
    a.targets[0] = target_args(args->query);
    a.num_targets = 1;
    if (args->key)
        a.targets[a.num_targets++] = target_args(args->key);
    return run(a, args->cache, stream);
}
