/*
 * kvx_internal.h - what the core and every backend share: error reporting, the CPU thread
 * pool, and the backend vtable. Never installed.
 */
#ifndef KVX_INTERNAL_H
#define KVX_INTERNAL_H

#include "kvx.h"

#if defined(__GNUC__)
#define KVX_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define KVX_PRINTF(fmt_index, first_arg)
#endif

/* Records a formatted message as this thread's last error and returns `status`, so that a
 * failing check reads `return kvx_fail(KVX_ERR_INVALID_ARGUMENT, "...", ...);`. */
int32_t kvx_fail(int32_t status, const char *fmt, ...) KVX_PRINTF(2, 3);

/* Clears this thread's last error; every public entry point calls it first. */
void kvx_clear_error(void);

/* ---------------------------------------------------------------- thread pool */

/* Runs fn(ctx, begin, end) over [0, count) split into contiguous ranges of at least `grain`
 * items, on the pool's threads and the caller's. Returns when every range is done. When the pool
 * is busy serving another caller, the whole range runs on the calling thread instead. */
typedef void (*kvx_range_fn)(void *ctx, int64_t begin, int64_t end);
void kvx_parallel_for(int64_t count, int64_t grain, kvx_range_fn fn, void *ctx);

/* ---------------------------------------------------------------- backends */

/* One table per backend; a NULL entry means "unsupported on this backend". Arguments have
 * already passed the backend-independent checks in src/core/. */
typedef struct kvx_backend {
    const char *name;
    int32_t device_type;
    /* 1 if usable now; else 0 with kvx_fail() already called to say why. */
    int32_t (*available)(void);
    int32_t (*transfer)(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                        const int64_t *slot_mapping, int32_t direction, const kvx_stream *stream);
    /* KVX-BACKEND-CODEC-ENTRIES */
    /* KVX-BACKEND-ROPE-ENTRIES */
} kvx_backend;

/* The backend that serves `stream` (NULL = CPU), or NULL after kvx_fail() with the reason. */
const kvx_backend *kvx_backend_for(const kvx_stream *stream);

extern const kvx_backend kvx_cpu_backend;

#endif /* KVX_INTERNAL_H */
