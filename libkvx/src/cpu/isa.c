/* isa.c - which instruction-set variants of the CPU kernels may run (RoPE keeps its own, finer
 * choice in rope.c, and the CRC-32 in crc32.c; stream_copy.c names the transfer's copy), the
 * public query naming them, and the warning about a KVX_CPU_ISA value that is not followed. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "crc32.h"
#include "stream_copy.h"

int kvx_cpu_baseline_wanted(void)
{
    const char *wanted = getenv("KVX_CPU_ISA");
    return wanted && strcmp(wanted, "baseline") == 0;
}

static int detect_avx2(void)
{
    if (kvx_cpu_baseline_wanted())
        return 0;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
#else
    return 0;
#endif
}

/* Every 64-bit ARM CPU has NEON: only KVX_CPU_ISA=baseline turns it off. */
static int detect_neon(void)
{
#if defined(__aarch64__) && defined(__ARM_NEON)
    return !kvx_cpu_baseline_wanted();
#else
    return 0;
#endif
}

/* detect() asked once; racing first calls agree. */
static int cached_answer(_Atomic int *cached, int (*detect)(void))
{
    int allowed = atomic_load_explicit(cached, memory_order_relaxed);
    if (allowed < 0) {
        allowed = detect();
        atomic_store_explicit(cached, allowed, memory_order_relaxed);
        kvx_cpu_check_isa_setting();
    }
    return allowed;
}

int kvx_cpu_avx2_allowed(void)
{
    static _Atomic int cached = -1; /* not asked yet */
    return cached_answer(&cached, detect_avx2);
}

int kvx_cpu_neon_allowed(void)
{
    static _Atomic int cached = -1; /* not asked yet */
    return cached_answer(&cached, detect_neon);
}

static int names_a_variant(const char *name)
{
    static const char *const variants[] = {"baseline", "avx2", "avx512", "avx512bf16", "neon"};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++)
        if (strcmp(name, variants[i]) == 0)
            return 1;
    return 0;
}

/* "rope=... range_coder=... copy=... crc32=...": what kvx_cpu_kernels() returns and the warnings
 * name. */
static void describe(char *text, size_t size)
{
    const char *coder = kvx_cpu_avx2_allowed()   ? "avx2"
                        : kvx_cpu_neon_allowed() ? "neon"
                                                 : "baseline";
    snprintf(text, size, "rope=%s range_coder=%s copy=%s crc32=%s", kvx_cpu_rope_variant(), coder,
             kvx_stream_copy_variant(), kvx_cpu_crc32_variant());
}

void kvx_cpu_check_isa_setting(void)
{
    /* Set first: asking for the variants below calls this again, which must return at once. */
    static _Atomic int checked;
    if (atomic_load_explicit(&checked, memory_order_relaxed) || atomic_exchange(&checked, 1))
        return;
    const char *wanted = getenv("KVX_CPU_ISA");
    if (!wanted || !*wanted) /* empty counts as unset */
        return;
    const char *rope = kvx_cpu_rope_variant();
    char running[96];
    describe(running, sizeof running);
    if (!names_a_variant(wanted))
        kvx_warn(
            "KVX_CPU_ISA=\"%s\" ignored (expected baseline, avx2, avx512, avx512bf16 or neon); "
            "using the best variants this CPU runs: %s",
            wanted, running);
    else if (strcmp(rope, wanted) != 0) /* RoPE runs the named variant whenever the CPU can */
        kvx_warn("KVX_CPU_ISA=\"%s\" ignored (this CPU cannot run it); using the best "
                 "variants it runs: %s",
                 wanted, running);
}

static char kernels[96];
static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;

static void describe_kernels(void) { describe(kernels, sizeof kernels); }

const char *kvx_cpu_kernels(void)
{
    pthread_once(&kernels_once, describe_kernels);
    return kernels;
}
