/*
 * transfer_plan.h - backend-independent planning of a KV transfer, shared by the CPU backend and
 * the runtime-loaded device backends (Ascend, CNRT), which all plan on the host.
 *
 * A plan is a list of runs of dense tokens whose bytes are contiguous on both sides (one run per
 * block when consecutive slots share a block and both sides store whole token rows back to back)
 * and a copy unit: the largest contiguous piece the two layouts share inside a run.
 */
#ifndef KVX_TRANSFER_PLAN_H
#define KVX_TRANSFER_PLAN_H

#include "kvx_internal.h"

typedef struct kvx_run {
    int64_t token; /* first dense token */
    int64_t slot;  /* its slot */
    int64_t count; /* tokens in the run */
} kvx_run;

enum kvx_copy_unit { KVX_COPY_RUN, KVX_COPY_ROW, KVX_COPY_HEAD };

/* The copy unit both layouts allow. */
enum kvx_copy_unit kvx_plan_unit(const kvx_paged_desc *p, const kvx_dense_desc *d);

/*
 * Splits the valid (non-negative) slots into runs, written to `runs` (room for `count`), and
 * *num_runs = how many. With merge == 0 every valid token is its own run. Merged runs cover
 * consecutive dense tokens whose slots follow one another in memory at token_stride spacing.
 *
 * `slots` must be host memory. Each slot is read once and checked as it is read, and runs hold
 * only checked values, so copying from the runs never leaves the paged cache, whatever another
 * thread writes to `slots` meanwhile. A slot at or past the cache's capacity fails the call
 * (KVX_ERR_INVALID_ARGUMENT naming the entry); nothing has been copied then.
 */
int32_t kvx_plan_runs(const kvx_paged_desc *p, const int64_t *slots, int64_t count, int merge,
                      kvx_run *runs, int64_t *num_runs);

/* Start of plane (layer, kv) of the paged cache, in bytes. */
static inline char *kvx_paged_plane(const kvx_paged_desc *p, int64_t layer, int64_t kv,
                                    int64_t elem_size)
{
    int64_t base_index = p->num_bases == p->num_layers ? layer : kv * p->num_layers + layer;
    return (char *)p->bases[base_index] + kv * p->kv_stride * elem_size;
}

/* Start of the token row of `slot` inside a plane. */
static inline char *kvx_paged_token(const kvx_paged_desc *p, char *plane, int64_t slot,
                                    int64_t elem_size)
{
    int64_t block = slot / p->block_size, offset = slot % p->block_size;
    return plane + (block * p->block_stride + offset * p->token_stride) * elem_size;
}

/* Start of plane (layer, kv) of the dense buffer, in bytes. */
static inline char *kvx_dense_plane(const kvx_dense_desc *d, int64_t layer, int64_t kv,
                                    int64_t elem_size)
{
    return (char *)d->base + (kv * d->kv_stride + layer * d->layer_stride) * elem_size;
}

/* ---------------------------------------------------------------- copy lists (device backends) */

/* One contiguous piece to copy, or, when height > 1, a 2D grid of `height` pieces of `bytes`
 * spaced paged_pitch / dense_pitch bytes apart. Pointers are the paged and dense sides; the
 * backend turns them into src/dst according to the direction. */
typedef struct kvx_copy {
    char *paged;
    char *dense;
    int64_t bytes;
    int64_t height;
    int64_t paged_pitch;
    int64_t dense_pitch;
} kvx_copy;

typedef struct kvx_copy_plan {
    kvx_copy *copies;
    int64_t num_copies;
    int64_t total_bytes;
} kvx_copy_plan;

/*
 * Plans the whole transfer as copies for a device backend: runs are formed from the slots (host
 * memory, each read once and checked: kvx_plan_runs), and one copy emitted per (plane, run) for
 * whole-run units, else per (plane, run, token[, head]); with max_2d_height > 1, the per-token
 * pieces of a run become 2D copies of at most max_2d_height rows per (plane, run[, head]) when
 * the pitches allow it (pitch >= width on both sides). Copies are ordered plane-major. On success
 * the caller frees plan->copies with free().
 */
int32_t kvx_plan_copies(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                        const int64_t *slots, int64_t max_2d_height, kvx_copy_plan *plan);

#endif /* KVX_TRANSFER_PLAN_H */
