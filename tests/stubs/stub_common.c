/* stub_common.c - see stub_common.h. Test-only code: simple and strict rather than fast. */
#define _GNU_SOURCE
#include "stub_common.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- errors */

static pthread_mutex_t error_lock = PTHREAD_MUTEX_INITIALIZER;
static long error_count;
static char error_message[512];

void stub_error(const char *fmt, ...)
{
    pthread_mutex_lock(&error_lock);
    if (error_count++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(error_message, sizeof error_message, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&error_lock);
}

long stub_error_count(void) { return error_count; }
const char *stub_error_message(void) { return error_message; }

void stub_clear_errors(void)
{
    pthread_mutex_lock(&error_lock);
    error_count = 0;
    error_message[0] = 0;
    pthread_mutex_unlock(&error_lock);
}

/* ---------------------------------------------------------------- memory */

typedef struct region {
    char *base;  /* what callers see: PROT_NONE for device memory */
    char *alias; /* read/write view of the same pages (device), or base (pinned host) */
    size_t size;
    int device;  /* -1 for pinned host memory */
} region;

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static region *regions;
static size_t num_regions, cap_regions;

static void add_region(region r)
{
    pthread_mutex_lock(&mem_lock);
    if (num_regions == cap_regions) {
        cap_regions = cap_regions ? 2 * cap_regions : 64;
        regions = realloc(regions, cap_regions * sizeof *regions);
    }
    regions[num_regions++] = r;
    pthread_mutex_unlock(&mem_lock);
}

/* The region containing ptr (copied out), or 0. */
static int find_region(const void *ptr, region *out)
{
    int found = 0;
    pthread_mutex_lock(&mem_lock);
    for (size_t i = 0; i < num_regions; i++) {
        const char *p = ptr;
        if (p >= regions[i].base && p < regions[i].base + regions[i].size) {
            *out = regions[i];
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&mem_lock);
    return found;
}

static int remove_region(void *base, region *out)
{
    int found = 0;
    pthread_mutex_lock(&mem_lock);
    for (size_t i = 0; i < num_regions; i++)
        if (regions[i].base == base) {
            *out = regions[i];
            regions[i] = regions[--num_regions];
            found = 1;
            break;
        }
    pthread_mutex_unlock(&mem_lock);
    return found;
}

static size_t page_round(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return size ? (size + page - 1) / page * page : page;
}

void *stub_alloc(size_t size, int device)
{
    size_t bytes = page_round(size);
    int fd = memfd_create("kvx-stub-device", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)bytes) != 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    void *hidden = mmap(NULL, bytes, PROT_NONE, MAP_SHARED, fd, 0);
    void *alias = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (hidden == MAP_FAILED || alias == MAP_FAILED) {
        if (hidden != MAP_FAILED)
            munmap(hidden, bytes);
        if (alias != MAP_FAILED)
            munmap(alias, bytes);
        return NULL;
    }
    add_region((region){hidden, alias, bytes, device});
    return hidden;
}

int stub_free(void *device_ptr)
{
    region r;
    if (!device_ptr)
        return 0;
    if (!remove_region(device_ptr, &r) || r.device < 0)
        return -1;
    munmap(r.base, r.size);
    munmap(r.alias, r.size);
    return 0;
}

void *stub_host_alloc(size_t size)
{
    char *p = malloc(size ? size : 1);
    if (p)
        add_region((region){p, p, size ? size : 1, -1});
    return p;
}

int stub_host_free(void *ptr)
{
    region r;
    if (!ptr)
        return 0;
    if (!remove_region(ptr, &r) || r.device >= 0)
        return -1;
    free(ptr);
    return 0;
}

int stub_where(const void *ptr, int *device)
{
    region r;
    if (!find_region(ptr, &r))
        return 0;
    if (r.device < 0)
        return 1;
    if (device)
        *device = r.device;
    return 2;
}

/* Host-usable address of [ptr, ptr + n): the alias for device memory. NULL (and a stub error)
 * when a device range runs past its allocation. */
static char *resolve(const void *ptr, size_t n, const char *function, const char *what)
{
    region r;
    if (!find_region(ptr, &r) || r.device < 0)
        return (char *)ptr;
    size_t offset = (size_t)((const char *)ptr - r.base);
    if (n > r.size - offset) {
        stub_error("%s: %s range [%p, +%zu) runs past its device allocation of %zu bytes", function,
                   what, ptr, n, r.size);
        return NULL;
    }
    return r.alias + offset;
}

static long copies_done, bytes_done;

static void copy_bytes(void *dst, const void *src, size_t n, const char *function)
{
    char *d = resolve(dst, n, function, "destination");
    const char *s = resolve(src, n, function, "source");
    if (d && s)
        memmove(d, s, n);
    __atomic_add_fetch(&bytes_done, (long)n, __ATOMIC_RELAXED);
}

int stub_memcpy(void *dst, const void *src, size_t n)
{
    long before = error_count;
    copy_bytes(dst, src, n, "stub_memcpy");
    return error_count == before ? 0 : -1;
}

/* ---------------------------------------------------------------- recording and injection */

typedef struct counter {
    char name[64];
    long calls;
    int fail_code, fail_times;        /* returned by the call */
    int fail_after;                   /* calls that succeed before the injected failures */
    int async_code, async_times;      /* reported by the stream */
} counter;

static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static counter counters[64];
static int num_counters;
static long total_calls;

static counter *counter_for(const char *function)
{
    for (int i = 0; i < num_counters; i++)
        if (strcmp(counters[i].name, function) == 0)
            return &counters[i];
    if (num_counters == 64)
        return NULL;
    counter *c = &counters[num_counters++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", function);
    return c;
}

/* Takes one injected failure of `function` if any is left: the call's (async 0) or the
 * stream's (async 1). Returns its code, else 0. */
static int take_injection(const char *function, int async, int count_call)
{
    int code = 0;
    pthread_mutex_lock(&count_lock);
    counter *c = counter_for(function);
    if (count_call)
        total_calls++;
    if (c) {
        c->calls += count_call;
        int *times = async ? &c->async_times : &c->fail_times;
        if (!async && *times > 0 && c->fail_after > 0)
            c->fail_after--;
        else if (*times > 0) {
            (*times)--;
            code = async ? c->async_code : c->fail_code;
        }
    }
    pthread_mutex_unlock(&count_lock);
    return code;
}

int stub_enter(const char *function) { return take_injection(function, 0, 1); }

int stub_async_failure(const char *function) { return take_injection(function, 1, 0); }

long stub_call_count(const char *function)
{
    long n = 0;
    pthread_mutex_lock(&count_lock);
    if (!function) {
        n = total_calls;
    } else {
        for (int i = 0; i < num_counters; i++)
            if (strcmp(counters[i].name, function) == 0)
                n = counters[i].calls;
    }
    pthread_mutex_unlock(&count_lock);
    return n;
}

long stub_copy_count(void) { return __atomic_load_n(&copies_done, __ATOMIC_RELAXED); }
long stub_copy_bytes(void) { return __atomic_load_n(&bytes_done, __ATOMIC_RELAXED); }

void stub_reset_counts(void)
{
    pthread_mutex_lock(&count_lock);
    for (int i = 0; i < num_counters; i++)
        counters[i].calls = 0;
    total_calls = 0;
    __atomic_store_n(&copies_done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&bytes_done, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&count_lock);
}

static void set_injection(const char *function, int async, int code, int times, int after)
{
    pthread_mutex_lock(&count_lock);
    counter *c = counter_for(function);
    if (c) {
        *(async ? &c->async_code : &c->fail_code) = code;
        *(async ? &c->async_times : &c->fail_times) = times;
        if (!async)
            c->fail_after = after;
    }
    pthread_mutex_unlock(&count_lock);
}

void stub_inject(const char *function, int code, int times)
{
    set_injection(function, 0, code, times, 0);
}

void stub_inject_after(const char *function, int code, int times, int after)
{
    set_injection(function, 0, code, times, after);
}

void stub_inject_async(const char *function, int code, int times)
{
    set_injection(function, 1, code, times, 0);
}

void stub_clear_injections(void)
{
    pthread_mutex_lock(&count_lock);
    for (int i = 0; i < num_counters; i++)
        counters[i].fail_times = counters[i].async_times = 0;
    pthread_mutex_unlock(&count_lock);
}

/* ---------------------------------------------------------------- device selection */

static _Thread_local int current_device = -1;
int stub_current_device(void) { return current_device; }
void stub_set_current_device(int device) { current_device = device; }

int stub_call_get_device(const char *function, int *device, int implicit)
{
    int rc = stub_enter(function);
    if (rc)
        return rc;
    if (!device)
        return STUB_BAD_ARGS;
    if (current_device < 0 && implicit < 0)
        return STUB_NO_CONTEXT;
    *device = current_device < 0 ? implicit : current_device;
    return 0;
}

int stub_call_set_device(const char *function, int device)
{
    int rc = stub_enter(function);
    if (rc)
        return rc;
    if (device < 0 || device > 7)
        return STUB_BAD_ARGS;
    current_device = device;
    return 0;
}

/* ---------------------------------------------------------------- streams */

struct stub_stream {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake, idle;
    stub_task *head, *tail;
    int busy, paused, stop, delay_us, device;
    int steps; /* tasks a paused stream may still run (stub_stream_step) */
    int error; /* first async error since the last sync */
};

static pthread_mutex_t event_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t event_cond = PTHREAD_COND_INITIALIZER;

static int where_matches(const void *ptr, int expected)
{
    int w = stub_where(ptr, NULL);
    return expected < 0 ? w != 2 : w == expected;
}

static void check_kind(const stub_task *t, void *dst, const void *src, const char *what)
{
    if (!where_matches(dst, t->expect_dst) || !where_matches(src, t->expect_src))
        stub_error("%s: %s: pointers (dst %s, src %s) do not match the copy kind", t->function,
                   what, stub_where(dst, NULL) == 2 ? "device" : "host",
                   stub_where(src, NULL) == 2 ? "device" : "host");
}

static void run_batch(const stub_task *t)
{
    const stub_batch *b = &t->batch;
    /* The descriptor arrays are read now, when the stream reaches the copy, not when it was
     * enqueued: freeing them early is a use-after-free the tests can see. */
    for (size_t i = 0; i < b->count; i++) {
        size_t k = 0;
        while (k + 1 < b->num_attrs && b->attr_indexes[k + 1] <= i)
            k++;
        int dst_where, src_where;
        if (!t->attr_expects(b->attrs, k, &dst_where, &src_where))
            stub_error("%s: copy %zu: unsupported memory location in attrs[%zu]", t->function, i,
                       k);
        stub_task one = *t;
        one.expect_dst = dst_where;
        one.expect_src = src_where;
        check_kind(&one, b->dsts[i], b->srcs[i], "batch entry");
        if (b->dest_maxs[i] < b->sizes[i])
            stub_error("%s: copy %zu: destMax %zu < size %zu", t->function, i, b->dest_maxs[i],
                       b->sizes[i]);
        copy_bytes(b->dsts[i], b->srcs[i], b->sizes[i], t->function);
        __atomic_add_fetch(&copies_done, 1, __ATOMIC_RELAXED);
    }
}

static void run_task(stub_task *t)
{
    switch (t->kind) {
    case STUB_TASK_COPY:
        check_kind(t, t->dst, t->src, "copy");
        copy_bytes(t->dst, t->src, t->bytes, t->function);
        __atomic_add_fetch(&copies_done, 1, __ATOMIC_RELAXED);
        break;
    case STUB_TASK_COPY_2D:
        check_kind(t, t->dst, t->src, "2D copy");
        if (t->dpitch < t->bytes || t->spitch < t->bytes || !t->bytes || !t->height)
            stub_error("%s: pitches %zu/%zu, width %zu, height %zu break the 2D limits",
                       t->function, t->dpitch, t->spitch, t->bytes, t->height);
        for (size_t r = 0; r < t->height; r++)
            copy_bytes((char *)t->dst + r * t->dpitch, (const char *)t->src + r * t->spitch,
                       t->bytes, t->function);
        __atomic_add_fetch(&copies_done, 1, __ATOMIC_RELAXED);
        break;
    case STUB_TASK_BATCH: run_batch(t); break;
    case STUB_TASK_EVENT:
        pthread_mutex_lock(&event_lock);
        *t->event_done = 1;
        pthread_cond_broadcast(&event_cond);
        pthread_mutex_unlock(&event_lock);
        break;
    }
}

static void *worker(void *arg)
{
    stub_stream *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->stop && (!s->head || (s->paused && !s->steps)))
            pthread_cond_wait(&s->wake, &s->lock);
        if (s->stop && !s->head)
            break;
        if (s->paused && s->steps)
            s->steps--;
        stub_task *t = s->head;
        s->head = t->next;
        if (!s->head)
            s->tail = NULL;
        s->busy = 1;
        int delay = s->delay_us;
        pthread_mutex_unlock(&s->lock);
        if (delay > 0)
            usleep((useconds_t)delay);
        if (t->fail_code) {
            pthread_mutex_lock(&s->lock);
            if (!s->error)
                s->error = t->fail_code;
            pthread_mutex_unlock(&s->lock);
        } else {
            run_task(t);
        }
        free(t);
        pthread_mutex_lock(&s->lock);
        s->busy = 0;
        if (!s->head || s->paused) /* a paused stream's task may end a step */
            pthread_cond_broadcast(&s->idle);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

void *stub_stream_create(int device)
{
    stub_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->device = device;
    if (pthread_create(&s->thread, NULL, worker, s) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

int stub_stream_destroy(void *stream)
{
    stub_stream *s = stream;
    if (!s)
        return -1;
    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    s->paused = 0;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    free(s);
    return 0;
}

/* Each device has its own default stream, which a NULL handle names on a thread whose current
 * device is that one (device 0 on a thread that chose none). */
enum { STUB_DEVICES = 8 };
static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static stub_stream *default_streams[STUB_DEVICES];
static long default_syncs[STUB_DEVICES];

static int default_device(void)
{
    int device = stub_current_device();
    return device < 0 || device >= STUB_DEVICES ? 0 : device;
}

stub_stream *stub_resolve_stream(void *handle)
{
    if (handle)
        return handle;
    int device = default_device();
    pthread_mutex_lock(&default_lock);
    if (!default_streams[device])
        default_streams[device] = stub_stream_create(device);
    stub_stream *s = default_streams[device];
    pthread_mutex_unlock(&default_lock);
    return s;
}

long stub_default_sync_count(int device)
{
    if (device < 0 || device >= STUB_DEVICES)
        return -1;
    return __atomic_load_n(&default_syncs[device], __ATOMIC_RELAXED);
}

int stub_stream_device(const stub_stream *s) { return s->device; }

int stub_stream_sync(void *stream)
{
    if (!stream)
        __atomic_add_fetch(&default_syncs[default_device()], 1, __ATOMIC_RELAXED);
    stub_stream *s = stub_resolve_stream(stream);
    pthread_mutex_lock(&s->lock);
    while (s->head || s->busy)
        pthread_cond_wait(&s->idle, &s->lock);
    int error = s->error;
    s->error = 0;
    pthread_mutex_unlock(&s->lock);
    return error;
}

void stub_stream_pause(void *stream, int paused)
{
    stub_stream *s = stub_resolve_stream(stream);
    pthread_mutex_lock(&s->lock);
    s->paused = paused;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

int stub_stream_step(void *stream, int tasks)
{
    stub_stream *s = stub_resolve_stream(stream);
    pthread_mutex_lock(&s->lock);
    s->steps = tasks;
    pthread_cond_broadcast(&s->wake);
    while ((s->steps > 0 && s->head) || s->busy)
        pthread_cond_wait(&s->idle, &s->lock);
    int left = s->steps;
    s->steps = 0;
    pthread_mutex_unlock(&s->lock);
    return tasks - left;
}

void stub_stream_delay_us(void *stream, int delay_us)
{
    stub_stream *s = stub_resolve_stream(stream);
    pthread_mutex_lock(&s->lock);
    s->delay_us = delay_us;
    pthread_mutex_unlock(&s->lock);
}

void stub_enqueue(stub_stream *s, const stub_task *task)
{
    stub_task *t = malloc(sizeof *t);
    *t = *task;
    t->next = NULL;
    if (!t->fail_code && t->function)
        t->fail_code = stub_async_failure(t->function);
    pthread_mutex_lock(&s->lock);
    if (s->tail)
        s->tail->next = t;
    else
        s->head = t;
    s->tail = t;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------------- runtime calls */

int stub_submit_copy(void *handle, int device, const stub_task *t)
{
    if (!t->dst || !t->src || !t->bytes)
        return STUB_BAD_ARGS;
    if (t->kind == STUB_TASK_COPY_2D &&
        (!t->height || t->dpitch < t->bytes || t->spitch < t->bytes))
        return STUB_BAD_ARGS;
    stub_stream *s = stub_resolve_stream(handle);
    if (handle && stub_stream_device(s) != device)
        return STUB_WRONG_DEVICE;
    stub_enqueue(s, t);
    return 0;
}

int stub_call_alloc(const char *function, void **ptr, size_t size, int device)
{
    int rc = stub_enter(function);
    if (rc)
        return rc;
    if (!ptr)
        return STUB_BAD_ARGS;
    *ptr = device < 0 ? stub_host_alloc(size) : stub_alloc(size, device);
    return *ptr ? 0 : STUB_BAD_ARGS;
}

int stub_call_free(const char *function, void *ptr, int device_memory)
{
    int rc = stub_enter(function);
    if (rc)
        return rc;
    return (device_memory ? stub_free(ptr) : stub_host_free(ptr)) ? STUB_BAD_ARGS : 0;
}

int stub_call_stream_create(const char *function, void **stream, int device)
{
    int rc = stub_enter(function);
    if (rc)
        return rc;
    if (!stream)
        return STUB_BAD_ARGS;
    *stream = stub_stream_create(device);
    return *stream ? 0 : STUB_BAD_ARGS;
}

int stub_call_stream_destroy(const char *function, void *stream)
{
    int rc = stub_enter(function);
    if (rc)
        return rc;
    return stub_stream_destroy(stream) ? STUB_BAD_ARGS : 0;
}

/* ---------------------------------------------------------------- events */

struct stub_event {
    volatile int done;
    int recorded;
};

stub_event *stub_event_new(void)
{
    stub_event *e = calloc(1, sizeof *e);
    if (e)
        e->done = 1; /* a never-recorded event counts as complete */
    return e;
}

void stub_event_record(stub_event *e, stub_stream *s)
{
    pthread_mutex_lock(&event_lock);
    e->done = 0;
    e->recorded = 1;
    pthread_mutex_unlock(&event_lock);
    stub_task t = {.kind = STUB_TASK_EVENT, .event_done = &e->done};
    stub_enqueue(s, &t);
}

int stub_event_done(stub_event *e)
{
    pthread_mutex_lock(&event_lock);
    int done = e->done;
    pthread_mutex_unlock(&event_lock);
    return done;
}

int stub_event_pending(stub_event *e) { return !stub_event_done(e); }

void stub_event_wait(stub_event *e)
{
    pthread_mutex_lock(&event_lock);
    while (!e->done)
        pthread_cond_wait(&event_cond, &event_lock);
    pthread_mutex_unlock(&event_lock);
}

void stub_event_free(stub_event *e) { free(e); }
