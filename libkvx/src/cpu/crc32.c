/*
 * crc32.c - kvx_crc32 (kvx.h): zlib's CRC-32 by the fastest variant this CPU runs (crc32.h),
 * chosen once per process: on x86-64 carry-less multiplication over 256-bit lanes (VPCLMULQDQ
 * and AVX2) or 128-bit ones (PCLMULQDQ), on 64-bit ARM the CRC32 instructions, else (or with
 * KVX_CPU_ISA=baseline) the slicing-by-8 tables. Every variant gives zlib's value.
 */
#include <stdatomic.h>

#include "cpu_backend.h"
#include "crc32.h"

#if KVX_CRC32_ARMV8
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7) /* Linux's bit, for C libraries whose headers lack it */
#endif
#endif

typedef struct crc32_variant {
    const char *name; /* as kvx_cpu_kernels() shows it */
    kvx_crc32_fn update;
} crc32_variant;

static const crc32_variant baseline = {"baseline", kvx_crc32_baseline};

#if KVX_CRC32_CLMUL
static const crc32_variant pclmul = {"pclmul", kvx_crc32_pclmul};
static const crc32_variant vpclmul = {"vpclmul", kvx_crc32_vpclmul};

/* The 256-bit lanes' VEX instructions need AVX2 too (which includes the OS's support). */
static const crc32_variant *choose_x86(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("pclmul"))
        return &baseline;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq"))
        return &vpclmul;
    return &pclmul;
}
#endif

#if KVX_CRC32_ARMV8
static const crc32_variant armv8 = {"armv8-crc", kvx_crc32_armv8};
#endif

static const crc32_variant *choose(void)
{
    if (kvx_cpu_baseline_wanted())
        return &baseline;
#if KVX_CRC32_CLMUL
    return choose_x86();
#elif KVX_CRC32_ARMV8
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) ? &armv8 : &baseline;
#else
    return &baseline;
#endif
}

static const crc32_variant *_Atomic chosen;

static const crc32_variant *current(void)
{
    const crc32_variant *variant = atomic_load_explicit(&chosen, memory_order_acquire);
    if (!variant) {
        /* Racing first calls choose the same variant; storing it twice is harmless. */
        variant = choose();
        atomic_store_explicit(&chosen, variant, memory_order_release);
        kvx_cpu_check_isa_setting();
    }
    return variant;
}

const char *kvx_cpu_crc32_variant(void) { return current()->name; }

uint32_t kvx_crc32(uint32_t crc, const void *data, size_t size)
{
    if (size == 0) /* data may be NULL then */
        return crc;
    return ~current()->update(~crc, data, size);
}
