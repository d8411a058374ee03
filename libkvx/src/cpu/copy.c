/*
 * copy.c - kvx_copy_batch and host memory on the CPU backend.
 *
 * The ranges are copied as one stream of bytes cut into pieces of equal size: a piece covers the
 * tail of one range, whole small ranges and the head of the next, so many small copies are
 * grouped into one work item and a large one is split over several, and every thread gets about
 * the same bytes. The front-end proved that no destination overlaps anything, so pieces may run
 * in any order on any thread.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_backend.h"

/* Below this a piece is not worth handing to another thread: waking a worker costs about what
 * copying this much does. */
#define MIN_PIECE_BYTES (256 * 1024)
/* Pieces per thread, so that a thread slowed down (a busy core, a page fault) is made up for. */
#define PIECES_PER_THREAD 8

typedef struct copy_job {
    const kvx_copy_batch_args *args;
    int64_t piece;
} copy_job;

/* The first range whose bytes reach past `offset`. */
static int64_t range_at(const kvx_copy_batch_args *args, int64_t offset)
{
    int64_t lo = 0, hi = args->count - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (args->ranges[mid].offset <= offset)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static void copy_pieces(void *ctx, int64_t begin, int64_t end)
{
    const copy_job *job = ctx;
    const kvx_copy_batch_args *args = job->args;
    int64_t from = begin * job->piece;
    int64_t to = end * job->piece < args->total_bytes ? end * job->piece : args->total_bytes;
    for (int64_t i = range_at(args, from); i < args->count && args->ranges[i].offset < to; i++) {
        const kvx_copy_range *r = &args->ranges[i];
        int64_t lo = from > r->offset ? from - r->offset : 0;
        int64_t hi = to < r->offset + r->bytes ? to - r->offset : r->bytes;
        memcpy((char *)r->dst + lo, (const char *)r->src + lo, (size_t)(hi - lo));
    }
}

int32_t kvx_cpu_copy_batch(const kvx_copy_batch_args *args, const kvx_stream *stream)
{
    (void)stream;
    int64_t threads = kvx_get_num_threads();
    int64_t piece = args->total_bytes / (threads * PIECES_PER_THREAD);
    if (piece < MIN_PIECE_BYTES)
        piece = MIN_PIECE_BYTES;
    copy_job job = {args, piece};
    kvx_parallel_for((args->total_bytes + piece - 1) / piece, 1, copy_pieces, &job);
    return KVX_OK;
}

/* Page-aligned, so that a device runtime can later pin it whole (cudaHostRegister and its
 * kind work on pages) and huge copies start on a page. */
int32_t kvx_cpu_host_alloc(const kvx_host_alloc_args *args, const kvx_stream *device)
{
    (void)device;
    long page = sysconf(_SC_PAGESIZE);
    void *ptr = NULL;
    if (posix_memalign(&ptr, page > 0 ? (size_t)page : 4096, args->bytes) != 0)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "bytes: cannot allocate %zu bytes of host memory",
                        args->bytes);
    *args->ptr = ptr;
    return KVX_OK;
}

int32_t kvx_cpu_host_free(const kvx_host_free_args *args, const kvx_stream *device)
{
    (void)device;
    free(args->ptr);
    return KVX_OK;
}
