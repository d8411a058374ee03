/*
 * transfer.c - KV transfer on the CPU backend.
 *
 * Plan once, copy many times: the slot mapping is turned into runs (src/core/transfer_plan.c,
 * shared with the device backends that plan on the host) of dense tokens whose bytes
 * are contiguous on both sides (one run per block when consecutive slots share a block and both
 * sides store whole token rows back to back), and the same runs are then copied for every
 * (layer, plane) on the thread pool. Within a run, the copy unit is the largest contiguous piece
 * the two layouts share: the whole run, one token row, or one head vector. Transfers much larger
 * than the caches copy with streaming stores (stream_copy.c).
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "stream_copy.h"
#include "../core/transfer_plan.h"

typedef kvx_run run;

enum copy_unit { COPY_RUN = KVX_COPY_RUN, COPY_ROW = KVX_COPY_ROW, COPY_HEAD = KVX_COPY_HEAD };

typedef struct transfer_job {
    const kvx_paged_desc *paged;
    const kvx_dense_desc *dense;
    int32_t direction;
    enum copy_unit unit;
    int64_t elem_size;
    int64_t row_bytes;  /* num_heads * head_size elements */
    int64_t head_bytes;
    const run *runs;
    int64_t num_runs;
    kvx_copy_fn copy;
    int streaming; /* copy is the streaming one: each chunk ends with a fence */
} transfer_job;

static void copy_piece(const transfer_job *job, char *paged, char *dense, int64_t bytes)
{
    if (job->direction == KVX_PAGED_TO_DENSE)
        job->copy(dense, paged, (size_t)bytes);
    else
        job->copy(paged, dense, (size_t)bytes);
}

static void copy_run(const transfer_job *job, char *paged_base, char *dense_base, const run *r)
{
    const kvx_paged_desc *p = job->paged;
    const kvx_dense_desc *d = job->dense;
    int64_t es = job->elem_size;
    if (job->unit == COPY_RUN) {
        copy_piece(job, kvx_paged_token(p, paged_base, r->slot, es),
                   dense_base + r->token * d->token_stride * es, r->count * job->row_bytes);
        return;
    }
    for (int64_t i = 0; i < r->count; i++) {
        char *src_p = kvx_paged_token(p, paged_base, r->slot + i, es);
        char *src_d = dense_base + (r->token + i) * d->token_stride * es;
        if (job->unit == COPY_ROW) {
            copy_piece(job, src_p, src_d, job->row_bytes);
            continue;
        }
        for (int64_t h = 0; h < p->num_heads; h++)
            copy_piece(job, src_p + h * p->head_stride * es, src_d + h * d->head_stride * es,
                       job->head_bytes);
    }
}

/* Items are (plane, run) pairs, plane-major, so each thread walks runs of one layer in order. */
static void copy_items(void *ctx, int64_t begin, int64_t end)
{
    const transfer_job *job = ctx;
    const kvx_paged_desc *p = job->paged;
    const kvx_dense_desc *d = job->dense;
    for (int64_t item = begin; item < end; item++) {
        int64_t plane = item / job->num_runs, r = item % job->num_runs;
        int64_t kv = plane / p->num_layers, layer = plane % p->num_layers;
        char *paged_base = kvx_paged_plane(p, layer, kv, job->elem_size);
        char *dense_base = (char *)d->base +
                           (kv * d->kv_stride + layer * d->layer_stride) * job->elem_size;
        copy_run(job, paged_base, dense_base, &job->runs[r]);
    }
    /* Streaming stores are weakly ordered: they must reach memory before the pool's "done". */
    if (job->streaming)
        kvx_stream_fence();
}

int32_t kvx_cpu_transfer(const kvx_transfer_args *args, const kvx_stream *stream)
{
    (void)stream;
    int64_t count = args->dense->num_tokens;
    run *runs = malloc((size_t)count * sizeof *runs);
    if (!runs)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "transfer: cannot allocate %lld run records",
                        (long long)count);
    transfer_job job = {
        .paged = args->paged,
        .dense = args->dense,
        .direction = args->direction,
        .unit = (enum copy_unit)kvx_plan_unit(args->paged, args->dense),
        .elem_size = kvx_dtype_size(args->paged->dtype),
        .runs = runs,
    };
    job.head_bytes = args->paged->head_size * job.elem_size;
    job.row_bytes = args->paged->num_heads * job.head_bytes;
    /* The copies read only the runs, whose slots were checked as they were read. */
    int32_t rc = kvx_plan_runs(args->paged, args->slot_mapping, count, job.unit == COPY_RUN, runs,
                               &job.num_runs);
    if (rc == KVX_OK && job.num_runs > 0) {
        int64_t planes = (int64_t)args->paged->num_kv * args->paged->num_layers;
        int64_t tokens = 0; /* valid ones: padding slots move nothing */
        for (int64_t i = 0; i < job.num_runs; i++)
            tokens += runs[i].count;
        job.copy = kvx_stream_copy_for(planes * tokens * job.row_bytes, &job.streaming);
        int64_t run_bytes = count * job.row_bytes / job.num_runs;
        /* Hand out at least ~64 KiB per chunk so the counter is not contended. */
        int64_t grain = run_bytes >= 65536 ? 1 : 65536 / (run_bytes > 0 ? run_bytes : 1);
        kvx_parallel_for(planes * job.num_runs, grain, copy_items, &job);
    }
    free(runs);
    return rc;
}
