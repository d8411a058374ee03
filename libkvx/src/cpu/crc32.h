/*
 * crc32.h - zlib's CRC-32 (reflected polynomial 0xEDB88320), the public kvx_crc32 (kvx.h): its
 * variants, one of which crc32.c chooses at run time. The codec's container checks its header and
 * chunks with it, and kvx.channel every segment of a payload.
 *
 * Every variant advances the CRC register `reg` over the n bytes at p and returns it; the register
 * is zlib's value with all bits inverted (kvx_crc32 inverts on the way in and out), so that
 * variants can hand a part of the bytes to another one.
 */
#ifndef KVX_CPU_CRC32_H
#define KVX_CPU_CRC32_H

#include <stddef.h>
#include <stdint.h>

typedef uint32_t (*kvx_crc32_fn)(uint32_t reg, const uint8_t *p, size_t n);

/* Slicing-by-8 tables, any CPU (crc32_baseline.c). */
uint32_t kvx_crc32_baseline(uint32_t reg, const uint8_t *p, size_t n);

#if defined(__x86_64__) && defined(__GNUC__)
#define KVX_CRC32_CLMUL 1
/* Carry-less multiplication folding (crc32_clmul.c): 128-bit lanes with PCLMULQDQ, or 256-bit
 * ones with VPCLMULQDQ and AVX2. Each needs its instructions (crc32.c asks the CPU). */
uint32_t kvx_crc32_pclmul(uint32_t reg, const uint8_t *p, size_t n);
uint32_t kvx_crc32_vpclmul(uint32_t reg, const uint8_t *p, size_t n);
#endif

#if defined(__aarch64__) && defined(__GNUC__) && defined(__linux__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KVX_CRC32_ARMV8 1
/* ARMv8's CRC32 instructions, which compute zlib's CRC-32 (crc32_armv8.c); optional before
 * ARMv8.1, so crc32.c asks the kernel (HWCAP_CRC32). */
uint32_t kvx_crc32_armv8(uint32_t reg, const uint8_t *p, size_t n);
#endif

/* Name of the variant this process runs, for kvx_cpu_kernels(): "vpclmul", "pclmul",
 * "armv8-crc" or "baseline" (KVX_CPU_ISA=baseline, or a CPU without any of those). crc32.c. */
const char *kvx_cpu_crc32_variant(void);

#endif /* KVX_CPU_CRC32_H */
