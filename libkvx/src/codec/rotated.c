/*
 * rotated.c - the rotated method's quantization and its inverse over a chunk, on the host: each
 * (row, token) is read from the caller's buffer, rotated head by head (rotated_token.h),
 * scaled and quantized into the chunk's symbols; decoding reverses it into the caller's output.
 * The symbols then take the CacheGen method's path: counts, CDF tables, range coder.
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
#include "rotated_token.h"

#define ALWAYS_INLINE inline __attribute__((always_inline))

typedef struct rotated_job {
    const layout *lo;
    const kvx_dense_desc *kv; /* the caller's input (encode) or output (decode) */
    int64_t t0, tokens;       /* the chunk */
    uint8_t *symbols;         /* [rows, tokens, channels] */
    float *scales;            /* [rows, tokens] */
    float limit;              /* encode: the largest |x| the method takes */
    _Atomic int64_t bad_item; /* encode: the first (row, token) over the limit, or -1 */
    _Atomic int failed;       /* no memory for a work buffer */
} rotated_job;

/* Element (row, token t of the chunk, channel 0) of the caller's buffer. */
static ALWAYS_INLINE uint8_t *element(const rotated_job *job, int64_t row, int64_t t)
{
    const layout *lo = job->lo;
    const kvx_dense_desc *d = job->kv;
    int64_t plane = row / lo->num_layers, layer = row % lo->num_layers;
    int64_t offset = plane * d->kv_stride + layer * d->layer_stride +
                     (job->t0 + t) * d->token_stride;
    return (uint8_t *)d->base + offset * kvx_dtype_size(lo->dtype);
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

/* v within [-largest, largest] (v is never NaN here), as compares the compiler vectorises. */
static ALWAYS_INLINE float saturate(float v, float largest)
{
    v = v > largest ? largest : v;
    return v < -largest ? -largest : v;
}

/* Rounds to the dtype, saturating at its largest finite value: a decoded token's coefficients
 * are at most its scale, but their transform can exceed what the dtype holds. */
static ALWAYS_INLINE void store_row(int32_t dtype, const float *x, int64_t n, uint8_t *dst)
{
    if (dtype == KVX_DTYPE_BFLOAT16) {
        for (int64_t c = 0; c < n; c++)
            ((uint16_t *)dst)[c] = kvx_f32_to_bf16(saturate(x[c], 3.3895313892515355e38f));
    } else if (dtype == KVX_DTYPE_FLOAT16) {
        for (int64_t c = 0; c < n; c++)
            ((uint16_t *)dst)[c] = kvx_f32_to_f16(saturate(x[c], 65504.0f));
    } else {
        for (int64_t c = 0; c < n; c++)
            ((float *)dst)[c] = x[c];
    }
}

/* One (row, token): x / n, rotated head by head; the scale; the symbols. Returns 0 when a value
 * is not finite or above the limit (nothing of the item is stored then). */
static ALWAYS_INLINE int quantize_item(rotated_job *job, int64_t row, int64_t t, float *x)
{
    const layout *lo = job->lo;
    int64_t n = lo->channels, d = lo->head_size;
    load_row(lo->dtype, element(job, row, t), n, x);
    float largest = 0.0f, inverse = 1.0f / (float)d, limit = job->limit; /* d: a power of 2 */
    int within = 1;
    for (int64_t c = 0; c < n; c++) {
        within &= fabsf(x[c]) <= limit; /* false for NaN */
        x[c] *= inverse;
    }
    if (!within)
        return 0;
    for (int64_t h = 0; h < n; h += d)
        kvx_rot_hadamard(x + h, d);
    for (int64_t c = 0; c < n; c++) {
        float a = fabsf(x[c]);
        largest = a > largest ? a : largest;
    }
    int32_t max_int = lo->bins[row] / 2 - 1;
    uint8_t *sym = job->symbols + (row * job->tokens + t) * n;
    float scale = kvx_rot_scale_up(largest);
    if (!(scale <= limit)) /* rounded up past it: a reader would refuse the scale */
        return 0;
    job->scales[row * job->tokens + t] = scale;
    if (scale == 0.0f) {
        memset(sym, max_int, (size_t)n);
        return 1;
    }
    float factor = (float)max_int / scale;
    for (int64_t c = 0; c < n; c++)
        sym[c] = kvx_rot_symbol(x[c], factor, max_int);
    return 1;
}

/* Items begin .. end - 1 through `item`, with one work buffer of a token's values. */
static ALWAYS_INLINE void for_items(rotated_job *job, int64_t begin, int64_t end,
                                    int (*item)(rotated_job *, int64_t, int64_t, float *))
{
    float *x = malloc((size_t)job->lo->channels * sizeof *x);
    if (!x) {
        atomic_store(&job->failed, 1);
        return;
    }
    for (int64_t i = begin; i < end; i++)
        if (!item(job, i / job->tokens, i % job->tokens, x)) {
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

/* One (row, token) back: coefficients, inverse rotation, the dtype. Always succeeds. */
static ALWAYS_INLINE int dequantize_item(rotated_job *job, int64_t row, int64_t t, float *x)
{
    const layout *lo = job->lo;
    int64_t n = lo->channels, d = lo->head_size;
    int32_t max_int = lo->bins[row] / 2 - 1;
    float step = job->scales[row * job->tokens + t] / (float)max_int;
    const uint8_t *sym = job->symbols + (row * job->tokens + t) * n;
    for (int64_t c = 0; c < n; c++)
        x[c] = kvx_rot_value(sym[c], max_int, step);
    for (int64_t h = 0; h < n; h += d)
        kvx_rot_hadamard(x + h, d);
    store_row(lo->dtype, x, n, element(job, row, t));
    return 1;
}

static ALWAYS_INLINE void dequantize_range_body(void *ctx, int64_t begin, int64_t end, int vector)
{
    (void)vector;
    for_items(ctx, begin, end, dequantize_item);
}

KVX_DEFINE_RANGE_VARIANTS(dequantize_range)

float kvx_codec_rotated_limit(const layout *lo)
{
    /* No butterfly sum of a decoded token may pass float32's range: coefficients are at most
     * the scale, their transform at most head_size times that. Half of it leaves room for
     * rounding. */
    return 3.4028234663852886e38f / (float)(2 * lo->head_size);
}

int32_t kvx_codec_rotated_quantize(const layout *lo, const kvx_dense_desc *kv, int64_t t0,
                                   int64_t tokens, uint8_t *symbols, float *scales)
{
    rotated_job job = {lo, kv, t0, tokens, symbols, scales, kvx_codec_rotated_limit(lo), -1, 0};
    kvx_parallel_for(lo->rows * tokens, 1 + 16384 / (lo->channels + 1), quantize_range_variant(),
                     &job);
    if (atomic_load(&job.failed))
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "codec: cannot allocate a token's work buffer");
    int64_t bad = atomic_load(&job.bad_item);
    if (bad >= 0) {
        int64_t row = bad / tokens;
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "kv (plane %lld, layer %lld, token %lld): the rotated method expects "
                        "finite values of magnitude <= %g (float32's largest / (2 * head_size))",
                        (long long)(row / lo->num_layers), (long long)(row % lo->num_layers),
                        (long long)(t0 + bad % tokens), (double)job.limit);
    }
    return KVX_OK;
}

int32_t kvx_codec_rotated_dequantize(const layout *lo, const kvx_dense_desc *out, int64_t t0,
                                     int64_t tokens, const uint8_t *symbols, const float *scales)
{
    rotated_job job = {lo, out, t0, tokens, (uint8_t *)symbols, (float *)scales, 0, -1, 0};
    kvx_parallel_for(lo->rows * tokens, 1 + 16384 / (lo->channels + 1), dequantize_range_variant(),
                     &job);
    if (atomic_load(&job.failed))
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "codec: cannot allocate a token's work buffer");
    return KVX_OK;
}
