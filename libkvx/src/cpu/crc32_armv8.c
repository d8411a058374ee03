/*
 * crc32_armv8.c - zlib's CRC-32 with the CRC32 instructions of 64-bit ARM (CRC32X, CRC32B: the
 * reflected polynomial 0xEDB88320 on the register as crc32.h's variants take it, without
 * inversions). They are optional before ARMv8.1, so this file alone is built with
 * -march=armv8-a+crc (src/meson.build) and crc32.c calls it only where the kernel reports them.
 *
 * One instruction per 8 bytes, each waiting for the previous one's register. Not timed on ARM
 * hardware; tests/test_cross_build.py checks it under qemu.
 */
#include "crc32.h"

#if KVX_CRC32_ARMV8
#include <arm_acle.h>
#include <string.h>

uint32_t kvx_crc32_armv8(uint32_t reg, const uint8_t *p, size_t n)
{
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t word; /* little-endian: byte 0 is the low byte, the first one the CRC takes */
        memcpy(&word, p, sizeof word);
        reg = __crc32d(reg, word);
    }
    for (; n > 0; n--, p++)
        reg = __crc32b(reg, *p);
    return reg;
}
#endif
