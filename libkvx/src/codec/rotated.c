/*
 * rotated.c - the rotated method's quantization and its inverse over many tokens, on the host
 * (rotated.h): each (row, token) is read from the caller's buffer, rotated head by head
 * (rotated_token.h), scaled and quantized into symbols; decoding reverses it into the caller's
 * output. The container runs it chunk by chunk (its symbols then take the CacheGen method's
 * path: counts, CDF tables, range coder), the CPU backend's kvx_codec_quantize_rotated and
 * kvx_codec_dequantize_rotated over the caller's arrays (cpu/codec_rotated.c).
 */
#if defined(__clang__) /* one rounding per operation, as on every backend: see codec_quantize.c */
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../cpu/codec_cpu.h" /* KVX_DEFINE_RANGE_VARIANTS */
#include "container.h"
#include "rotated.h"
#include "rotated_token.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

typedef struct rotated_job {
    const kvx_rotated_tokens *v;
    uint8_t *symbols;         /* [rows, tokens, channels] */
    float *scales;            /* [rows, tokens] */
    float limit;              /* the largest |x| the method takes */
    float safe;               /* check: tokens whose every |x| is within this fit */
    _Atomic int64_t bad_item; /* quantize, check: the first (row, token) refused, or -1 */
    _Atomic int failed;       /* no memory for a work buffer */
} rotated_job;

/* Element (row, token t, channel 0) of the values. */
static ALWAYS_INLINE uint8_t *element(const rotated_job *job, int64_t row, int64_t t)
{
    const kvx_rotated_tokens *v = job->v;
    int64_t plane = row / v->rows_per_plane, layer = row % v->rows_per_plane;
    int64_t offset = plane * v->plane_stride + layer * v->row_stride + t * v->token_stride;
    return (uint8_t *)v->base + offset * kvx_dtype_size(v->dtype);
}

static ALWAYS_INLINE void load_row(int32_t dtype, const uint8_t *src, int64_t n, float *out)
{
    if (dtype == KVX_DTYPE_BFLOAT16)
        for (int64_t c = 0; c < n; c++)
            out[c] = kvx_bf16_to_f32(((const uint16_t *)src)[c]);
    else if (dtype == KVX_DTYPE_FLOAT16)
        for (int64_t c = 0; c < n; c++)
            out[c] = kvx_f16_to_f32(((const uint16_t *)src)[c]);
    else
        for (int64_t c = 0; c < n; c++)
            out[c] = ((const float *)src)[c];
}

static ALWAYS_INLINE void store_row(int32_t dtype, const float *x, int64_t n, uint8_t *dst)
{
    if (dtype == KVX_DTYPE_BFLOAT16) {
        for (int64_t c = 0; c < n; c++)
            ((uint16_t *)dst)[c] = kvx_rot_to_bf16(x[c]);
    } else if (dtype == KVX_DTYPE_FLOAT16) {
        for (int64_t c = 0; c < n; c++)
            ((uint16_t *)dst)[c] = kvx_rot_to_f16(x[c]);
    } else {
        for (int64_t c = 0; c < n; c++)
            ((float *)dst)[c] = x[c];
    }
}

/* A token's n values x / d, each head of d rotated in place. Returns 0 when a value is not
 * finite or above the limit (x is then left half done). */
static ALWAYS_INLINE int rotate_token(float *x, int64_t n, int64_t d, float limit)
{
    float inverse = 1.0f / (float)d; /* d: a power of 2 */
    int within = 1;
    for (int64_t c = 0; c < n; c++) {
        within &= fabsf(x[c]) <= limit; /* false for NaN */
        x[c] *= inverse;
    }
    if (!within)
        return 0;
    for (int64_t h = 0; h < n; h += d)
        kvx_rot_hadamard(x + h, d);
    return 1;
}

/* The scale of a token's coefficients, or -1 when it rounds up past the limit (a reader would
 * refuse it). */
static ALWAYS_INLINE float token_scale(const float *x, int64_t n, float limit)
{
    /* The max of |x| as the max of its bits (finite values >= 0 order as their bits): an
     * integer reduction vectorises, a float one does not without fast-math. */
    uint32_t largest_bits = 0;
    for (int64_t c = 0; c < n; c++) {
        uint32_t bits;
        memcpy(&bits, &x[c], sizeof bits);
        bits &= 0x7fffffffu;
        largest_bits = bits > largest_bits ? bits : largest_bits;
    }
    float largest;
    memcpy(&largest, &largest_bits, sizeof largest);
    float scale = kvx_rot_scale_up(largest);
    return scale <= limit ? scale : -1.0f;
}

/* One (row, token): rotated, its scale, its symbols. Returns 0 when refused (nothing of the item
 * is stored then). */
static ALWAYS_INLINE int quantize_item(rotated_job *job, int64_t row, int64_t t, float *x)
{
    const kvx_rotated_tokens *v = job->v;
    int64_t n = v->channels, item = row * v->tokens + t;
    load_row(v->dtype, element(job, row, t), n, x);
    float scale = rotate_token(x, n, v->head_size, job->limit) ? token_scale(x, n, job->limit)
                                                               : -1.0f;
    if (scale < 0.0f)
        return 0;
    int32_t max_int = v->bins[row] / 2 - 1;
    uint8_t *sym = job->symbols + item * n;
    job->scales[item] = scale;
    if (scale == 0.0f) {
        memset(sym, max_int, (size_t)n);
        return 1;
    }
    float factor = (float)max_int / scale;
    for (int64_t c = 0; c < n; c++)
        sym[c] = kvx_rot_symbol(x[c], factor, max_int);
    return 1;
}

/* Whether quantize_item takes the (row, token), writing nothing. No coefficient exceeds the
 * token's largest |x| (stage k's sums are at most 2^k times the largest |x / d|, the last one's
 * d times it; x / d rounded among subnormals aside, far below the limit), so a token whose every
 * |x| is within the largest bfloat16 value below the limit gets a scale within it: only the
 * tokens past that are rotated here. */
static ALWAYS_INLINE int check_item(rotated_job *job, int64_t row, int64_t t, float *x)
{
    const kvx_rotated_tokens *v = job->v;
    int64_t n = v->channels;
    load_row(v->dtype, element(job, row, t), n, x);
    int safe = 1;
    for (int64_t c = 0; c < n; c++)
        safe &= fabsf(x[c]) <= job->safe; /* false for NaN */
    return safe ||
           (rotate_token(x, n, v->head_size, job->limit) && token_scale(x, n, job->limit) >= 0.0f);
}

/* One (row, token) back: coefficients, inverse rotation, the dtype. Always succeeds. */
static ALWAYS_INLINE int dequantize_item(rotated_job *job, int64_t row, int64_t t, float *x)
{
    const kvx_rotated_tokens *v = job->v;
    int64_t n = v->channels, d = v->head_size, item = row * v->tokens + t;
    int32_t max_int = v->bins[row] / 2 - 1;
    float step = job->scales[item] / (float)max_int;
    const uint8_t *sym = job->symbols + item * n;
    for (int64_t c = 0; c < n; c++)
        x[c] = kvx_rot_value(sym[c], max_int, step);
    for (int64_t h = 0; h < n; h += d)
        kvx_rot_hadamard(x + h, d);
    store_row(v->dtype, x, n, element(job, row, t));
    return 1;
}

/* Items begin .. end - 1 through `item`, with one work buffer of a token's values; the first
 * item refused goes to job->bad_item. */
static ALWAYS_INLINE void for_items(rotated_job *job, int64_t begin, int64_t end,
                                    int (*item)(rotated_job *, int64_t, int64_t, float *))
{
    const kvx_rotated_tokens *v = job->v;
    float *x = malloc((size_t)v->channels * sizeof *x);
    if (!x) {
        atomic_store(&job->failed, 1);
        return;
    }
    for (int64_t i = begin; i < end; i++)
        if (!item(job, i / v->tokens, i % v->tokens, x)) {
            int64_t seen = atomic_load(&job->bad_item);
            while ((seen < 0 || i < seen) &&
                   !atomic_compare_exchange_weak(&job->bad_item, &seen, i))
                ;
        }
    free(x);
}

static ALWAYS_INLINE void quantize_range_body(void *ctx, int64_t begin, int64_t end, int vector)
{
    (void)vector;
    for_items(ctx, begin, end, quantize_item);
}

KVX_DEFINE_RANGE_VARIANTS(quantize_range)

static ALWAYS_INLINE void check_range_body(void *ctx, int64_t begin, int64_t end, int vector)
{
    (void)vector;
    for_items(ctx, begin, end, check_item);
}

KVX_DEFINE_RANGE_VARIANTS(check_range)

static ALWAYS_INLINE void dequantize_range_body(void *ctx, int64_t begin, int64_t end, int vector)
{
    (void)vector;
    for_items(ctx, begin, end, dequantize_item);
}

KVX_DEFINE_RANGE_VARIANTS(dequantize_range)

/* Runs `range` over every (row, token) of job->v; *bad_item (when not NULL) gets the first
 * refused. */
static int32_t run(rotated_job *job, kvx_range_fn range, int64_t *bad_item)
{
    const kvx_rotated_tokens *v = job->v;
    job->limit = kvx_rot_limit(v->head_size);
    /* the largest bfloat16 value <= limit: limit with its low 16 bits cleared */
    job->safe = kvx_bf16_to_f32((uint16_t)(kvx_f32_to_bits(job->limit) >> 16));
    atomic_init(&job->bad_item, -1);
    atomic_init(&job->failed, 0);
    kvx_parallel_for(v->rows * v->tokens, 1 + 16384 / (v->channels + 1), range, job);
    if (bad_item)
        *bad_item = atomic_load(&job->bad_item);
    if (atomic_load(&job->failed))
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "codec: cannot allocate a token's work buffer");
    return KVX_OK;
}

int32_t kvx_rotated_quantize_tokens(const kvx_rotated_tokens *v, uint8_t *symbols, float *scales,
                                    int64_t *bad_item)
{
    rotated_job job = {.v = v, .symbols = symbols, .scales = scales};
    return run(&job, quantize_range_variant(), bad_item);
}

int32_t kvx_rotated_check_tokens(const kvx_rotated_tokens *v, int64_t *bad_item)
{
    rotated_job job = {.v = v};
    return run(&job, check_range_variant(), bad_item);
}

int32_t kvx_rotated_dequantize_tokens(const kvx_rotated_tokens *v, const uint8_t *symbols,
                                      const float *scales)
{
    rotated_job job = {.v = v, .symbols = (uint8_t *)symbols, .scales = (float *)scales};
    return run(&job, dequantize_range_variant(), NULL);
}

/* ---------------------------------------------------------------- the container's chunks */

float kvx_codec_rotated_limit(const layout *lo) { return kvx_rot_limit(lo->head_size); }

/* Tokens t0 .. t0 + tokens - 1 of a container's KV buffer (rows: plane-major, then layer). */
static kvx_rotated_tokens chunk_tokens(const layout *lo, const kvx_dense_desc *kv, int64_t t0,
                                       int64_t tokens)
{
    return (kvx_rotated_tokens){
        .base = (uint8_t *)kv->base + t0 * kv->token_stride * kvx_dtype_size(lo->dtype),
        .dtype = lo->dtype,
        .rows = lo->rows,
        .tokens = tokens,
        .channels = lo->channels,
        .head_size = lo->head_size,
        .rows_per_plane = lo->num_layers,
        .plane_stride = kv->kv_stride,
        .row_stride = kv->layer_stride,
        .token_stride = kv->token_stride,
        .bins = lo->bins,
    };
}

int32_t kvx_codec_rotated_quantize(const layout *lo, const kvx_dense_desc *kv, int64_t t0,
                                   int64_t tokens, uint8_t *symbols, float *scales)
{
    kvx_rotated_tokens v = chunk_tokens(lo, kv, t0, tokens);
    int64_t bad = -1;
    int32_t rc = kvx_rotated_quantize_tokens(&v, symbols, scales, &bad);
    if (rc == KVX_OK && bad >= 0) {
        int64_t row = bad / tokens;
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "kv (plane %lld, layer %lld, token %lld): the rotated method expects "
                        "finite values of magnitude <= %g (float32's largest / (2 * head_size))",
                        (long long)(row / lo->num_layers), (long long)(row % lo->num_layers),
                        (long long)(t0 + bad % tokens), (double)kvx_codec_rotated_limit(lo));
    }
    return rc;
}

int32_t kvx_codec_rotated_dequantize(const layout *lo, const kvx_dense_desc *out, int64_t t0,
                                     int64_t tokens, const uint8_t *symbols, const float *scales)
{
    kvx_rotated_tokens v = chunk_tokens(lo, out, t0, tokens);
    return kvx_rotated_dequantize_tokens(&v, symbols, scales);
}
