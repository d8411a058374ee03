/*
 * transfer.c - KV transfer on the CPU backend.
 *
 * Plan once, copy many times: the slot mapping is turned into runs of dense tokens whose bytes
 * are contiguous on both sides (one run per block when consecutive slots share a block and both
 * sides store whole token rows back to back), and the same runs are then copied for every
 * (layer, plane) on the thread pool. Within a run, the copy unit is the largest contiguous piece
 * the two layouts share: the whole run, one token row, or one head vector.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"

typedef struct run {
    int64_t token; /* first dense token */
    int64_t slot;  /* its slot */
    int64_t count; /* tokens in the run */
} run;

enum copy_unit { COPY_RUN, COPY_ROW, COPY_HEAD };

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
} transfer_job;

/* Rejects the call before anything is written if any slot is at or past the capacity. */
static int32_t check_slots(const kvx_paged_desc *paged, const int64_t *slots, int64_t count)
{
    int64_t capacity = paged->num_blocks * paged->block_size;
    for (int64_t t = 0; t < count; t++)
        if (slots[t] >= capacity)
            return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                            "slot_mapping[%lld]: slot %lld is out of range; the paged cache "
                            "holds %lld slots (num_blocks %lld * block_size %lld)",
                            (long long)t, (long long)slots[t], (long long)capacity,
                            (long long)paged->num_blocks, (long long)paged->block_size);
    return KVX_OK;
}

/* Heads of one token lie back to back, so a token row is one contiguous piece. */
static int rows_contiguous(int64_t head_stride, const kvx_paged_desc *p)
{
    return p->num_heads == 1 || head_stride == p->head_size;
}

static enum copy_unit choose_unit(const kvx_paged_desc *p, const kvx_dense_desc *d)
{
    if (!rows_contiguous(p->head_stride, p) || !rows_contiguous(d->head_stride, p))
        return COPY_HEAD;
    int64_t row = (int64_t)p->num_heads * p->head_size;
    /* Consecutive tokens of a run must sit one row apart on both sides. */
    if (p->token_stride == row && d->token_stride == row)
        return COPY_RUN;
    return COPY_ROW;
}

/* Whether slot s + 1 directly follows slot s in memory (same block, or blocks laid end to end). */
static int next_slot_adjacent(const kvx_paged_desc *p, int64_t slot)
{
    return (slot + 1) % p->block_size != 0 || p->block_stride == p->block_size * p->token_stride;
}

/* Splits the valid tokens into runs; returns the number of runs written to `runs`. */
static int64_t plan_runs(const kvx_paged_desc *p, const int64_t *slots, int64_t count,
                         int merge, run *runs)
{
    int64_t n = 0;
    for (int64_t t = 0; t < count; t++) {
        if (slots[t] < 0)
            continue;
        if (merge && n > 0) {
            run *last = &runs[n - 1];
            int64_t last_slot = last->slot + last->count - 1;
            if (last->token + last->count == t && slots[t] == last_slot + 1 &&
                next_slot_adjacent(p, last_slot)) {
                last->count++;
                continue;
            }
        }
        runs[n++] = (run){t, slots[t], 1};
    }
    return n;
}

static char *paged_plane(const kvx_paged_desc *p, int64_t layer, int64_t kv, int64_t elem_size)
{
    int64_t base_index = p->num_bases == p->num_layers ? layer : kv * p->num_layers + layer;
    return (char *)p->bases[base_index] + kv * p->kv_stride * elem_size;
}

static char *paged_token(const kvx_paged_desc *p, char *plane, int64_t slot, int64_t elem_size)
{
    int64_t block = slot / p->block_size, offset = slot % p->block_size;
    return plane + (block * p->block_stride + offset * p->token_stride) * elem_size;
}

static void copy_piece(char *paged, char *dense, int64_t bytes, int32_t direction)
{
    if (direction == KVX_PAGED_TO_DENSE)
        memcpy(dense, paged, (size_t)bytes);
    else
        memcpy(paged, dense, (size_t)bytes);
}

static void copy_run(const transfer_job *job, char *paged_base, char *dense_base, const run *r)
{
    const kvx_paged_desc *p = job->paged;
    const kvx_dense_desc *d = job->dense;
    int64_t es = job->elem_size;
    if (job->unit == COPY_RUN) {
        copy_piece(paged_token(p, paged_base, r->slot, es), dense_base + r->token * d->token_stride * es,
                   r->count * job->row_bytes, job->direction);
        return;
    }
    for (int64_t i = 0; i < r->count; i++) {
        char *src_p = paged_token(p, paged_base, r->slot + i, es);
        char *src_d = dense_base + (r->token + i) * d->token_stride * es;
        if (job->unit == COPY_ROW) {
            copy_piece(src_p, src_d, job->row_bytes, job->direction);
            continue;
        }
        for (int64_t h = 0; h < p->num_heads; h++)
            copy_piece(src_p + h * p->head_stride * es, src_d + h * d->head_stride * es,
                       job->head_bytes, job->direction);
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
        char *paged_base = paged_plane(p, layer, kv, job->elem_size);
        char *dense_base = (char *)d->base +
                           (kv * d->kv_stride + layer * d->layer_stride) * job->elem_size;
        copy_run(job, paged_base, dense_base, &job->runs[r]);
    }
}

int32_t kvx_cpu_transfer(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                         const int64_t *slot_mapping, int32_t direction,
                         const kvx_stream *stream)
{
    (void)stream;
    int64_t count = dense->num_tokens;
    int32_t rc = check_slots(paged, slot_mapping, count);
    if (rc)
        return rc;
    run *runs = malloc((size_t)count * sizeof *runs);
    if (!runs)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "transfer: cannot allocate %lld run records",
                        (long long)count);
    transfer_job job = {
        .paged = paged,
        .dense = dense,
        .direction = direction,
        .unit = choose_unit(paged, dense),
        .elem_size = kvx_dtype_size(paged->dtype),
        .runs = runs,
    };
    job.head_bytes = paged->head_size * job.elem_size;
    job.row_bytes = paged->num_heads * job.head_bytes;
    job.num_runs = plan_runs(paged, slot_mapping, count, job.unit == COPY_RUN, runs);
    if (job.num_runs > 0) {
        int64_t planes = (int64_t)paged->num_kv * paged->num_layers;
        int64_t run_bytes = count * job.row_bytes / job.num_runs;
        /* Hand out at least ~64 KiB per chunk so the counter is not contended. */
        int64_t grain = run_bytes >= 65536 ? 1 : 65536 / (run_bytes > 0 ? run_bytes : 1);
        kvx_parallel_for(planes * job.num_runs, grain, copy_items, &job);
    }
    free(runs);
    return KVX_OK;
}
