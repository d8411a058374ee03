/*
 * runtime_ops.h - what a runtime-loaded device backend (Ascend, CNRT) tells the shared copy
 * engine about its vendor runtime: one table of small operations, each a thin wrapper over one
 * vendor call. Everything else (where memory lives, device selection around a call, planning,
 * submission with its fallbacks, keeping descriptor memory alive, waiting, the host-staged
 * codec) is written once, in this folder, against the table.
 *
 * Vendor operations return 0 or the runtime's own error code and name the function they called
 * in *function, so that the engine can say "aclrtMemcpyAsync failed with AscendCL error 507000
 * at copy 3 of 12". Never installed.
 */
#ifndef KVX_RUNTIME_OPS_H
#define KVX_RUNTIME_OPS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/kvx_internal.h"

/* The direction of one copy, as the engine asks for it; each backend maps it to its runtime's
 * enum. */
typedef enum kvx_copy_kind {
    KVX_COPY_HOST_TO_DEVICE,
    KVX_COPY_DEVICE_TO_HOST,
    KVX_COPY_DEVICE_TO_DEVICE,
    KVX_COPY_KINDS
} kvx_copy_kind;

#define KVX_COPY_KIND_BIT(kind) (1u << (kind))

/* Optional functions the loaded runtime has (kvx_runtime_ops.load). */
enum {
    KVX_RUNTIME_HAS_2D = 1,     /* copy_2d */
    KVX_RUNTIME_HAS_BATCH = 2,  /* copy_batch */
    KVX_RUNTIME_HAS_PINNED = 4, /* host_alloc, host_free */
    KVX_RUNTIME_HAS_EVENTS = 8  /* event_* (else the engine synchronises the stream) */
};

/* What enter() found on the thread and leave() puts back. */
typedef struct kvx_device_guard {
    int32_t previous; /* the device that was current */
    void *context;    /* the runtime's own notion of it, where it has one (AscendCL context) */
    int restore;      /* 0: nothing to put back (already current, or the thread had none) */
} kvx_device_guard;

/* `height` rows of `width` bytes, row r from src + r * src_pitch to dst + r * dst_pitch. */
typedef struct kvx_copy_grid {
    void *dst;
    const void *src;
    size_t dst_pitch, src_pitch, width, height;
} kvx_copy_grid;

/* One batch call's descriptors: they live in memory the engine keeps until the stream has
 * passed the call (the runtime may read them then). `attrs` is batch_attr_bytes of that memory
 * for the backend's own attribute records. */
typedef struct kvx_batch_desc {
    void **dsts;
    size_t *dest_maxs;
    void **srcs;
    size_t *sizes;
    size_t count;
    void *attrs;
    size_t *attr_indexes;
    kvx_copy_kind kind;
    int32_t device;
} kvx_batch_desc;

/* What the engine learnt at run time about what the runtime refuses. */
typedef struct kvx_runtime_state {
    atomic_int batch_refused;                 /* the chip has no batch copies */
    atomic_int refused_2d[KVX_COPY_KINDS];    /* 2D copies of that kind were refused */
} kvx_runtime_state;

/* The names of the vendor calls behind the operations whose call is always the same one. */
typedef struct kvx_runtime_names {
    const char *copy_2d, *host_alloc, *event_create, *event_record, *sync_stream;
} kvx_runtime_names;

/* How messages name things. */
typedef struct kvx_runtime_words {
    const char *backend; /* "ascend" */
    const char *runtime; /* "AscendCL": whose error codes */
    const char *device;  /* "NPU" */
    const char *stream;  /* "stream" */
} kvx_runtime_words;

typedef struct kvx_runtime_ops {
    kvx_runtime_words words;
    kvx_runtime_names calls;
    /* Loads the runtime: 1 and *features = KVX_RUNTIME_HAS_* bits, or 0 after
     * kvx_fail(KVX_ERR_NOT_AVAILABLE, why). Cheap once loaded; thread-safe. */
    int (*load)(unsigned *features);
    /* *device = the device holding ptr, or -1 for host memory (pinned or not); a kvx status. */
    int32_t (*locate)(const void *ptr, const char *what, int32_t *device);
    /* Makes `device` current on this thread (0, or the failing call's code and name); leave()
     * puts back what the guard recorded. */
    int64_t (*enter)(int32_t device, kvx_device_guard *guard, const char **function);
    void (*leave)(const kvx_device_guard *guard);

    /* Asynchronous copies on `stream` (the runtime's handle); `kind` is one of kind_codes. */
    uint32_t kind_codes[KVX_COPY_KINDS]; /* the runtime's value for each kvx_copy_kind */
    int64_t (*copy_1d)(void *dst, const void *src, size_t bytes, uint32_t kind, void *stream,
                       const char **function);
    int64_t (*copy_2d)(const kvx_copy_grid *grid, uint32_t kind, void *stream);
    unsigned copy_2d_kinds; /* KVX_COPY_KIND_BITs the runtime documents 2D copies for */
    int64_t max_2d_height;  /* rows per 2D call */
    /* Host <-> device only; *fail_index names the failing copy where the runtime says. */
    int64_t (*copy_batch)(const kvx_batch_desc *batch, void *stream, const char **function,
                          size_t *fail_index);
    size_t batch_attr_bytes;
    /* Whether an error code of copy_2d / copy_batch means "not this kind of copy here" (nothing
     * was queued; the engine copies another way and stops asking); NULL: never. */
    int (*refuses_2d)(int64_t code);
    int (*refuses_batch)(int64_t code);
    /* Device-to-device copies whose endpoints are not both aligned to this are refused on chip
     * (1: no such rule). */
    size_t device_copy_alignment;

    /* Page-locked host memory. */
    int64_t (*host_alloc)(size_t bytes, void **ptr);
    void (*host_free)(void *ptr);

    /* Events mark a point of a stream. One is created with its device current and only ever
     * recorded on streams of that device. done/wait return 1 when the point was passed. */
    int64_t (*event_create)(void **event);
    int64_t (*event_record)(void *event, void *stream);
    int (*event_done)(void *event);
    int (*event_wait)(void *event);
    void (*event_destroy)(void *event);

    /* Waits for the stream (NULL: the current device's default stream). */
    int64_t (*sync_stream)(void *stream);

    kvx_runtime_state *state;
} kvx_runtime_ops;

/* Makes stream->device_index current (ops->enter), failing with KVX_ERR_DEVICE that names the
 * vendor call. */
int32_t kvx_runtime_enter(const kvx_runtime_ops *ops, const kvx_stream *stream,
                          kvx_device_guard *guard);

/* In a backend's ops table: its static functions of these names, bound to their fields. */
#define KVX_RUNTIME_OPS_FUNCTIONS                                                              \
    .load = load, .locate = locate, .enter = enter, .leave = leave, .copy_1d = copy_1d,       \
    .copy_2d = copy_2d, .host_alloc = host_alloc, .host_free = host_free

/* KVX_ERR_DEVICE: "<function> failed with <runtime> error <code> while <doing>". */
int32_t kvx_runtime_fail(const kvx_runtime_ops *ops, const char *function, int64_t code,
                         const char *doing);

/* The runtime ops of the backend serving `stream` (its vtable's `staging`), or NULL after
 * kvx_fail() saying why. */
const kvx_runtime_ops *kvx_runtime_ops_for(const kvx_stream *stream);

/* Vtable entries (copy_engine.c, stream_wait.c); they find the ops through the stream. */
int32_t kvx_runtime_transfer(const kvx_transfer_args *args, const kvx_stream *stream);
int32_t kvx_runtime_synchronize(const kvx_stream *stream);
int32_t kvx_runtime_copy_batch(const kvx_copy_batch_args *args, const kvx_stream *stream);
/* Page-locked host memory through host_alloc/host_free, with `device` current for the call
 * (runtime_ops.c). */
int32_t kvx_runtime_host_alloc(const kvx_host_alloc_args *args, const kvx_stream *device);
int32_t kvx_runtime_host_free(const kvx_host_free_args *args, const kvx_stream *device);

#endif /* KVX_RUNTIME_OPS_H */
