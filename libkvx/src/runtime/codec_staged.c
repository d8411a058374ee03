/* codec_staged.c - the host-staged codec: see codec_staged.h. */
#include "codec_staged.h"
#include "staging_pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STAGE_IN = 1, STAGE_OUT = 2, STAGE_INOUT = 3 };
enum { MAX_ARRAYS = 5, STAGING_ALIGN = 64 };

/*
 * One array argument: `outer` x `inner` runs of run_bytes each, the run (o, i) starting at
 * user + o * outer_stride + i * inner_stride. Staged arrays are packed run after run into the
 * staging block; host arrays are used in place.
 */
typedef struct staged_array {
    const char *name;
    char *user;
    int dir;
    int64_t outer, inner, run_bytes, outer_stride, inner_stride;
    int staged;
    size_t offset; /* in the staging block */
    char *host;    /* what the CPU step uses */
} staged_array;

typedef struct staging {
    const kvx_runtime_ops *ops;
    const kvx_stream *stream;
    staged_array arrays[MAX_ARRAYS];
    int count;
    void *block;
    int pinned; /* block came from ops->host_alloc or the pool (else malloc) */
    unsigned features;
    size_t block_bytes;
    int in_flight; /* copies may be queued on the stream that no successful wait has covered */
    int entered;
    kvx_device_guard guard;
} staging;

static int64_t array_bytes(const staged_array *a) { return a->outer * a->inner * a->run_bytes; }

static void add_flat(staging *s, const char *name, const void *ptr, int64_t bytes, int dir)
{
    s->arrays[s->count++] = (staged_array){name, (char *)ptr, dir, 1, 1, bytes, 0, 0, 0, 0, NULL};
}

/* A [rows, tokens, channels] view with element strides (channels contiguous), as runs merged
 * as far as the strides allow. */
static void add_view(staging *s, const char *name, const void *ptr, int64_t rows, int64_t tokens,
                     int64_t channels, int64_t row_stride, int64_t token_stride, int64_t elem,
                     int dir)
{
    staged_array a = {name,
                      (char *)ptr,
                      dir,
                      rows,
                      tokens,
                      channels * elem,
                      row_stride * elem,
                      token_stride * elem,
                      0,
                      0,
                      NULL};
    if (a.inner == 1 || a.inner_stride == a.run_bytes) {
        a.run_bytes *= a.inner;
        a.inner = 1;
        if (a.outer == 1 || a.outer_stride == a.run_bytes) {
            a.run_bytes *= a.outer;
            a.outer = 1;
        }
    }
    s->arrays[s->count++] = a;
}

/* Enqueues every run of `a` between the caller's memory and the staging block. */
static int32_t copy_runs(staging *s, const staged_array *a, int to_device)
{
    char doing[96];
    snprintf(doing, sizeof doing, "copying %s %s for the host-staged codec", a->name,
             to_device ? "back to the device" : "to the host");
    char *packed = a->host;
    for (int64_t o = 0; o < a->outer; o++)
        for (int64_t i = 0; i < a->inner; i++) {
            char *user = a->user + o * a->outer_stride + i * a->inner_stride;
            const char *function = "";
            const uint32_t *kinds = s->ops->kind_codes;
            int64_t code = to_device ? s->ops->copy_1d(user, packed, (size_t)a->run_bytes,
                                                       kinds[KVX_COPY_HOST_TO_DEVICE],
                                                       s->stream->handle, &function)
                                     : s->ops->copy_1d(packed, user, (size_t)a->run_bytes,
                                                       kinds[KVX_COPY_DEVICE_TO_HOST],
                                                       s->stream->handle, &function);
            if (code != 0)
                return kvx_runtime_fail(s->ops, function, code, doing);
            s->in_flight = 1;
            packed += a->run_bytes;
        }
    return KVX_OK;
}

static int32_t wait_stream(staging *s)
{
    int32_t rc = kvx_runtime_synchronize(s->stream);
    if (rc == KVX_OK)
        s->in_flight = 0;
    return rc;
}

/* Waits for the stream without losing the error message already recorded (cleanup path). */
static void drain_quietly(staging *s)
{
    char saved[512];
    snprintf(saved, sizeof saved, "%s", kvx_last_error());
    wait_stream(s);
    kvx_fail(KVX_OK, "%s", saved);
}

/* Bytes one array takes in the staging block. AscendCL's rule for splitting one allocation
 * between several copies: each piece ALIGN_UP(len, 32) + 32 bytes, starting 64-byte aligned.
 * Following it costs at most 96 bytes per array on CNRT too. */
static size_t staged_piece_bytes(const staged_array *a)
{
    size_t len = ((size_t)array_bytes(a) + 31) / 32 * 32 + 32;
    return (len + STAGING_ALIGN - 1) / STAGING_ALIGN * STAGING_ALIGN;
}

/* Pinned memory where the runtime has an allocator for it, else malloc. */
static int32_t allocate_block(staging *s, size_t total)
{
    if (!(s->features & KVX_RUNTIME_HAS_PINNED)) {
        if (!(s->block = malloc(total)))
            return kvx_fail(KVX_ERR_OUT_OF_MEMORY,
                            "cannot allocate %zu bytes of staging memory "
                            "for the host-staged codec",
                            total);
        return KVX_OK;
    }
    s->block_bytes = kvx_staging_pool_round(total);
    int64_t code = s->ops->host_alloc(s->block_bytes, &s->block);
    if (code != 0) {
        s->block = NULL;
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY,
                        "%s failed with %s error %lld for %zu bytes of "
                        "staging memory for the host-staged codec",
                        s->ops->calls.host_alloc, s->ops->words.runtime, (long long)code,
                        s->block_bytes);
    }
    s->pinned = 1;
    return KVX_OK;
}

/* Makes the stream's device current, locates the arrays, allocates the staging block, stages
 * the inputs in and waits. */
static int32_t stage_in(staging *s)
{
    size_t total = 0;
    int32_t rc;
    /* First: pointer queries and pinned allocations need the stream's device current. */
    if ((rc = kvx_runtime_enter(s->ops, s->stream, &s->guard)))
        return rc;
    s->entered = 1;
    for (int k = 0; k < s->count; k++) {
        staged_array *a = &s->arrays[k];
        a->host = a->user;
        if (array_bytes(a) == 0)
            continue;
        int32_t device = -1;
        if ((rc = s->ops->locate(a->user, a->name, &device)))
            return rc;
        if (device < 0)
            continue;
        if (device != s->stream->device_index)
            return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                            "%s: expected host memory or memory of %s %d (the stream's), got %s "
                            "%d",
                            a->name, s->ops->words.device, (int)s->stream->device_index,
                            s->ops->words.device, (int)device);
        a->staged = 1;
        a->offset = total;
        total += staged_piece_bytes(a);
    }
    if (total > 0 &&
        (s->block = kvx_staging_pool_take(s->ops, s->stream->device_index, total, &s->block_bytes)))
        s->pinned = 1;
    else if (total > 0 && (rc = allocate_block(s, total)))
        return rc;
    for (int k = 0; k < s->count; k++)
        if (s->arrays[k].staged)
            s->arrays[k].host = (char *)s->block + s->arrays[k].offset;
    for (int k = 0; k < s->count; k++) {
        const staged_array *a = &s->arrays[k];
        if (a->staged && (a->dir & STAGE_IN) && (rc = copy_runs(s, a, 0))) {
            drain_quietly(s); /* copies already queued still write into the block */
            return rc;
        }
    }
    /* Even with nothing staged in: the CPU step must come after the stream's earlier work. */
    return wait_stream(s);
}

/* Copies the outputs back (after a successful CPU step) and waits. */
static int32_t stage_out(staging *s)
{
    int32_t rc;
    for (int k = 0; k < s->count; k++) {
        const staged_array *a = &s->arrays[k];
        if (a->staged && (a->dir & STAGE_OUT) && (rc = copy_runs(s, a, 1))) {
            drain_quietly(s);
            char saved[512];
            snprintf(saved, sizeof saved, "%s", kvx_last_error());
            return kvx_fail(rc,
                            "%s (outputs may be partly written: the earlier copies are "
                            "queued)",
                            saved);
        }
    }
    return wait_stream(s);
}

static void stage_end(staging *s)
{
    /* After a failed wait with copies queued the device may still access the block: it is
     * left allocated (a leak, after a runtime failure) rather than freed under a running DMA. */
    if (!s->in_flight) {
        if (s->block && s->pinned) {
            if (!kvx_staging_pool_give(s->ops, s->stream->device_index, s->block, s->block_bytes))
                s->ops->host_free(s->block);
        } else {
            free(s->block);
        }
    }
    if (s->entered)
        s->ops->leave(&s->guard);
}

static int32_t begin(staging *s, const kvx_stream *stream)
{
    memset(s, 0, sizeof *s);
    s->ops = kvx_runtime_ops_for(stream);
    if (!s->ops || !s->ops->load(&s->features))
        return KVX_ERR_NOT_AVAILABLE;
    s->stream = stream;
    return KVX_OK;
}

/* begin() for the range coder's entries, whose first array is the CDF tables. */
static int32_t begin_coder(staging *s, const kvx_stream *stream, const uint16_t *cdf,
                           int32_t cdf_len, int64_t tables)
{
    int32_t rc = begin(s, stream);
    if (!rc)
        add_flat(s, "cdf", cdf, tables * cdf_len * (int64_t)sizeof(uint16_t), STAGE_IN);
    return rc;
}

/* The strides the CPU step uses for a [rows, tokens, channels] view: the caller's when the view
 * is used in place, packed ones when it was staged (add_view packs what it copies). */
static void host_strides(const staged_array *a, int64_t num_tokens, int64_t num_channels,
                         int64_t *row_stride, int64_t *token_stride)
{
    if (a->staged) {
        *row_stride = num_tokens * num_channels;
        *token_stride = num_channels;
    }
}

/* Stages in, runs `cpu_step` (a statement list setting rc), stages out. */
#define STAGED_RUN(s, cpu_step)                                                                \
    do {                                                                                       \
        int32_t rc = stage_in(&(s));                                                           \
        if (!rc) {                                                                             \
            cpu_step;                                                                          \
        }                                                                                      \
        if (!rc)                                                                               \
            rc = stage_out(&(s));                                                              \
        stage_end(&(s));                                                                       \
        return rc;                                                                             \
    } while (0)

int32_t kvx_staged_codec_quantize(const kvx_codec_quantize_args *args, const kvx_stream *stream)
{
    staging s;
    int32_t status = begin(&s, stream);
    if (status)
        return status;
    add_view(&s, "x", args->x, args->num_rows, args->num_tokens, args->num_channels,
             args->row_stride, args->token_stride, kvx_dtype_size(args->dtype), STAGE_IN);
    int64_t tokens = args->num_rows * args->num_tokens;
    add_flat(&s, "symbols", args->symbols, tokens * args->num_channels, STAGE_OUT);
    add_flat(&s, "scales", args->scales, tokens * (int64_t)sizeof(float), STAGE_OUT);
    kvx_codec_quantize_args host = *args;
    STAGED_RUN(s, {
        host.x = (void *)s.arrays[0].host;
        host_strides(&s.arrays[0], args->num_tokens, args->num_channels, &host.row_stride,
                     &host.token_stride);
        host.symbols = (void *)s.arrays[1].host;
        host.scales = (void *)s.arrays[2].host;
        rc = kvx_cpu_backend.codec_quantize(&host, NULL);
    });
}

int32_t kvx_staged_codec_dequantize(const kvx_codec_dequantize_args *args, const kvx_stream *stream)
{
    staging s;
    int32_t status = begin(&s, stream);
    if (status)
        return status;
    int64_t tokens = args->num_rows * args->num_tokens;
    add_flat(&s, "symbols", args->symbols, tokens * args->num_channels, STAGE_IN);
    add_flat(&s, "scales", args->scales, tokens * (int64_t)sizeof(float), STAGE_IN);
    /* Every element of the view is written, and only those: packed out, scattered back. */
    add_view(&s, "out", args->out, args->num_rows, args->num_tokens, args->num_channels,
             args->row_stride, args->token_stride, kvx_dtype_size(args->dtype), STAGE_OUT);
    kvx_codec_dequantize_args host = *args;
    STAGED_RUN(s, {
        host.symbols = (void *)s.arrays[0].host;
        host.scales = (void *)s.arrays[1].host;
        host.out = (void *)s.arrays[2].host;
        host_strides(&s.arrays[2], args->num_tokens, args->num_channels, &host.row_stride,
                     &host.token_stride);
        rc = kvx_cpu_backend.codec_dequantize(&host, NULL);
    });
}

int32_t kvx_staged_codec_calculate_cdf(const kvx_codec_cdf_args *args, const kvx_stream *stream)
{
    staging s;
    int32_t status = begin(&s, stream);
    if (status)
        return status;
    int64_t tables = args->num_layers * args->num_channels;
    add_flat(&s, "symbols", args->symbols, tables * args->num_tokens, STAGE_IN);
    add_flat(&s, "cdf", args->cdf, tables * (args->num_bins + 1) * (int64_t)sizeof(uint16_t),
             STAGE_OUT);
    kvx_codec_cdf_args host = *args;
    STAGED_RUN(s, {
        host.symbols = (void *)s.arrays[0].host;
        host.cdf = (void *)s.arrays[1].host;
        rc = kvx_cpu_backend.codec_calculate_cdf(&host, NULL);
    });
}

int32_t kvx_staged_codec_encode(const kvx_codec_encode_args *args, const kvx_stream *stream)
{
    staging s;
    int64_t tables = args->num_layers * args->num_channels;
    int32_t status = begin_coder(&s, stream, args->cdf, args->cdf_len, tables);
    if (status)
        return status;
    add_flat(&s, "symbols", args->symbols, tables * args->num_tokens, STAGE_IN);
    /* Slot bytes past each stream's length are not written: staged in so they come back as
     * they were. */
    add_flat(&s, "streams", args->streams, tables * args->stream_capacity, STAGE_INOUT);
    add_flat(&s, "lengths", args->lengths, tables * (int64_t)sizeof(int32_t), STAGE_OUT);
    kvx_codec_encode_args host = *args;
    STAGED_RUN(s, {
        host.cdf = (void *)s.arrays[0].host;
        host.symbols = (void *)s.arrays[1].host;
        host.streams = (void *)s.arrays[2].host;
        host.lengths = (void *)s.arrays[3].host;
        rc = kvx_cpu_backend.codec_encode(&host, NULL);
    });
}

int32_t kvx_staged_codec_decode(const kvx_codec_decode_args *args, const kvx_stream *stream)
{
    staging s;
    int64_t tables = args->num_layers * args->num_channels;
    int32_t status = begin_coder(&s, stream, args->cdf, args->cdf_len, tables);
    if (status)
        return status;
    add_flat(&s, args->lengths ? "streams" : "bytes", args->bytes, args->num_bytes, STAGE_IN);
    if (args->lengths)
        add_flat(&s, "lengths", args->lengths, tables * (int64_t)sizeof(int32_t), STAGE_IN);
    else
        add_flat(&s, "end_offsets", args->end_offsets, tables * (int64_t)sizeof(int64_t), STAGE_IN);
    add_flat(&s, "symbols", args->symbols, tables * args->num_tokens, STAGE_OUT);
    kvx_codec_decode_args host = *args;
    STAGED_RUN(s, {
        host.cdf = (void *)s.arrays[0].host;
        host.bytes = (void *)s.arrays[1].host;
        if (args->lengths)
            host.lengths = (void *)s.arrays[2].host;
        else
            host.end_offsets = (void *)s.arrays[2].host;
        host.symbols = (void *)s.arrays[3].host;
        rc = kvx_cpu_backend.codec_decode(&host, NULL);
    });
}
