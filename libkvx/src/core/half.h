/*
 * half.h - float16 / bfloat16 <-> float32 conversions, shared by the CPU and GPU kernels (so both
 * round the same way).
 *
 * Written with integer operations and selects, no branches and no library calls, so gcc can
 * vectorise the loops that use them with plain SSE2 (no F16C needed). Both narrowing
 * conversions round to nearest even, like torch's, and keep NaNs NaN. None of them depends on
 * the FPU's flush-to-zero / denormals-are-zero modes for a correct float16 result.
 */
#ifndef KVX_HALF_H
#define KVX_HALF_H

#include <stdint.h>

/* Callable from device code too when a GPU compiler includes this header. */
#if defined(__CUDACC__) || defined(__HIPCC__)
#define KVX_HALF_FN __host__ __device__ static inline
#else
#define KVX_HALF_FN static inline
#endif

KVX_HALF_FN float kvx_bits_to_f32(uint32_t u)
{
    float f;
    __builtin_memcpy(&f, &u, sizeof f); /* memcpy is host-only under HIP */
    return f;
}

KVX_HALF_FN uint32_t kvx_f32_to_bits(float f)
{
    uint32_t u;
    __builtin_memcpy(&u, &f, sizeof u);
    return u;
}

/* cond ? a : b as bit arithmetic: every operand is computed anyway, so gcc if-converts and
 * vectorises the loop even though the float operations feeding it could trap. */
KVX_HALF_FN uint32_t kvx_select_u32(int cond, uint32_t a, uint32_t b)
{
    uint32_t mask = 0u - (uint32_t)(cond != 0);
    return (a & mask) | (b & ~mask);
}

/* bfloat16 is the top half of a float32. */
KVX_HALF_FN float kvx_bf16_to_f32(uint16_t h) { return kvx_bits_to_f32((uint32_t)h << 16); }

KVX_HALF_FN uint16_t kvx_f32_to_bf16(float f)
{
    uint32_t u = kvx_f32_to_bits(f);
    /* Adding 0x7fff plus the lowest kept bit rounds half to even; carries into the exponent
     * are the correct rounding up (to the next binade, or to infinity). */
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    /* The addition could turn a NaN with low payload bits into infinity: keep it a quiet NaN. */
    uint32_t quiet_nan = (u >> 16) | 0x40u;
    return (uint16_t)kvx_select_u32((u & 0x7fffffffu) > 0x7f800000u, quiet_nan, rounded);
}

KVX_HALF_FN float kvx_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu; /* exponent and mantissa */
    /* Normal: move the fields into place and rebias the exponent by 127 - 15. */
    uint32_t normal = (em << 13) + ((uint32_t)(127 - 15) << 23);
    /* Subnormal: mantissa * 2^-24, exact as a (normal) float32. */
    uint32_t subnormal = kvx_f32_to_bits((float)(int32_t)em * 0x1p-24f);
    /* Infinity and NaN: all-ones exponent, payload kept. */
    uint32_t special = (em << 13) | 0x7f800000u;
    uint32_t bits = kvx_select_u32(em < 0x0400u, subnormal,
                                   kvx_select_u32(em >= 0x7c00u, special, normal));
    return kvx_bits_to_f32(bits | sign);
}

KVX_HALF_FN uint16_t kvx_f32_to_f16(float f)
{
    uint32_t u = kvx_f32_to_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    /* |f| >= 2^16 (beyond the largest finite half after rounding): infinity, or a quiet NaN
     * keeping the top bits of the payload (as x86's vcvtps2ph does, so vector code agrees). */
    uint32_t overflow = u > 0x7f800000u ? 0x7e00u | ((u & 0x7fffffu) >> 13) : 0x7c00u;
    /* Normal half range [2^-14, 2^16): rebias, then round to nearest even on the 13 dropped
     * bits; a carry out of the mantissa correctly bumps the exponent (up to infinity). */
    uint32_t normal = (u - ((uint32_t)(127 - 15) << 23) + 0x0fffu + ((u >> 13) & 1u)) >> 13;
    /* Below 2^-14: adding 0.5f aligns the value so the FPU's own round-to-nearest-even leaves
     * the half's subnormal mantissa in the low bits (1.0 * 2^-14 rounds up to the smallest
     * normal, 0x0400, as it should). */
    const float magic = 0.5f;
    uint32_t subnormal = kvx_f32_to_bits(kvx_bits_to_f32(u) + magic) - kvx_f32_to_bits(magic);
    uint32_t bits = kvx_select_u32(u >= 0x47800000u, overflow,
                                   kvx_select_u32(u < 0x38800000u, subnormal, normal));
    return (uint16_t)(bits | sign);
}

#endif /* KVX_HALF_H */
