/*
 * crc32_check.c - checks kvx_crc32 against a CRC-32 computed one bit at a time from its
 * definition (reflected polynomial 0xEDB88320, register inverted before and after): every
 * length 0 .. MAX_LENGTH from every start offset 0 .. 63 with varied starting values, 1 MiB + 13
 * bytes whole and chained in uneven pieces, the standard check value, and NULL with size 0.
 * Prints "ok" when all agree, else the first difference (exit status 1); the variant that ran
 * (kvx_cpu_kernels) goes to stderr. tests/test_checksum.py runs it natively and under
 * qemu-x86_64 as CPUs without VPCLMULQDQ or PCLMULQDQ, tests/test_cross_build.py under
 * qemu-aarch64, with and without KVX_CPU_ISA=baseline.
 */
#include <kvx.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_LENGTH 600
#define OFFSETS 64
#define LARGE (((size_t)1 << 20) + 13)

static uint32_t reference_step(uint32_t reg, uint8_t byte)
{
    reg ^= byte;
    for (int k = 0; k < 8; k++)
        reg = (reg >> 1) ^ (0xedb88320u & (0u - (reg & 1u)));
    return reg;
}

static uint32_t reference(uint32_t crc, const uint8_t *p, size_t n)
{
    uint32_t reg = ~crc;
    for (size_t i = 0; i < n; i++)
        reg = reference_step(reg, p[i]);
    return ~reg;
}

static int differs(const char *what, size_t offset, size_t length, uint32_t got, uint32_t want)
{
    if (got == want)
        return 0;
    printf("%s: offset %zu, length %zu: kvx_crc32 %08x, expected %08x\n", what, offset, length,
           (unsigned)got, (unsigned)want);
    return 1;
}

/* Every length from every offset; the reference grows one byte at a time. */
static int all_lengths(const uint8_t *data)
{
    static const uint32_t seeds[] = {0, 0xffffffffu, 0x12345678u, 0x80000001u};
    for (size_t offset = 0; offset < OFFSETS; offset++) {
        uint32_t seed = seeds[offset % 4], reg = ~seed;
        for (size_t n = 0; n <= MAX_LENGTH; n++) {
            if (differs("lengths", offset, n, kvx_crc32(seed, data + offset, n), ~reg))
                return 1;
            reg = reference_step(reg, data[offset + n]);
        }
    }
    return 0;
}

/* The large buffer whole, then as pieces of uneven sizes, each continuing from the last. */
static int large_and_chained(const uint8_t *data)
{
    const uint8_t *p = data + 5;
    uint32_t want = reference(0xdeadbeefu, p, LARGE);
    if (differs("large", 5, LARGE, kvx_crc32(0xdeadbeefu, p, LARGE), want))
        return 1;
    uint32_t crc = 0xdeadbeefu;
    for (size_t at = 0, piece = 1; at < LARGE; at += piece, piece = piece * 7 % 100003 + 1)
        crc = kvx_crc32(crc, p + at, at + piece <= LARGE ? piece : LARGE - at);
    return differs("chained", 5, LARGE, crc, want);
}

int main(void)
{
    fprintf(stderr, "kernels: %s\n", kvx_cpu_kernels());
    uint8_t *data = malloc(LARGE + OFFSETS);
    if (!data)
        return 2;
    uint64_t state = 88172645463325252ull;
    for (size_t i = 0; i < LARGE + OFFSETS; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        data[i] = (uint8_t)(state >> 56);
    }
    int failed = differs("check value", 0, 9, kvx_crc32(0, "123456789", 9), 0xcbf43926u) ||
                 differs("NULL", 0, 0, kvx_crc32(0x1234u, NULL, 0), 0x1234u);
    failed = failed || all_lengths(data) || large_and_chained(data);
    free(data);
    if (!failed)
        printf("ok\n");
    return failed;
}
