/*
 * rotated_token.h - the arithmetic of the container's rotated method for one (row, token): a
 * Walsh-Hadamard transform of each head, the token's scale and symbols, and the way back
 * (docs/codec-container.md, method 1).
 *
 * Why a rotation: keys have a few outlier channels, and one per-token scale (max |x|) sized for
 * them leaves the other channels a handful of levels. The transform spreads every channel over
 * the whole head, so the coefficients share one range evenly; it is orthogonal up to a factor,
 * so the error it brings back is the coefficients' error, spread the same way.
 *
 * Only float32 additions in a fixed order and multiplications by exact powers of two, so any
 * backend that includes this header (the GPU compilers too) computes the same bits. The forward
 * transform scales by 1/n first, so no sum exceeds the largest |x|; the inverse needs no scaling
 * (H * H = n * I).
 */
#ifndef KVX_CODEC_ROTATED_TOKEN_H
#define KVX_CODEC_ROTATED_TOKEN_H

#include <math.h>
#include <stdint.h>

#include "../core/half.h"

/* The butterflies of spans 1, 2 and 4 on the 8 values at x: the same additions, in the same
 * stage order, as the generic loop (each output depends only on its own inputs, so the order
 * of independent butterflies is free), written out so that a loop over groups vectorises. */
KVX_HALF_FN void kvx_rot_hadamard8(float *x)
{
    float a0 = x[0] + x[1], a1 = x[0] - x[1], a2 = x[2] + x[3], a3 = x[2] - x[3];
    float a4 = x[4] + x[5], a5 = x[4] - x[5], a6 = x[6] + x[7], a7 = x[6] - x[7];
    float b0 = a0 + a2, b2 = a0 - a2, b1 = a1 + a3, b3 = a1 - a3;
    float b4 = a4 + a6, b6 = a4 - a6, b5 = a5 + a7, b7 = a5 - a7;
    x[0] = b0 + b4, x[4] = b0 - b4, x[1] = b1 + b5, x[5] = b1 - b5;
    x[2] = b2 + b6, x[6] = b2 - b6, x[3] = b3 + b7, x[7] = b3 - b7;
}

/* The butterflies of spans len and 2 * len on x[j], x[j + len], x[j + 2 * len], x[j + 3 * len]:
 * two stages on four values at once, the same additions as one stage after the other. */
KVX_HALF_FN void kvx_rot_butterfly4(float *x, int64_t j, int64_t len)
{
    float a = x[j], b = x[j + len], c = x[j + 2 * len], d = x[j + 3 * len];
    float ab = a + b, a_b = a - b, cd = c + d, c_d = c - d;
    x[j] = ab + cd;
    x[j + 2 * len] = ab - cd;
    x[j + len] = a_b + c_d;
    x[j + 3 * len] = a_b - c_d;
}

/* The butterfly of span len on x[j], x[j + len]. */
KVX_HALF_FN void kvx_rot_butterfly2(float *x, int64_t j, int64_t len)
{
    float a = x[j], b = x[j + len];
    x[j] = a + b;
    x[j + len] = a - b;
}

/* The butterflies of spans `from`, 2 * from, .. n / 2 on x[0 .. n - 1] (from a power of two):
 * two spans per pass where they fit (half the passes over memory), then one. The GPU kernels
 * (src/gpu/codec_rotated.cu) make the same passes, a butterfly per thread. */
KVX_HALF_FN void kvx_rot_hadamard_spans(float *x, int64_t n, int64_t from)
{
    int64_t len = from;
    for (; 4 * len <= n; len <<= 2)
        for (int64_t i = 0; i < n; i += len << 2)
            for (int64_t j = i; j < i + len; j++)
                kvx_rot_butterfly4(x, j, len);
    for (; len < n; len <<= 1)
        for (int64_t i = 0; i < n; i += len << 1)
            for (int64_t j = i; j < i + len; j++)
                kvx_rot_butterfly2(x, j, len);
}

/* x[0 .. n - 1] <- H x (unnormalised Sylvester Hadamard; n a power of two), in place: the
 * butterflies (a, b) <- (a + b, a - b) of span 1, then 2, 4, .. n / 2. */
KVX_HALF_FN void kvx_rot_hadamard(float *x, int64_t n)
{
    if (n < 8) {
        kvx_rot_hadamard_spans(x, n, 1);
        return;
    }
    for (int64_t g = 0; g < n; g += 8)
        kvx_rot_hadamard8(x + g);
    kvx_rot_hadamard_spans(x, n, 8);
}

/* The largest |x| the method encodes, and the largest scale a reader accepts: half of float32's
 * largest over head_size (a power of two), so that no sum of the inverse transform of a token
 * (coefficients at most its scale) overflows, with room for rounding. */
KVX_HALF_FN float kvx_rot_limit(int64_t head_size)
{
    return 3.4028234663852886e38f / (float)(2 * head_size);
}

/* How every backend words a refused token (then its row and token): the CPU's up-front check
 * and the GPU's deferred report say the same. */
#define KVX_ROT_RANGE_MESSAGE                                                                  \
    "x: the rotated method expects finite values of magnitude <= %g (float32's largest / (2 * " \
    "head_size)), got one out of range in row %lld token %lld"

/* The smallest bfloat16 value >= s (s finite, >= 0, below bfloat16's largest), as float32: the
 * stored scale, rounded up so that no coefficient exceeds it. */
KVX_HALF_FN float kvx_rot_scale_up(float s)
{
    uint16_t b = kvx_f32_to_bf16(s);
    return kvx_bf16_to_f32((uint16_t)(b + (kvx_bf16_to_f32(b) < s)));
}

/* Symbol of coefficient c under scale s (> 0) with max_int = bins / 2 - 1: c * (max / s) rounded
 * half to even, kept within +-max, shifted to 0 .. 2 * max. */
KVX_HALF_FN uint8_t kvx_rot_symbol(float c, float factor, int32_t max_int)
{
    float q = rintf(c * factor);
    float max = (float)max_int;
    q = q > max ? max : q;
    q = q < -max ? -max : q;
    return (uint8_t)((int32_t)q + max_int);
}

/* Coefficient of symbol sym (above 2 * max only when forged: read as 2 * max), given the
 * token's step = float32(scale / max): one multiplication per value, the division once a token. */
KVX_HALF_FN float kvx_rot_value(uint8_t sym, int32_t max_int, float step)
{
    int32_t clamped = sym <= 2 * max_int ? sym : 2 * max_int;
    return (float)(clamped - max_int) * step;
}

/* v within [-largest, largest] (a NaN stays NaN), as compares the compiler vectorises. */
KVX_HALF_FN float kvx_rot_saturate(float v, float largest)
{
    v = v > largest ? largest : v;
    return v < -largest ? -largest : v;
}

/* A decoded value rounded to bfloat16 or float16, saturating at the type's largest finite value:
 * a token's coefficients are at most its scale, but their transform can exceed what the type
 * holds. */
KVX_HALF_FN uint16_t kvx_rot_to_bf16(float v)
{
    return kvx_f32_to_bf16(kvx_rot_saturate(v, 3.3895313892515355e38f));
}

KVX_HALF_FN uint16_t kvx_rot_to_f16(float v)
{
    return kvx_f32_to_f16(kvx_rot_saturate(v, 65504.0f));
}

#endif /* KVX_CODEC_ROTATED_TOKEN_H */
