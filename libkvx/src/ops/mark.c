/*
 * mark.c - kvx_mark_record, kvx_mark_passed and kvx_mark_release: the mark remembers the backend
 * and the stream it was recorded on, so that asking about it or freeing it later reaches the same
 * runtime and device whatever stream the caller uses meanwhile. Once the runtime said the stream
 * passed it, that is remembered too: a point passed stays passed, so neither later questions
 * nor the release need to ask the runtime again.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "../core/kvx_internal.h"

struct kvx_mark {
    const kvx_backend *backend; /* NULL: passed when recorded (a synchronous backend) */
    kvx_stream stream;          /* where it was recorded */
    void *event;                /* the backend's own record of the point */
    atomic_int passed;          /* the backend answered 1 */
};

int32_t kvx_mark_record(const kvx_stream *stream, kvx_mark **mark)
{
    kvx_clear_error();
    if (!mark)
        return FAIL_ARG("mark: expected where to store the new mark, got NULL");
    const kvx_backend *backend = kvx_backend_for(stream);
    if (!backend)
        return KVX_ERR_NOT_AVAILABLE;
    /* A backend without `synchronize` has done all of a call's work when the call returns, so
     * nothing queued on its streams can still be ahead of the mark. */
    int asynchronous = backend->synchronize != NULL;
    if (asynchronous && !backend->mark_record)
        return kvx_fail(KVX_ERR_UNSUPPORTED, "mark_record: not supported by the %s backend",
                        backend->name);
    kvx_mark *m = calloc(1, sizeof *m);
    if (!m)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY, "mark: cannot allocate a mark");
    m->stream = stream ? *stream : (kvx_stream){KVX_DEVICE_CPU, 0, NULL};
    if (asynchronous) {
        int32_t rc = backend->mark_record(&(kvx_mark_args){NULL, &m->event, 0}, &m->stream);
        if (rc) {
            free(m);
            return rc;
        }
        m->backend = backend;
    }
    *mark = m;
    return KVX_OK;
}

int32_t kvx_mark_passed(const kvx_mark *mark)
{
    kvx_clear_error();
    if (!mark)
        return FAIL_ARG("mark: expected a mark from kvx_mark_record, got NULL");
    if (!mark->backend || atomic_load(&mark->passed))
        return 1;
    int32_t rc = mark->backend->mark_passed(&(kvx_mark_args){mark->event, NULL, 0}, &mark->stream);
    if (rc == 1) /* the caller's mark, allocated here: only the memo changes */
        atomic_store(&((kvx_mark *)mark)->passed, 1);
    return rc;
}

int32_t kvx_mark_release(kvx_mark *mark)
{
    kvx_clear_error();
    if (!mark)
        return KVX_OK;
    int32_t rc = KVX_OK;
    if (mark->backend)
        rc = mark->backend->mark_release(
            &(kvx_mark_args){mark->event, NULL, atomic_load(&mark->passed)}, &mark->stream);
    free(mark); /* a failed release leaves only the runtime's event behind */
    return rc;
}
