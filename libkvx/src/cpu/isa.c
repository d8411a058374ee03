/* isa.c - which instruction-set variants of the CPU kernels may run (RoPE keeps its own, finer
 * choice in rope.c), and the public query naming them. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"

static int detect_avx2(void)
{
    const char *wanted = getenv("KVX_CPU_ISA");
    if (wanted && strcmp(wanted, "baseline") == 0)
        return 0;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
#else
    return 0;
#endif
}

int kvx_cpu_avx2_allowed(void)
{
    static _Atomic int cached = -1; /* not asked yet; racing first calls agree */
    int allowed = atomic_load_explicit(&cached, memory_order_relaxed);
    if (allowed < 0) {
        allowed = detect_avx2();
        atomic_store_explicit(&cached, allowed, memory_order_relaxed);
    }
    return allowed;
}

static char kernels[64];
static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;

static void describe_kernels(void)
{
    snprintf(kernels, sizeof kernels, "rope=%s range_coder=%s", kvx_cpu_rope_variant(),
             kvx_cpu_avx2_allowed() ? "avx2" : "baseline");
}

const char *kvx_cpu_kernels(void)
{
    pthread_once(&kernels_once, describe_kernels);
    return kernels;
}
