/*
 * stub_common.h - the machinery shared by the test-only AscendCL and CNRT stub runtimes
 * (acl_stub.c, cnrt_stub.c). Built by the tests into a temporary directory, never installed.
 *
 * - "Device" memory: each allocation is a memfd mapped twice, once with PROT_NONE (the pointer
 *   handed out, so any host dereference of device memory crashes the test) and once read/write
 *   (an alias only the stub's copy routines use).
 * - Streams/queues: each is a worker thread with a FIFO, so copies really run after the call
 *   that enqueued them returned; a stream can be paused, run task by task while paused, or
 *   slowed down.
 * - Calls are counted by function name; failures are injected by function name, either as the
 *   call's return code or as an error the stream reports when synchronised.
 * - Anything a real runtime would choke on (a device range out of bounds, a copy kind or batch
 *   attribute that does not match the pointers, destMax < size) is recorded as a stub error that
 *   the tests require to be absent; what it refuses outright (acl_stub.c lists its rules) is
 *   refused with the runtime's own error code.
 * - Each device has its own default stream, named by a NULL handle on a thread whose current
 *   device is that one.
 */
#ifndef STUB_COMMON_H
#define STUB_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define STUB_API __attribute__((visibility("default")))

/* ---- memory */
STUB_API void *stub_alloc(size_t size, int device);
STUB_API int stub_free(void *device_ptr);
STUB_API void *stub_host_alloc(size_t size); /* "pinned" host memory */
STUB_API int stub_host_free(void *ptr);
/* Location of ptr: 2 = device (and *device set), 1 = pinned host, 0 = other host memory. */
STUB_API int stub_where(const void *ptr, int *device);
/* Synchronous copy between any two kinds of memory (what the tests use to fill device memory). */
STUB_API int stub_memcpy(void *dst, const void *src, size_t n);

/* ---- streams */
typedef struct stub_stream stub_stream;
typedef struct stub_task stub_task;
STUB_API void *stub_stream_create(int device);
STUB_API int stub_stream_destroy(void *stream);
STUB_API int stub_stream_sync(void *stream); /* returns and clears the stream's async error */
STUB_API void stub_stream_pause(void *stream, int paused);
/* Lets the first `tasks` tasks queued on a paused stream run, one after the other, and returns
 * once they have: how many ran (fewer when the queue held fewer). */
STUB_API int stub_stream_step(void *stream, int tasks);
STUB_API void stub_stream_delay_us(void *stream, int delay_us); /* before each task */
/* NULL handle: the default stream of the thread's current device (device 0 when none). */
stub_stream *stub_resolve_stream(void *handle);
/* How often the default stream of `device` was synchronised (through a NULL handle). */
STUB_API long stub_default_sync_count(int device);
int stub_stream_device(const stub_stream *s);

enum stub_task_kind { STUB_TASK_COPY, STUB_TASK_COPY_2D, STUB_TASK_BATCH, STUB_TASK_EVENT };

typedef struct stub_batch {
    void **dsts;
    size_t *dest_maxs;
    void **srcs;
    size_t *sizes;
    size_t count;
    const void *attrs; /* read by the runtime-specific validator */
    size_t *attr_indexes;
    size_t num_attrs;
} stub_batch;

struct stub_task {
    enum stub_task_kind kind;
    const char *function; /* for error messages and async failure injection */
    int fail_code;        /* injected: the stream reports this instead of copying */
    void *dst;
    const void *src;
    size_t bytes, dpitch, spitch, height;
    int expect_dst, expect_src; /* stub_where() values the kind promised, -1 = any host */
    stub_batch batch;
    int (*validate_batch)(const stub_batch *b, size_t i, size_t *attr_index);
    int (*attr_expects)(const void *attrs, size_t k, int *dst, int *src);
    volatile int *event_done;
    stub_task *next;
};

/* Enqueues a copy of the task (the stub owns it). */
void stub_enqueue(stub_stream *s, const stub_task *task);

/* ---- runtime calls both stubs share; each returns 0, a code injected for `function`
 * (stub_inject), or one of these, which the runtime maps to its own error codes */
enum { STUB_BAD_ARGS = -1, STUB_WRONG_DEVICE = -2, STUB_NO_CONTEXT = -3 };
/* A STUB_TASK_COPY or STUB_TASK_COPY_2D task (expect_dst/expect_src already set from the call's
 * kind or direction) checked against the limits both runtimes document (no NULL pointer, no
 * zero width or height, pitches >= width) and enqueued on the stream behind `handle` (NULL: the
 * default stream), which must belong to `device`. Injection is the caller's (stub_enter). */
int stub_submit_copy(void *handle, int device, const stub_task *task);
/* Allocation and streams as the tests' calls (aclrtMalloc, cnrtQueueCreate, ...) make them;
 * device < 0 allocates pinned host memory (aclrtMallocHost, cnrtHostMalloc). */
int stub_call_alloc(const char *function, void **ptr, size_t size, int device);
int stub_call_free(const char *function, void *ptr, int device_memory);
int stub_call_stream_create(const char *function, void **stream, int device);
int stub_call_stream_destroy(const char *function, void *stream);
/* The thread's current device (`implicit` when it chose none; implicit < 0: STUB_NO_CONTEXT);
 * choosing one of devices 0..7. */
int stub_call_get_device(const char *function, int *device, int implicit);
int stub_call_set_device(const char *function, int device);

/* ---- events (completion flags set by the stream) */
typedef struct stub_event stub_event;
stub_event *stub_event_new(void);
void stub_event_record(stub_event *e, stub_stream *s);
int stub_event_done(stub_event *e);
void stub_event_wait(stub_event *e);
int stub_event_pending(stub_event *e); /* recorded and not yet complete */
void stub_event_free(stub_event *e);

/* ---- device selection (thread-local), -1 = none */
int stub_current_device(void);
void stub_set_current_device(int device);

/* ---- recording and injection */
/* Counts the call; returns a code to fail it with (injected), else 0. */
int stub_enter(const char *function);
/* The async failure code injected for the next task of `function`, else 0. */
int stub_async_failure(const char *function);
STUB_API long stub_call_count(const char *function); /* NULL: all calls */
STUB_API long stub_copy_count(void);   /* copy descriptors executed (a 2D copy counts once) */
STUB_API long stub_copy_bytes(void);
STUB_API void stub_reset_counts(void);
STUB_API void stub_inject(const char *function, int code, int times);
/* The same, after `after` calls that succeed. */
STUB_API void stub_inject_after(const char *function, int code, int times, int after);
STUB_API void stub_inject_async(const char *function, int code, int times);
STUB_API void stub_clear_injections(void);
STUB_API long stub_error_count(void);
STUB_API const char *stub_error_message(void); /* the first one since the last clear */
STUB_API void stub_clear_errors(void);
void stub_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* STUB_COMMON_H */
