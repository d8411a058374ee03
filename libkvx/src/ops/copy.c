/*
 * copy.c - kvx_copy_batch: the arguments' checks and dispatch, then the caller's three arrays
 * read once into ranges and every check made on that copy (sizes, pointers, the address space,
 * overlaps) before the backend gets it.
 *
 * The overlap rule is what lets every backend copy the ranges in any order and at once (threads
 * on the CPU, batches grouped by kind on device runtimes), so it is checked here, for every
 * backend, before anything is copied: destinations are sorted by address (a radix sort, skipped
 * when they already are, the usual gather into one buffer), neighbours must not meet, and each
 * source is looked up among them by binary search. O(n log n), no quadratic pass.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/kvx_internal.h"

/* [start, end) of one range's destination, with the caller's index for messages. */
typedef struct span {
    uintptr_t start, end;
    int64_t index;
} span;

/* One pointer of a caller's array that another thread may change during the call: loaded once
 * (volatile), like the sizes (kvx_read_once_i64). */
static const void *read_once_ptr(const void *const *array, int64_t index)
{
    return ((const void *const volatile *)array)[index];
}

static int32_t read_range(const void *const *srcs, void *const *dsts, const int64_t *sizes,
                          int64_t i, kvx_copy_range *r)
{
    int64_t bytes = kvx_read_once_i64(sizes, i);
    if (bytes < 0)
        return FAIL_ARG("sizes[%lld]: expected >= 0 bytes, got %lld", (long long)i,
                        (long long)bytes);
    r->bytes = bytes;
    r->index = i;
    if (bytes == 0)
        return KVX_OK;
    r->src = read_once_ptr(srcs, i);
    r->dst = (void *)read_once_ptr((const void *const *)dsts, i);
    const char *names[2] = {"srcs", "dsts"};
    const void *ends[2] = {r->src, r->dst};
    for (int k = 0; k < 2; k++) {
        uintptr_t end;
        if (!ends[k])
            return FAIL_ARG("%s[%lld]: expected a pointer to sizes[%lld] = %lld bytes, got NULL",
                            names[k], (long long)i, (long long)i, (long long)bytes);
        if (__builtin_add_overflow((uintptr_t)ends[k], (uintptr_t)bytes, &end))
            return FAIL_ARG("%s[%lld]: %lld bytes from %p run past the end of the address space",
                            names[k], (long long)i, (long long)bytes, ends[k]);
    }
    return KVX_OK;
}

/* Sorts spans by start, in place in `a` (`tmp`: scratch of as many): least significant digit
 * first, RADIX_BITS a pass, over the bits in which the starts differ only, so a few O(n) passes
 * (qsort, comparing through a function pointer, cost about 8 times more for 4096 ranges). */
#define RADIX_BITS 11
static void sort_by_start(span *a, span *tmp, int64_t n)
{
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        lo = a[i].start < lo ? a[i].start : lo;
        hi = a[i].start > hi ? a[i].start : hi;
    }
    span *from = a, *to = tmp;
    for (unsigned shift = 0; shift < sizeof(uintptr_t) * 8 && ((hi - lo) >> shift) != 0;
         shift += RADIX_BITS) {
        int64_t start[(1 << RADIX_BITS) + 1] = {0};
        for (int64_t i = 0; i < n; i++)
            start[(((from[i].start - lo) >> shift) & ((1 << RADIX_BITS) - 1)) + 1]++;
        for (int d = 0; d < 1 << RADIX_BITS; d++)
            start[d + 1] += start[d];
        for (int64_t i = 0; i < n; i++)
            to[start[((from[i].start - lo) >> shift) & ((1 << RADIX_BITS) - 1)]++] = from[i];
        span *t = from;
        from = to;
        to = t;
    }
    if (from != a)
        memcpy(a, from, (size_t)n * sizeof *a);
}

static int32_t overlap(const char *what, int64_t what_index, uintptr_t start, uintptr_t end,
                       const span *dst)
{
    return FAIL_ARG("dsts[%lld]: bytes [%p, %p) overlap %s[%lld]'s [%p, %p); a destination range "
                    "must not overlap another destination range or any source range",
                    (long long)dst->index, (void *)dst->start, (void *)dst->end, what,
                    (long long)what_index, (void *)start, (void *)end);
}

/* The destination span that could hold `start`-`end`: the last one starting before `end`
 * (destinations are sorted and disjoint, so their ends grow too), or NULL. */
static const span *last_starting_before(const span *dsts, int64_t n, uintptr_t end)
{
    int64_t lo = 0, hi = n; /* first index whose start >= end */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (dsts[mid].start < end)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 ? &dsts[lo - 1] : NULL;
}

/* `dsts` has room for 2 * n spans (the second half is the sort's scratch). */
static int32_t check_overlaps(const kvx_copy_range *ranges, int64_t n, span *dsts)
{
    int sorted = 1;
    for (int64_t i = 0; i < n; i++) {
        dsts[i] = (span){(uintptr_t)ranges[i].dst, (uintptr_t)ranges[i].dst + ranges[i].bytes,
                         ranges[i].index};
        sorted = sorted && (i == 0 || dsts[i - 1].start <= dsts[i].start);
    }
    if (!sorted)
        sort_by_start(dsts, dsts + n, n);
    for (int64_t i = 1; i < n; i++)
        if (dsts[i - 1].end > dsts[i].start) {
            /* name the later entry of the caller's arrays as the one that overlaps */
            const span *a = &dsts[i - 1], *b = &dsts[i];
            if (a->index > b->index) {
                const span *t = a;
                a = b;
                b = t;
            }
            return overlap("dsts", a->index, a->start, a->end, b);
        }
    for (int64_t i = 0; i < n; i++) {
        uintptr_t start = (uintptr_t)ranges[i].src, end = start + ranges[i].bytes;
        const span *d = last_starting_before(dsts, n, end);
        if (d && d->end > start)
            return overlap("srcs", ranges[i].index, start, end, d);
    }
    return KVX_OK;
}

/* Reads and checks the caller's ranges; *ranges (malloc'd, the caller frees it) receives the
 * non-empty ones in order, *n how many, *total their bytes. */
static int32_t read_ranges(const void *const *srcs, void *const *dsts, const int64_t *sizes,
                           int64_t count, kvx_copy_range **ranges, int64_t *n, int64_t *total)
{
    *ranges = NULL;
    *n = *total = 0;
    if (count == 0)
        return KVX_OK;
    kvx_copy_range *out = malloc((size_t)count * sizeof *out);
    if (!out)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "count: cannot allocate the %lld ranges' records",
                        (long long)count);
    *ranges = out;
    for (int64_t i = 0; i < count; i++) {
        kvx_copy_range r = {0};
        int32_t rc = read_range(srcs, dsts, sizes, i, &r);
        if (rc)
            return rc;
        if (r.bytes == 0)
            continue;
        r.offset = *total;
        if (__builtin_add_overflow(*total, r.bytes, total))
            return FAIL_ARG("sizes: the total of the first %lld entries overflows int64",
                            (long long)i + 1);
        out[(*n)++] = r;
    }
    if (*n == 0)
        return KVX_OK;
    span one[2], *sorted = *n == 1 ? one : malloc(2 * (size_t)*n * sizeof *sorted);
    if (!sorted)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY,
                        "count: cannot allocate the overlap check of %lld ranges", (long long)*n);
    int32_t rc = check_overlaps(out, *n, sorted);
    if (sorted != one)
        free(sorted);
    return rc;
}

int32_t kvx_copy_batch(const void *const *srcs, void *const *dsts, const int64_t *sizes,
                       int64_t count, const kvx_stream *stream)
{
    int32_t rc;
    kvx_clear_error();
    if ((rc = kvx_check_range("count", count, 0, PTRDIFF_MAX / (int64_t)sizeof(kvx_copy_range))) ||
        (rc = kvx_check_array("srcs", srcs, count, "pointers")) ||
        (rc = kvx_check_array("dsts", dsts, count, "pointers")) ||
        (rc = kvx_check_array("sizes", sizes, count, "int64 entries")))
        return rc;
    KVX_DISPATCH(backend, stream, copy_batch, "copy_batch");
    kvx_copy_range *ranges;
    int64_t n, total;
    if ((rc = read_ranges(srcs, dsts, sizes, count, &ranges, &n, &total)) == KVX_OK && n > 0)
        rc = backend->copy_batch(&(kvx_copy_batch_args){ranges, n, total}, stream);
    free(ranges);
    return rc;
}
