/*
 * copy_engine.c - kvx_transfer and kvx_copy_batch for the runtime-loaded backends (Ascend,
 * CNRT), written once against their runtime ops (runtime_ops.h). docs/backends-ascend-cnrt.md
 * has the design. kvx_copy_batch (at the end) turns the caller's ranges into a plan per kind of
 * copy and submits each as below.
 *
 * With the stream's device current: locate the paged cache, the dense buffer and the slot
 * mapping (the runtime says where memory lives); plan the whole transfer on the host
 * (src/core/transfer_plan.c), which reads the slot mapping once and checks every slot, so an
 * out-of-range slot fails the call before anything is queued; decide everything that can be
 * decided before the first copy is queued (2D copies only for the kinds the runtime documents
 * and has not refused, batch or loop, host memory for the device-to-device copies the runtime
 * would refuse on chip); then submit, in plan order:
 *   - host <-> device with no 2D copy in the plan: one batch call where the runtime has one;
 *     if the chip lacks it (the runtime says so, nothing queued) the loop below, from then on;
 *   - otherwise one 1D or 2D copy per planned copy. A 2D copy the runtime refuses (nothing
 *     queued by it) goes as its rows, and that kind of copy is not asked for again: a refusal
 *     never replays queued copies nor plans again;
 *   - a device-to-device piece whose endpoints lack the alignment the runtime needs on chip
 *     goes through host memory: device -> host, then host -> device, in stream order.
 * Memory the runtime may read after this call returned (batch descriptors, the bounce block)
 * is kept until the stream has passed the copies (stream_wait.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/transfer_plan.h"
#include "stream_wait.h"

typedef struct engine {
    const kvx_runtime_ops *ops;
    unsigned features;
    const kvx_stream *stream;
    int32_t direction;
    kvx_copy_kind kind;
    kvx_copy_plan plan;
    int64_t current; /* the copy being submitted, for messages */
    char *bounce;    /* host memory for unaligned device-to-device pieces */
    size_t bounce_used;
    kvx_release_fn bounce_release;
    const char *op;              /* the entry point, for messages */
    const int64_t *caller_index; /* kvx_copy_batch: each copy's range in the caller's arrays */
} engine;

enum { SUBMIT_FALL_BACK = 1 };

/* ---------------------------------------------------------------- where memory lives */

static int32_t check_paged(const engine *e, const void *base)
{
    const kvx_runtime_ops *ops = e->ops;
    int32_t device = -1, rc = ops->locate(base, "paged->bases[0]", &device);
    if (rc)
        return rc;
    if (device < 0)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "paged->bases[0]: expected %s memory for the %s backend, got host memory",
                        ops->words.device, ops->words.backend);
    if (device != e->stream->device_index)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "paged->bases[0]: expected memory of %s %d (the %s's), got %s %d",
                        ops->words.device, (int)e->stream->device_index, ops->words.stream,
                        ops->words.device, (int)device);
    return KVX_OK;
}

/* *on_device = whether the dense buffer is device memory (of the stream's device). */
static int32_t check_dense(const engine *e, const void *base, int *on_device)
{
    const kvx_runtime_ops *ops = e->ops;
    int32_t device = -1, rc = ops->locate(base, "dense->base", &device);
    if (rc)
        return rc;
    if (device >= 0 && device != e->stream->device_index)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "dense->base: expected host memory or memory of %s %d, got %s %d",
                        ops->words.device, (int)e->stream->device_index, ops->words.device,
                        (int)device);
    *on_device = device >= 0;
    return KVX_OK;
}

static int32_t check_slots(const engine *e, const int64_t *slots)
{
    const kvx_runtime_ops *ops = e->ops;
    int32_t device = -1, rc = ops->locate(slots, "slot_mapping", &device);
    if (rc)
        return rc;
    if (device >= 0)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "slot_mapping: expected host memory (the %s backend plans on the host), "
                        "got %s memory",
                        ops->words.backend, ops->words.device);
    return KVX_OK;
}

/* Sets e->kind from where the dense buffer lives and the direction. */
static int32_t check_locations(engine *e, const kvx_transfer_args *args)
{
    int dense_on_device = 0;
    int32_t rc;
    if ((rc = check_paged(e, args->paged->bases[0])) ||
        (rc = check_dense(e, args->dense->base, &dense_on_device)) ||
        (rc = check_slots(e, args->slot_mapping)))
        return rc;
    e->kind = dense_on_device                         ? KVX_COPY_DEVICE_TO_DEVICE
              : args->direction == KVX_PAGED_TO_DENSE ? KVX_COPY_DEVICE_TO_HOST
                                                      : KVX_COPY_HOST_TO_DEVICE;
    return KVX_OK;
}

/* ---------------------------------------------------------------- decisions before submitting */

/* 2D copies for this kind: documented by the runtime, present, not refused so far. Not for
 * device-to-device copies under an alignment rule: those are checked piece by piece. */
static int plan_2d(const engine *e)
{
    const kvx_runtime_ops *ops = e->ops;
    if (e->kind == KVX_COPY_DEVICE_TO_DEVICE && ops->device_copy_alignment > 1)
        return 0;
    return (e->features & KVX_RUNTIME_HAS_2D) &&
           (ops->copy_2d_kinds & KVX_COPY_KIND_BIT(e->kind)) &&
           !atomic_load(&ops->state->refused_2d[e->kind]);
}

static int on_chip_refused(const engine *e, const void *dst, const void *src)
{
    size_t alignment = e->ops->device_copy_alignment;
    return e->kind == KVX_COPY_DEVICE_TO_DEVICE && alignment > 1 &&
           (((uintptr_t)dst | (uintptr_t)src) % alignment) != 0;
}

static void endpoints(const engine *e, const kvx_copy *c, void **dst, const void **src)
{
    int to_dense = e->direction == KVX_PAGED_TO_DENSE;
    *dst = to_dense ? c->dense : c->paged;
    *src = to_dense ? c->paged : c->dense;
}

static int has_2d_copies(const kvx_copy_plan *plan)
{
    for (int64_t i = 0; i < plan->num_copies; i++)
        if (plan->copies[i].height > 1)
            return 1;
    return 0;
}

static int batch_usable(const engine *e)
{
    return e->kind != KVX_COPY_DEVICE_TO_DEVICE && (e->features & KVX_RUNTIME_HAS_BATCH) &&
           !atomic_load(&e->ops->state->batch_refused) && !has_2d_copies(&e->plan);
}

/* Host memory for every device-to-device piece the runtime would refuse on chip, allocated
 * before anything is queued (pinned where the runtime can, else malloc). */
static int32_t reserve_bounce(engine *e)
{
    size_t bytes = 0;
    for (int64_t i = 0; i < e->plan.num_copies; i++) {
        void *dst;
        const void *src;
        endpoints(e, &e->plan.copies[i], &dst, &src);
        if (on_chip_refused(e, dst, src))
            bytes += (size_t)e->plan.copies[i].bytes; /* height 1: no 2D plan here */
    }
    if (bytes == 0)
        return KVX_OK;
    void *block = NULL;
    e->bounce_release = free;
    if ((e->features & KVX_RUNTIME_HAS_PINNED) && e->ops->host_alloc(bytes, &block) == 0)
        e->bounce_release = e->ops->host_free;
    else if (!(block = malloc(bytes)))
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY,
                        "%s: cannot allocate %zu bytes of host memory for unaligned %s-to-%s "
                        "copies",
                        e->op, bytes, e->ops->words.device, e->ops->words.device);
    e->bounce = block;
    return KVX_OK;
}

/* ---------------------------------------------------------------- submission */

/* A kvx_copy_batch copy failed: named by its range, since the plan is the caller's ranges
 * grouped by kind. */
static int32_t range_failed(const engine *e, const char *function, int64_t code, int64_t copy)
{
    long long range = (long long)e->caller_index[copy];
    return kvx_fail(KVX_ERR_DEVICE,
                    "%s failed with %s error %lld copying srcs[%lld] to dsts[%lld] (the copies "
                    "submitted before it are queued)",
                    function, e->ops->words.runtime, (long long)code, range, range);
}

static int32_t copy_failed(const engine *e, const char *function, int64_t code)
{
    if (e->caller_index)
        return range_failed(e, function, code, e->current);
    return kvx_fail(KVX_ERR_DEVICE,
                    "%s failed with %s error %lld at copy %lld of %lld (the earlier ones are "
                    "queued)",
                    function, e->ops->words.runtime, (long long)code, (long long)e->current,
                    (long long)e->plan.num_copies);
}

static int32_t copy_1d(const engine *e, void *dst, const void *src, size_t bytes,
                       kvx_copy_kind kind)
{
    const char *function = "";
    int64_t code = e->ops->copy_1d(dst, src, bytes, e->ops->kind_codes[kind], e->stream->handle,
                                   &function);
    return code == 0 ? KVX_OK : copy_failed(e, function, code);
}

/* One contiguous piece: on chip, or through the bounce block when the runtime would refuse it
 * there. */
static int32_t submit_piece(engine *e, void *dst, const void *src, size_t bytes)
{
    if (!on_chip_refused(e, dst, src))
        return copy_1d(e, dst, src, bytes, e->kind);
    char *host = e->bounce + e->bounce_used;
    e->bounce_used += bytes;
    int32_t rc = copy_1d(e, host, src, bytes, KVX_COPY_DEVICE_TO_HOST);
    return rc ? rc : copy_1d(e, dst, host, bytes, KVX_COPY_HOST_TO_DEVICE);
}

/* One 2D copy, or its rows when the runtime refuses this kind of 2D copy. */
static int32_t submit_grid(engine *e, const kvx_copy *c, void *dst, const void *src)
{
    int to_dense = e->direction == KVX_PAGED_TO_DENSE;
    kvx_copy_grid grid = {dst,
                          src,
                          (size_t)(to_dense ? c->dense_pitch : c->paged_pitch),
                          (size_t)(to_dense ? c->paged_pitch : c->dense_pitch),
                          (size_t)c->bytes,
                          (size_t)c->height};
    const kvx_runtime_ops *ops = e->ops;
    if (!atomic_load(&ops->state->refused_2d[e->kind])) {
        int64_t code = ops->copy_2d(&grid, ops->kind_codes[e->kind], e->stream->handle);
        if (code == 0)
            return KVX_OK;
        if (!ops->refuses_2d || !ops->refuses_2d(code))
            return copy_failed(e, ops->calls.copy_2d, code);
        atomic_store(&ops->state->refused_2d[e->kind], 1);
    }
    int32_t rc = KVX_OK;
    for (size_t r = 0; r < grid.height && !rc; r++)
        rc = submit_piece(e, (char *)dst + r * grid.dst_pitch,
                          (const char *)src + r * grid.src_pitch, grid.width);
    return rc;
}

static int32_t submit_loop(engine *e)
{
    for (e->current = 0; e->current < e->plan.num_copies; e->current++) {
        const kvx_copy *c = &e->plan.copies[e->current];
        void *dst;
        const void *src;
        endpoints(e, c, &dst, &src);
        int32_t rc = c->height > 1 ? submit_grid(e, c, dst, src)
                                   : submit_piece(e, dst, src, (size_t)c->bytes);
        if (rc)
            return rc;
    }
    return KVX_OK;
}

/* One batch call for every copy; SUBMIT_FALL_BACK when the chip has no batch copies. */
static int32_t submit_batch(engine *e)
{
    const kvx_runtime_ops *ops = e->ops;
    size_t n = (size_t)e->plan.num_copies;
    /* One block: pointers, sizes, the attribute index, then the backend's attribute records. */
    size_t bytes = n * (2 * sizeof(void *) + 2 * sizeof(size_t)) + sizeof(size_t) +
                   ops->batch_attr_bytes;
    char *block = malloc(bytes);
    if (!block)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes of batch descriptors",
                        e->op, bytes);
    kvx_batch_desc batch = {(void **)block,         NULL, NULL, NULL, n, NULL, NULL, e->kind,
                            e->stream->device_index};
    batch.srcs = batch.dsts + n;
    batch.dest_maxs = (size_t *)(batch.srcs + n);
    batch.sizes = batch.dest_maxs + n;
    batch.attr_indexes = batch.sizes + n;
    batch.attrs = batch.attr_indexes + 1;
    memset(batch.attrs, 0, ops->batch_attr_bytes);
    *batch.attr_indexes = 0;
    for (size_t i = 0; i < n; i++) {
        const void *src;
        endpoints(e, &e->plan.copies[i], &batch.dsts[i], &src);
        batch.srcs[i] = (void *)src;
        batch.dest_maxs[i] = batch.sizes[i] = (size_t)e->plan.copies[i].bytes;
    }
    const char *function = "";
    size_t fail_index = SIZE_MAX;
    int64_t code = ops->copy_batch(&batch, e->stream->handle, &function, &fail_index);
    if (code != 0 && ops->refuses_batch && ops->refuses_batch(code)) {
        atomic_store(&ops->state->batch_refused, 1);
        free(block);
        return SUBMIT_FALL_BACK;
    }
    if (code != 0) {
        /* Part of the batch may have been queued: wait before the block is freed. */
        kvx_release_after_sync(ops, e->stream->handle, block, free);
        if (fail_index < n && e->caller_index)
            return range_failed(e, function, code, (int64_t)fail_index);
        if (fail_index != SIZE_MAX)
            return kvx_fail(KVX_ERR_DEVICE, "%s failed with %s error %lld at copy %zu of %zu",
                            function, ops->words.runtime, (long long)code, fail_index, n);
        return kvx_runtime_fail(ops, function, code,
                                e->caller_index ? "submitting the ranges' copies"
                                                : "submitting the transfer's copies");
    }
    return kvx_keep_until_passed(ops, e->stream->device_index, e->stream->handle, block, free);
}

static int32_t submit(engine *e)
{
    int32_t rc;
    if (batch_usable(e) && (rc = submit_batch(e)) != SUBMIT_FALL_BACK)
        return rc;
    if ((rc = reserve_bounce(e)))
        return rc;
    rc = submit_loop(e);
    if (!e->bounce)
        return rc;
    if (rc == KVX_OK)
        return kvx_keep_until_passed(e->ops, e->stream->device_index, e->stream->handle, e->bounce,
                                     e->bounce_release);
    kvx_release_after_sync(e->ops, e->stream->handle, e->bounce, e->bounce_release);
    return rc;
}

/* ---------------------------------------------------------------- the entry */

static int32_t transfer_on_device(engine *e, const kvx_transfer_args *args)
{
    int32_t rc = check_locations(e, args);
    if (rc)
        return rc;
    int64_t max_height = plan_2d(e) ? e->ops->max_2d_height : 1;
    if ((rc = kvx_plan_copies(args->paged, args->dense, args->slot_mapping, max_height, &e->plan)))
        return rc;
    if (e->plan.num_copies > 0) {
        kvx_reap_passed(1);
        rc = submit(e);
    }
    free(e->plan.copies);
    return rc;
}

/* Loads the stream's runtime into e, makes the stream's device current around body(e, args),
 * and puts the previous device back. */
static int32_t on_device(engine *e, int32_t (*body)(engine *, const void *), const void *args)
{
    if (!e->ops || !e->ops->load(&e->features))
        return KVX_ERR_NOT_AVAILABLE;
    kvx_device_guard guard;
    int32_t rc = kvx_runtime_enter(e->ops, e->stream, &guard);
    if (rc)
        return rc;
    rc = body(e, args);
    e->ops->leave(&guard);
    return rc;
}

static int32_t transfer_body(engine *e, const void *args) { return transfer_on_device(e, args); }

int32_t kvx_runtime_transfer(const kvx_transfer_args *args, const kvx_stream *stream)
{
    engine e = {.ops = kvx_runtime_ops_for(stream),
                .stream = stream,
                .direction = args->direction,
                .op = "transfer"};
    return on_device(&e, transfer_body, args);
}

/* ---------------------------------------------------------------- kvx_copy_batch */

/* Where range r goes: *kind from where its ends live, each host memory or memory of the
 * stream's device, and not both host memory. */
static int32_t range_kind(const engine *e, const kvx_copy_range *r, kvx_copy_kind *kind)
{
    const kvx_runtime_ops *ops = e->ops;
    const void *ends[2] = {r->src, r->dst};
    const char *names[2] = {"srcs", "dsts"};
    int32_t device[2] = {-1, -1};
    for (int k = 0; k < 2; k++) {
        char what[48];
        snprintf(what, sizeof what, "%s[%lld]", names[k], (long long)r->index);
        int32_t rc = ops->locate(ends[k], what, &device[k]);
        if (rc)
            return rc;
        if (device[k] >= 0 && device[k] != e->stream->device_index)
            return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                            "%s: expected host memory or memory of %s %d (the %s's), got %s %d",
                            what, ops->words.device, (int)e->stream->device_index,
                            ops->words.stream, ops->words.device, (int)device[k]);
    }
    if (device[0] < 0 && device[1] < 0)
        return kvx_fail(KVX_ERR_UNSUPPORTED,
                        "srcs[%lld] and dsts[%lld]: both host memory, and %s has no asynchronous "
                        "host-to-host copy on a %s (copy host ranges with a NULL stream)",
                        (long long)r->index, (long long)r->index, ops->words.runtime,
                        ops->words.stream);
    *kind = device[0] < 0   ? KVX_COPY_HOST_TO_DEVICE
            : device[1] < 0 ? KVX_COPY_DEVICE_TO_HOST
                            : KVX_COPY_DEVICE_TO_DEVICE;
    return KVX_OK;
}

/* The ranges of one kind as a plan the submission above takes: the device end as the paged
 * side (the source for device-to-device copies), in the caller's order. */
static int64_t plan_kind(const kvx_copy_batch_args *args, const kvx_copy_kind *kinds,
                         kvx_copy_kind kind, kvx_copy *copies, int64_t *index)
{
    int64_t m = 0;
    for (int64_t i = 0; i < args->count; i++) {
        const kvx_copy_range *r = &args->ranges[i];
        if (kinds[i] != kind)
            continue;
        char *src = (char *)r->src, *dst = r->dst;
        int to_device = kind == KVX_COPY_HOST_TO_DEVICE;
        copies[m] = (kvx_copy){to_device ? dst : src, to_device ? src : dst, r->bytes, 1, 0, 0};
        index[m++] = r->index;
    }
    return m;
}

/* Every range located before anything is queued (a refused range queues nothing); then one
 * submission per kind. The ranges do not overlap (src/ops/copy.c), so grouping them by kind,
 * which gives one batch call per direction where the runtime has batches, changes no result. */
static int32_t copy_on_device(engine *e, const kvx_copy_batch_args *args)
{
    size_t n = (size_t)args->count;
    kvx_copy_kind *kinds = malloc(n * sizeof *kinds);
    kvx_copy *copies = malloc(n * sizeof *copies);
    int64_t *index = malloc(n * sizeof *index);
    int32_t rc = KVX_OK;
    if (!kinds || !copies || !index)
        rc = kvx_fail(KVX_ERR_OUT_OF_MEMORY, "copy_batch: cannot allocate the plan of %zu ranges",
                      n);
    for (size_t i = 0; i < n && !rc; i++)
        rc = range_kind(e, &args->ranges[i], &kinds[i]);
    if (!rc)
        kvx_reap_passed(1);
    e->caller_index = index;
    for (int kind = 0; kind < KVX_COPY_KINDS && !rc; kind++) {
        int64_t m = plan_kind(args, kinds, (kvx_copy_kind)kind, copies, index);
        if (m == 0)
            continue;
        e->kind = (kvx_copy_kind)kind;
        e->direction = kind == KVX_COPY_HOST_TO_DEVICE ? KVX_DENSE_TO_PAGED : KVX_PAGED_TO_DENSE;
        e->plan = (kvx_copy_plan){copies, m, 0};
        e->bounce = NULL;
        e->bounce_used = 0;
        rc = submit(e);
    }
    free(kinds);
    free(copies);
    free(index);
    return rc;
}

static int32_t copy_body(engine *e, const void *args) { return copy_on_device(e, args); }

int32_t kvx_runtime_copy_batch(const kvx_copy_batch_args *args, const kvx_stream *stream)
{
    engine e = {.ops = kvx_runtime_ops_for(stream), .stream = stream, .op = "copy_batch"};
    return on_device(&e, copy_body, args);
}
