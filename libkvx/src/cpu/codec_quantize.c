/*
 * codec_quantize.c - CacheGen per-token quantization on the CPU.
 *
 * Bit-exactness with LMCache needs `x * factor` and `+ MAX` rounded separately in float32, but
 * gcc fuses them into an FMA across statements by default wherever the target has one (aarch64,
 * x86 with -march=haswell or later). meson cannot give one file its own flags, so the pragmas
 * below switch contraction off for this file: gcc's optimize pragma, and the standard pragma for
 * clang (which never contracts across statements anyway). tests/test_codec_golden.py checks the
 * symbols bit for bit.
 *
 * Two passes so that bad input writes nothing: the first finds every (row, token) scale and
 * rejects non-finite values, the second writes symbols and scales.
 */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <stdlib.h>
#include <string.h>

#include "codec_cpu.h"
#include "../core/half.h"

/* 1.5 * 2^23: adding and subtracting it rounds |v| < 2^22 to an integer, half to even, with
 * plain SSE2 arithmetic (rintf does not vectorise without SSE4.1). */
#define ROUND_MAGIC 12582912.0f

/* Each range function below is compiled for the baseline and, on x86-64, for AVX2 (twice the
 * vector width), both with the same float32 operations; the helpers they call are inlined into
 * each. */
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* A scale slot holding this marks a token with a non-finite value (scales are >= 0). */
#define NON_FINITE_SCALE (-1.0f)

typedef struct quant_job {
    const uint8_t *x; /* bytes */
    int32_t dtype;
    int64_t elem_size;
    int64_t num_tokens;
    int64_t num_channels;
    int64_t row_stride;
    int64_t token_stride;
    const int32_t *bins;
    uint8_t *symbols;
    float *scales; /* pass 1: the temporary; pass 2: the caller's */
    const float *found;
} quant_job;

static const void *token_ptr(const quant_job *job, int64_t item)
{
    int64_t r = item / job->num_tokens, t = item % job->num_tokens;
    return job->x + (r * job->row_stride + t * job->token_stride) * job->elem_size;
}

/* max |x| as a float, or NON_FINITE_SCALE: on the magnitude bits, which order like the values
 * and make infinities and NaNs the largest. */
static ALWAYS_INLINE float abs_max_16(const uint16_t *x, int64_t n, uint16_t inf_bits, int is_bf16)
{
    int16_t m = 0;
    for (int64_t c = 0; c < n; c++) {
        int16_t v = (int16_t)(x[c] & 0x7fff);
        m = v > m ? v : m;
    }
    if ((uint16_t)m >= inf_bits)
        return NON_FINITE_SCALE;
    return is_bf16 ? kvx_bf16_to_f32((uint16_t)m) : kvx_f16_to_f32((uint16_t)m);
}

static ALWAYS_INLINE float abs_max_32(const uint32_t *x, int64_t n)
{
    int32_t m = 0;
    for (int64_t c = 0; c < n; c++) {
        int32_t v = (int32_t)(x[c] & 0x7fffffffu);
        m = v > m ? v : m;
    }
    if ((uint32_t)m >= 0x7f800000u)
        return NON_FINITE_SCALE;
    return kvx_bits_to_f32((uint32_t)m);
}

static ALWAYS_INLINE void scale_range_body(void *ctx, int64_t begin, int64_t end, int vector)
{
    (void)vector;
    quant_job *job = ctx;
    for (int64_t i = begin; i < end; i++) {
        const void *p = token_ptr(job, i);
        switch (job->dtype) {
        case KVX_DTYPE_BFLOAT16:
            job->scales[i] = abs_max_16(p, job->num_channels, 0x7f80, 1);
            break;
        case KVX_DTYPE_FLOAT16: job->scales[i] = abs_max_16(p, job->num_channels, 0x7c00, 0); break;
        default: job->scales[i] = abs_max_32(p, job->num_channels); break;
        }
    }
}

/* The two roundings LMCache makes: product, then sum, each to float32. When MAX / scale
 * overflows (scales below about 4e-37) the sum is infinite or NaN, and converting that to an
 * integer is undefined: such values give symbol 0 (what x86's conversion yields, INT_MIN), on
 * every platform and in the GPU backend alike (gpu/codec_core.h). */
static inline uint8_t quantize_one(float x, float factor, float max)
{
    float product = x * factor;
    float shifted = product + max;
    float rounded = (shifted + ROUND_MAGIC) - ROUND_MAGIC;
    return rounded >= -2147483648.0f && rounded < 2147483648.0f ? (uint8_t)(int32_t)rounded : 0;
}

KVX_DEFINE_RANGE_VARIANTS(scale_range)

static ALWAYS_INLINE void quantize_token(const quant_job *job, const void *p, float factor,
                                         float max, uint8_t *out)
{
    int64_t n = job->num_channels;
    if (job->dtype == KVX_DTYPE_BFLOAT16) {
        const uint16_t *x = p;
        for (int64_t c = 0; c < n; c++)
            out[c] = quantize_one(kvx_bf16_to_f32(x[c]), factor, max);
    } else if (job->dtype == KVX_DTYPE_FLOAT16) {
        const uint16_t *x = p;
        for (int64_t c = 0; c < n; c++)
            out[c] = quantize_one(kvx_f16_to_f32(x[c]), factor, max);
    } else {
        const float *x = p;
        for (int64_t c = 0; c < n; c++)
            out[c] = quantize_one(x[c], factor, max);
    }
}

static ALWAYS_INLINE void quantize_range_body(void *ctx, int64_t begin, int64_t end, int vector)
{
    (void)vector;
    quant_job *job = ctx;
    for (int64_t i = begin; i < end; i++) {
        int32_t max_int = job->bins[i / job->num_tokens] / 2 - 1;
        float max = (float)max_int, scale = job->found[i];
        uint8_t *out = job->symbols + i * job->num_channels;
        job->scales[i] = scale;
        if (scale == 0.0f) {
            /* All-zero token: every value is exactly the zero symbol (LMCache would divide by
             * zero here and produce NaN). */
            memset(out, max_int, (size_t)job->num_channels);
            continue;
        }
        quantize_token(job, token_ptr(job, i), max / scale, max, out);
    }
}

KVX_DEFINE_RANGE_VARIANTS(quantize_range)

int32_t kvx_cpu_codec_quantize(const kvx_codec_quantize_args *args, const kvx_stream *stream)
{
    (void)stream;
    int64_t items = args->num_rows * args->num_tokens;
    float *found = malloc((size_t)items * sizeof *found);
    if (!found)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "quantize: cannot allocate %lld scales",
                        (long long)items);
    quant_job job = {args->x,
                     args->dtype,
                     kvx_dtype_size(args->dtype),
                     args->num_tokens,
                     args->num_channels,
                     args->row_stride,
                     args->token_stride,
                     args->bins,
                     args->symbols,
                     found,
                     found};
    int64_t grain = 1 + 16384 / (args->num_channels + 1);
    kvx_parallel_for(items, grain, scale_range_variant(), &job);
    for (int64_t i = 0; i < items; i++) {
        if (found[i] == NON_FINITE_SCALE) {
            free(found);
            return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                            "x: expected finite values, got inf or NaN in row %lld token %lld",
                            (long long)(i / args->num_tokens), (long long)(i % args->num_tokens));
        }
    }
    job.scales = args->scales;
    kvx_parallel_for(items, grain, quantize_range_variant(), &job);
    free(found);
    return KVX_OK;
}

/* ---------------------------------------------------------------- dequantize */

typedef struct dequant_job {
    const uint8_t *symbols;
    const float *scales;
    const int32_t *bins;
    int64_t num_tokens;
    int64_t num_channels;
    int32_t dtype;
    uint8_t *out;
    int64_t elem_size;
    int64_t row_stride;
    int64_t token_stride;
} dequant_job;

static ALWAYS_INLINE void dequant_token(const dequant_job *job, const float *table,
                                        const uint8_t *sym, float scale, void *dst)
{
    int64_t n = job->num_channels;
    if (job->dtype == KVX_DTYPE_BFLOAT16) {
        uint16_t *o = dst;
        for (int64_t c = 0; c < n; c++)
            o[c] = kvx_f32_to_bf16(table[sym[c]] * scale);
    } else if (job->dtype == KVX_DTYPE_FLOAT16) {
        uint16_t *o = dst;
        for (int64_t c = 0; c < n; c++)
            o[c] = kvx_f32_to_f16(table[sym[c]] * scale);
    } else {
        float *o = dst;
        for (int64_t c = 0; c < n; c++)
            o[c] = table[sym[c]] * scale;
    }
}

static ALWAYS_INLINE void dequant_range_body(void *ctx, int64_t begin, int64_t end, int vector)
{
    (void)vector;
    dequant_job *job = ctx;
    float table[256];
    int64_t table_row = -1;
    for (int64_t i = begin; i < end; i++) {
        int64_t r = i / job->num_tokens, t = i % job->num_tokens;
        if (r != table_row) {
            /* (s - MAX) / MAX per symbol, as LMCache computes it element by element. Symbols
             * above 2 * MAX (no quantizer makes them; a forged stream can) decode as 2 * MAX,
             * so every value stays within [-scale, scale]. */
            int32_t max_int = job->bins[r] / 2 - 1;
            float max = (float)max_int;
            for (int s = 0; s < 256; s++)
                table[s] = ((float)(s <= 2 * max_int ? s : 2 * max_int) - max) / max;
            table_row = r;
        }
        void *dst = job->out + (r * job->row_stride + t * job->token_stride) * job->elem_size;
        dequant_token(job, table, job->symbols + i * job->num_channels, job->scales[i], dst);
    }
}

KVX_DEFINE_RANGE_VARIANTS(dequant_range)

int32_t kvx_cpu_codec_dequantize(const kvx_codec_dequantize_args *args, const kvx_stream *stream)
{
    (void)stream;
    dequant_job job = {args->symbols,      args->scales,
                       args->bins,         args->num_tokens,
                       args->num_channels, args->dtype,
                       args->out,          kvx_dtype_size(args->dtype),
                       args->row_stride,   args->token_stride};
    kvx_parallel_for(args->num_rows * args->num_tokens, 1 + 16384 / (args->num_channels + 1),
                     dequant_range_variant(), &job);
    return KVX_OK;
}
