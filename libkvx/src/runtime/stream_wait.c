/* stream_wait.c - see stream_wait.h; also kvx_synchronize and stream marks for the
 * runtime-loaded backends. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "stream_wait.h"

typedef struct pending {
    const kvx_runtime_ops *ops;
    int32_t device;
    void *event;
    void *block;
    kvx_release_fn release;
    struct pending *next;
} pending;

/* A spare event, reused only on its own runtime and device. */
typedef struct spare_event {
    const kvx_runtime_ops *ops;
    int32_t device;
    void *event;
} spare_event;

enum { MAX_PENDING = 64, MAX_SPARE_EVENTS = 16 };

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static pending *pending_head; /* oldest first */
static int pending_count;
static spare_event spares[MAX_SPARE_EVENTS];
static int spare_count;

/* Call with pending_lock held. */
static void retire_event(const kvx_runtime_ops *ops, int32_t device, void *event)
{
    if (spare_count < MAX_SPARE_EVENTS)
        spares[spare_count++] = (spare_event){ops, device, event};
    else
        ops->event_destroy(event);
}

/* An event of this runtime and device, spare or new. Call with pending_lock held. */
static int64_t take_event(const kvx_runtime_ops *ops, int32_t device, void **event,
                          const char **function)
{
    for (int i = spare_count - 1; i >= 0; i--)
        if (spares[i].ops == ops && spares[i].device == device) {
            *event = spares[i].event;
            spares[i] = spares[--spare_count];
            return 0;
        }
    *event = NULL;
    *function = ops->calls.event_create;
    return ops->event_create(event);
}

/* Whether the stream passed `event`; a failed query counts as "not yet". */
static int event_passed(const kvx_runtime_ops *ops, void *event)
{
    int passed = 0;
    return ops->event_query(event, &passed) == 0 && passed;
}

static void reap_locked(int wait)
{
    pending **link = &pending_head;
    while (*link) {
        pending *p = *link;
        int done = event_passed(p->ops, p->event);
        if (!done && wait && pending_count >= MAX_PENDING && link == &pending_head)
            done = p->ops->event_wait(p->event);
        if (!done) {
            link = &p->next;
            continue;
        }
        *link = p->next;
        pending_count--;
        retire_event(p->ops, p->device, p->event);
        if (p->release)
            p->release(p->block);
        free(p);
    }
}

void kvx_reap_passed(int wait)
{
    pthread_mutex_lock(&pending_lock);
    reap_locked(wait);
    pthread_mutex_unlock(&pending_lock);
}

int64_t kvx_release_after_sync(const kvx_runtime_ops *ops, void *stream, void *block,
                               kvx_release_fn release)
{
    int64_t sync = ops->sync_stream(stream);
    if (sync == 0)
        release(block);
    return sync;
}

/* Appends a block whose event was recorded. Call with pending_lock held. */
static void append_locked(pending *p)
{
    pending **tail = &pending_head;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    pending_count++;
}

/* An event of (ops, device), spare or new, recorded on the stream: 0, or the failing vendor
 * call's code and name. Call with pending_lock held and `device` current. */
static int64_t record_locked(const kvx_runtime_ops *ops, int32_t device, void *stream, void **event,
                             const char **function)
{
    int64_t rc = take_event(ops, device, event, function);
    if (rc == 0) {
        *function = ops->calls.event_record;
        rc = ops->event_record(*event, stream);
    }
    if (rc != 0 && *event)
        retire_event(ops, device, *event); /* not recorded: nothing is pending on it */
    return rc;
}

/* Records an event of (ops, device) on the stream and queues the block behind it: 0, or the
 * failing vendor call's code and name. */
static int64_t track(const kvx_runtime_ops *ops, int32_t device, void *stream, pending *p,
                     const char **function)
{
    pthread_mutex_lock(&pending_lock);
    int64_t rc = record_locked(ops, device, stream, &p->event, function);
    if (rc == 0)
        append_locked(p);
    pthread_mutex_unlock(&pending_lock);
    return rc;
}

int32_t kvx_keep_until_passed(const kvx_runtime_ops *ops, int32_t device, void *stream, void *block,
                              kvx_release_fn release)
{
    unsigned features = 0;
    ops->load(&features);
    pending *p = (features & KVX_RUNTIME_HAS_EVENTS) ? malloc(sizeof *p) : NULL;
    const char *function = "";
    int64_t rc = 0;
    if (p) {
        *p = (pending){ops, device, NULL, block, release, NULL};
        if ((rc = track(ops, device, stream, p, &function)) == 0)
            return KVX_OK;
        free(p);
    }
    /* No event (none in this runtime, no memory for the record, or a failed call): wait. */
    int64_t sync = kvx_release_after_sync(ops, stream, block, release);
    if (rc != 0)
        return kvx_runtime_fail(ops, function, rc,
                                "tracking queued copies (the stream was synchronised instead)");
    if (sync != 0)
        return kvx_runtime_fail(ops, ops->calls.sync_stream, sync, "waiting for queued copies");
    return KVX_OK;
}

int32_t kvx_runtime_synchronize(const kvx_stream *stream)
{
    const kvx_runtime_ops *ops = kvx_runtime_ops_for(stream);
    if (!ops)
        return KVX_ERR_NOT_AVAILABLE;
    /* A NULL handle is the default stream of the current device: make it the stream's. */
    kvx_device_guard guard;
    int32_t rc = kvx_runtime_enter(ops, stream, &guard);
    if (rc)
        return rc;
    int64_t code = ops->sync_stream(stream->handle);
    ops->leave(&guard);
    kvx_reap_passed(0);
    if (code != 0) {
        char doing[64];
        snprintf(doing, sizeof doing, "waiting for the %s", ops->words.stream);
        return kvx_runtime_fail(ops, ops->calls.sync_stream, code, doing);
    }
    return KVX_OK;
}

/* ---------------------------------------------------------------- stream marks */

/* A mark is one event of the pool, recorded with the stream's device current (an event belongs
 * to the device current at its creation); asking about it needs no device, as reaping does not. */
int32_t kvx_runtime_mark_record(const kvx_mark_args *args, const kvx_stream *stream)
{
    unsigned features = 0;
    const kvx_runtime_ops *ops = kvx_runtime_ops_for(stream);
    if (!ops || !ops->load(&features))
        return KVX_ERR_NOT_AVAILABLE;
    if (!(features & KVX_RUNTIME_HAS_EVENTS))
        return kvx_fail(KVX_ERR_UNSUPPORTED,
                        "mark_record: the loaded %s runtime lacks %s or another of its event "
                        "functions, so the %s backend cannot mark a %s",
                        ops->words.runtime, ops->calls.event_create, ops->words.backend,
                        ops->words.stream);
    kvx_device_guard guard;
    int32_t rc = kvx_runtime_enter(ops, stream, &guard);
    if (rc)
        return rc;
    void *event = NULL;
    const char *function = "";
    pthread_mutex_lock(&pending_lock);
    int64_t code = record_locked(ops, stream->device_index, stream->handle, &event, &function);
    pthread_mutex_unlock(&pending_lock);
    ops->leave(&guard);
    if (code != 0) {
        char doing[64];
        snprintf(doing, sizeof doing, "recording a mark on the %s", ops->words.stream);
        return kvx_runtime_fail(ops, function, code, doing);
    }
    *args->created = event;
    return KVX_OK;
}

int32_t kvx_runtime_mark_passed(const kvx_mark_args *args, const kvx_stream *stream)
{
    const kvx_runtime_ops *ops = kvx_runtime_ops_for(stream);
    if (!ops)
        return KVX_ERR_NOT_AVAILABLE;
    int passed = 0;
    int64_t code = ops->event_query(args->event, &passed);
    if (code != 0)
        return kvx_runtime_fail(ops, ops->calls.event_query, code, "asking whether a mark passed");
    return passed ? 1 : 0;
}

/* A passed event goes back to the pool; one the stream has not reached yet joins the pending
 * blocks (with nothing to free) until it has, since AscendCL may not destroy an event in use. */
int32_t kvx_runtime_mark_release(const kvx_mark_args *args, const kvx_stream *stream)
{
    const kvx_runtime_ops *ops = kvx_runtime_ops_for(stream);
    if (!ops)
        return KVX_ERR_NOT_AVAILABLE;
    pending *p = NULL;
    int passed = args->passed || event_passed(ops, args->event);
    if (!passed && !(p = malloc(sizeof *p)))
        passed = ops->event_wait(args->event); /* no room to keep it: wait, rather than leak */
    pthread_mutex_lock(&pending_lock);
    if (p) {
        *p = (pending){ops, stream->device_index, args->event, NULL, NULL, NULL};
        append_locked(p);
    } else if (passed) {
        retire_event(ops, stream->device_index, args->event);
    }
    pthread_mutex_unlock(&pending_lock);
    if (!p && !passed)
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY,
                        "mark: cannot keep an event the %s has not reached (left allocated)",
                        ops->words.stream);
    return KVX_OK;
}
