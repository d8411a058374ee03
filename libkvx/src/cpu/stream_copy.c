/*
 * stream_copy.c - a memcpy whose stores bypass the caches, for transfers far larger than them.
 *
 * A plain store to a line that is not in the cache first reads the line from memory (read for
 * ownership), only to overwrite all of it: a third of a copy's memory traffic. When a transfer is
 * much larger than the last-level cache its destination is not cached, and it will be evicted
 * before anything reads it. Non-temporal (streaming) stores write whole lines without reading
 * them. Measured on a 2-core AMD EPYC (AVX2) VM, a KV transfer of 32 KiB block runs went 1.4-1.6x
 * faster in both directions; 2 KiB token rows 1.5-2x faster into scattered slots (each read for
 * ownership there is a cache miss the core waits on) and 1.05-1.25x into a contiguous buffer.
 *
 * Streaming was faster there for transfers of 16 MiB too, but only because nothing read the
 * result: below the last-level cache's size the destination may still be cached when the caller
 * (the codec, the attention kernel) reads it next, which streaming stores would throw away. So
 * the threshold is that size, read from the OS once; 32 MiB (a server part's cache per core
 * complex or socket) where it cannot be read.
 *
 * x86-64 only: AVX2 (32-byte stores) where kvx_cpu_avx2_allowed(), else SSE2, which every x86-64
 * CPU has (on the VM above a little slower than AVX2: 0.9-1.1x memcpy's speed on 2 KiB rows
 * into a contiguous buffer, 1.3-1.7x elsewhere). Other CPUs keep memcpy: nothing was measured
 * there.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_backend.h"
#include "stream_copy.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define STREAM_X86 1
#define ATTR_AVX2 __attribute__((target("avx2")))
#endif

/* Pieces shorter than this are copied with memcpy even in a large transfer: the head and tail
 * left to memcpy would be most of them. Measured on a 2-core AMD EPYC (AVX2) VM, streaming won
 * from 256-byte pieces on (vLLM HND head vectors in bf16: 1.3x on stores); smaller ones were not
 * measured. */
#define MIN_STREAM_PIECE 256

/* When the last-level cache's size cannot be read. */
#define DEFAULT_THRESHOLD ((int64_t)32 << 20)

static void plain_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

#if STREAM_X86
/* Each copies the bytes before the first aligned destination address and after the last whole
 * vector with memcpy, and the vectors between with streaming stores (loads need no alignment).
 */
static void stream_sse2(void *dst, const void *src, size_t bytes)
{
    if (bytes < MIN_STREAM_PIECE) {
        memcpy(dst, src, bytes);
        return;
    }
    char *d = dst;
    const char *s = src;
    size_t head = (size_t)(-(uintptr_t)d & 15);
    memcpy(d, s, head);
    d += head, s += head, bytes -= head;
    size_t i = 0;
    for (; i + 64 <= bytes; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_stream_si128((__m128i *)(d + i), a);
        _mm_stream_si128((__m128i *)(d + i + 16), b);
        _mm_stream_si128((__m128i *)(d + i + 32), c);
        _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
    for (; i + 16 <= bytes; i += 16)
        _mm_stream_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
    memcpy(d + i, s + i, bytes - i);
}

ATTR_AVX2 static void stream_avx2(void *dst, const void *src, size_t bytes)
{
    if (bytes < MIN_STREAM_PIECE) {
        memcpy(dst, src, bytes);
        return;
    }
    char *d = dst;
    const char *s = src;
    size_t head = (size_t)(-(uintptr_t)d & 31);
    memcpy(d, s, head);
    d += head, s += head, bytes -= head;
    size_t i = 0;
    /* Four loads, then four stores: two cache lines per step. */
    for (; i + 128 <= bytes; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(s + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(s + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(s + i + 64));
        __m256i e = _mm256_loadu_si256((const __m256i *)(s + i + 96));
        _mm256_stream_si256((__m256i *)(d + i), a);
        _mm256_stream_si256((__m256i *)(d + i + 32), b);
        _mm256_stream_si256((__m256i *)(d + i + 64), c);
        _mm256_stream_si256((__m256i *)(d + i + 96), e);
    }
    for (; i + 32 <= bytes; i += 32)
        _mm256_stream_si256((__m256i *)(d + i), _mm256_loadu_si256((const __m256i *)(s + i)));
    memcpy(d + i, s + i, bytes - i);
}
#endif

static kvx_copy_fn streaming_copy(void)
{
#if STREAM_X86
    return kvx_cpu_avx2_allowed() ? stream_avx2 : stream_sse2;
#else
    return plain_copy;
#endif
}

const char *kvx_stream_copy_variant(void)
{
#if STREAM_X86
    return kvx_cpu_avx2_allowed() ? "stream-avx2" : "stream-sse2";
#else
    return "memcpy";
#endif
}

void kvx_stream_fence(void)
{
#if STREAM_X86
    _mm_sfence();
#endif
}

/* Size of a level-3 (else level-2) cache, or 0. Linux's sysfs gives the size of one instance,
 * the cache the copying cores share; glibc's sysconf may report the whole package's instead
 * (the AMD EPYC VM above: 256 MiB there, 32 MiB per instance), so sysfs is asked first. */
static int64_t last_level_cache_bytes(void)
{
    int64_t best = 0;
    int best_level = 0;
    for (int index = 0; index < 16; index++) {
        char path[96], text[32];
        int level = 0;
        long long size = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
        FILE *f = fopen(path, "r");
        if (!f)
            break;
        int got = fscanf(f, "%d", &level) == 1;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        f = fopen(path, "r");
        if (!f)
            continue;
        if (got && fgets(text, sizeof text, f)) {
            char *end;
            size = strtoll(text, &end, 10);
            if (*end == 'K')
                size <<= 10;
            else if (*end == 'M')
                size <<= 20;
        }
        fclose(f);
        if (got && size > 0 && level >= best_level)
            best = size, best_level = level;
    }
    if (best > 0 && best_level >= 2)
        return best;
#ifdef _SC_LEVEL3_CACHE_SIZE
    long size = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (size > 0)
        return size;
#endif
    return 0;
}

static int64_t threshold_from_env(const char *text, int64_t fallback)
{
    errno = 0;
    char *end;
    long long n = strtoll(text, &end, 10);
    int digits = end != text;
    while (isspace((unsigned char)*end))
        end++;
    if (digits && *end == '\0' && n >= 0 && errno == 0)
        return n;
    kvx_warn("KVX_CPU_STREAM_THRESHOLD=\"%s\" ignored (expected a byte count, 0 or more); "
             "using the default, %lld bytes",
             text, (long long)fallback);
    return fallback;
}

static int64_t threshold;
static pthread_once_t threshold_once = PTHREAD_ONCE_INIT;

static void read_threshold(void)
{
    int64_t cache = last_level_cache_bytes();
    threshold = cache > 0 ? cache : DEFAULT_THRESHOLD;
    const char *env = getenv("KVX_CPU_STREAM_THRESHOLD");
    if (env && *env) /* empty counts as unset */
        threshold = threshold_from_env(env, threshold);
}

int64_t kvx_stream_threshold(void)
{
    pthread_once(&threshold_once, read_threshold);
    return threshold;
}

kvx_copy_fn kvx_stream_copy_for(int64_t total_bytes, int *streaming)
{
    kvx_copy_fn copy = total_bytes > kvx_stream_threshold() ? streaming_copy() : plain_copy;
    *streaming = copy != plain_copy;
    return copy;
}
