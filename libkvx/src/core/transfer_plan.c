/* transfer_plan.c - run planning shared by every backend that plans a transfer on the host. */
#include <stdlib.h>

#include "transfer_plan.h"

/* Heads of one token lie back to back, so a token row is one contiguous piece. */
static int rows_contiguous(int64_t head_stride, const kvx_paged_desc *p)
{
    return p->num_heads == 1 || head_stride == p->head_size;
}

enum kvx_copy_unit kvx_plan_unit(const kvx_paged_desc *p, const kvx_dense_desc *d)
{
    if (!rows_contiguous(p->head_stride, p) || !rows_contiguous(d->head_stride, p))
        return KVX_COPY_HEAD;
    int64_t row = (int64_t)p->num_heads * p->head_size;
    /* Consecutive tokens of a run must sit one row apart on both sides. */
    if (p->token_stride == row && d->token_stride == row)
        return KVX_COPY_RUN;
    return KVX_COPY_ROW;
}

/* Whether slot s + 1 directly follows slot s in memory (same block, or blocks laid end to end). */
static int next_slot_adjacent(const kvx_paged_desc *p, int64_t slot)
{
    return (slot + 1) % p->block_size != 0 || p->block_stride == p->block_size * p->token_stride;
}

static int32_t slot_out_of_range(const kvx_paged_desc *p, int64_t t, int64_t slot)
{
    return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                    "slot_mapping[%lld]: slot %lld is out of range; the paged cache holds %lld "
                    "slots (num_blocks %lld * block_size %lld)",
                    (long long)t, (long long)slot, (long long)(p->num_blocks * p->block_size),
                    (long long)p->num_blocks, (long long)p->block_size);
}

int32_t kvx_plan_runs(const kvx_paged_desc *p, const int64_t *slots, int64_t count, int merge,
                      kvx_run *runs, int64_t *num_runs)
{
    int64_t capacity = p->num_blocks * p->block_size, n = 0;
    for (int64_t t = 0; t < count; t++) {
        int64_t slot = kvx_read_once_i64(slots, t);
        if (slot >= capacity)
            return slot_out_of_range(p, t, slot);
        if (slot < 0)
            continue;
        if (merge && n > 0) {
            kvx_run *last = &runs[n - 1];
            int64_t last_slot = last->slot + last->count - 1;
            if (last->token + last->count == t && slot == last_slot + 1 &&
                next_slot_adjacent(p, last_slot)) {
                last->count++;
                continue;
            }
        }
        runs[n++] = (kvx_run){t, slot, 1};
    }
    *num_runs = n;
    return KVX_OK;
}

/* ---------------------------------------------------------------- copy lists */

typedef struct copy_shape {
    enum kvx_copy_unit unit;
    int64_t es, head_bytes, row_bytes;
    int use_2d; /* per-token pieces of a run form 2D copies */
    int64_t max_height; /* rows per 2D copy */
    int64_t pieces_per_token; /* heads for KVX_COPY_HEAD, else 1 */
} copy_shape;

static copy_shape shape_of(const kvx_paged_desc *p, const kvx_dense_desc *d, int64_t max_height)
{
    copy_shape s = {.unit = kvx_plan_unit(p, d), .es = kvx_dtype_size(p->dtype)};
    s.max_height = max_height;
    s.head_bytes = p->head_size * s.es;
    s.row_bytes = p->num_heads * s.head_bytes;
    s.pieces_per_token = s.unit == KVX_COPY_HEAD ? p->num_heads : 1;
    int64_t width = s.unit == KVX_COPY_HEAD ? s.head_bytes : s.row_bytes;
    /* A 2D copy needs rows that do not overlap on either side (documented pitch >= width). */
    s.use_2d = max_height > 1 && s.unit != KVX_COPY_RUN && p->token_stride * s.es >= width &&
               d->token_stride * s.es >= width;
    return s;
}

/* Copies one run of one plane yields. */
static int64_t copies_per_run(const copy_shape *s, const kvx_run *r)
{
    if (s->unit == KVX_COPY_RUN)
        return 1;
    int64_t pieces = s->use_2d ? (r->count - 1) / s->max_height + 1 : r->count;
    return pieces * s->pieces_per_token;
}

static kvx_copy *emit_run(const kvx_paged_desc *p, const kvx_dense_desc *d, const copy_shape *s,
                          char *paged_plane, char *dense_plane, const kvx_run *r, kvx_copy *out)
{
    int64_t es = s->es;
    int64_t paged_pitch = p->token_stride * es, dense_pitch = d->token_stride * es;
    if (s->unit == KVX_COPY_RUN) {
        *out++ = (kvx_copy){kvx_paged_token(p, paged_plane, r->slot, es),
                            dense_plane + r->token * dense_pitch,
                            r->count * s->row_bytes,
                            1,
                            0,
                            0};
        return out;
    }
    int64_t width = s->unit == KVX_COPY_HEAD ? s->head_bytes : s->row_bytes;
    int64_t step = s->use_2d ? s->max_height : 1;
    for (int64_t i = 0; i < r->count; i += step) {
        int64_t height = r->count - i < step ? r->count - i : step;
        char *pt = kvx_paged_token(p, paged_plane, r->slot + i, es);
        char *dt = dense_plane + (r->token + i) * dense_pitch;
        for (int64_t h = 0; h < s->pieces_per_token; h++)
            *out++ = (kvx_copy){pt + h * p->head_stride * es,
                                dt + h * d->head_stride * es,
                                width,
                                height,
                                paged_pitch,
                                dense_pitch};
    }
    return out;
}

int32_t kvx_plan_copies(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                        const int64_t *slots, int64_t max_2d_height, kvx_copy_plan *plan)
{
    int64_t count = dense->num_tokens;
    *plan = (kvx_copy_plan){0};
    copy_shape s = shape_of(paged, dense, max_2d_height);
    kvx_run *runs = malloc((size_t)(count > 0 ? count : 1) * sizeof *runs);
    if (!runs)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "transfer: cannot allocate %lld run records",
                        (long long)count);
    int64_t num_runs = 0;
    int32_t rc = kvx_plan_runs(paged, slots, count, s.unit == KVX_COPY_RUN || s.use_2d, runs,
                               &num_runs);
    if (rc) {
        free(runs);
        return rc;
    }
    int64_t per_plane = 0, valid_tokens = 0;
    for (int64_t r = 0; r < num_runs; r++) {
        per_plane += copies_per_run(&s, &runs[r]);
        valid_tokens += runs[r].count;
    }
    int64_t planes = (int64_t)paged->num_kv * paged->num_layers;
    kvx_copy *copies = malloc((size_t)(planes * per_plane > 0 ? planes * per_plane : 1) *
                              sizeof *copies);
    if (!copies) {
        free(runs);
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "transfer: cannot allocate %lld copy records",
                        (long long)(planes * per_plane));
    }
    kvx_copy *out = copies;
    for (int64_t plane = 0; plane < planes; plane++) {
        int64_t kv = plane / paged->num_layers, layer = plane % paged->num_layers;
        char *pp = kvx_paged_plane(paged, layer, kv, s.es);
        char *dp = kvx_dense_plane(dense, layer, kv, s.es);
        for (int64_t r = 0; r < num_runs; r++)
            out = emit_run(paged, dense, &s, pp, dp, &runs[r], out);
    }
    free(runs);
    *plan = (kvx_copy_plan){copies, out - copies, planes * valid_tokens * s.row_bytes};
    return KVX_OK;
}
