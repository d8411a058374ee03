/*
 * thread_pool.c - the CPU backend's small thread pool.
 *
 * One job at a time: the caller that wins `pool_owner` publishes the job, wakes the workers and
 * works too; items are handed out in chunks through an atomic counter. A caller that finds the
 * pool busy (another thread's job, or a nested call) runs its range on its own thread, so the
 * library stays re-entrant without queues or deadlocks.
 *
 * fork() copies only the calling thread: the pool's workers do not exist in the child. Fork
 * handlers make the child start with no workers (it builds its own on demand) and never inherit
 * a lock held, or a job half published, by a thread of the parent.
 */
#include <ctype.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "kvx_internal.h"

#define MAX_THREADS 256

/* How long a worker that finished a job, or a caller waiting for its workers, spins before it
 * sleeps on a condition variable. Waking a sleeping thread costs tens of microseconds (more in a
 * VM), as much as a whole small job; kernels are called back to back (one per layer, one per
 * request), so the next job usually arrives within this window. */
#define SPIN_NANOSECONDS 100000

static pthread_mutex_t pool_owner = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
/* One per worker, so that a job wakes only the workers it needs (waking surplus workers after
 * the thread count was lowered would cost them CPU time on every call). */
static pthread_cond_t job_posted[MAX_THREADS];
static pthread_cond_t job_finished = PTHREAD_COND_INITIALIZER;

/* The job is published by storing `ticket` (release); a worker that loads a new ticket (acquire)
 * sees the job fields. The ticket packs the job's generation with its number of helpers, so a
 * worker learns both in one load: the ones with index < helpers take part, the others must not
 * touch the job (the owner may already be writing the next one). */
#define TICKET_HELPER_BITS 9 /* helpers < MAX_THREADS <= 2^9 */
static _Atomic uint64_t ticket;
static _Atomic int workers_busy;
static int workers_started; /* guarded by pool_owner */
static struct {
    kvx_range_fn fn;
    void *ctx;
    int64_t count;
    int64_t chunk;
} job;
static _Atomic int64_t next_item;

static _Atomic int32_t requested_threads; /* 0 = default */

/* The CPUs this process may run on (its affinity mask), else the CPUs online, at most
 * MAX_THREADS; `*which` names the count for messages. */
static int32_t cpu_threads(const char **which)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
        *which = "the CPUs this process may run on";
        return CPU_COUNT(&set) > MAX_THREADS ? MAX_THREADS : CPU_COUNT(&set);
    }
    *which = "the CPUs online";
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online < 1 ? 1 : online > MAX_THREADS ? MAX_THREADS : (int32_t)online;
}

/* 1 for the first caller only, also when threads race: a refused setting is reported once. */
static int first_report(void)
{
    static _Atomic int reported;
    return !atomic_load_explicit(&reported, memory_order_relaxed) && !atomic_exchange(&reported, 1);
}

/* KVX_NUM_THREADS (`text`) as a thread count: a whole number, blanks around it allowed, more
 * than MAX_THREADS meaning MAX_THREADS; 0 (the default count) for anything else. Says so on
 * stderr the first time it refuses or clamps a value, rather than silently running with a
 * thread count the user did not ask for. */
static int32_t threads_from_env(const char *text)
{
    char *end;
    long n = strtol(text, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    int whole = end != text && *end == '\0';
    if (whole && n >= 1 && n <= MAX_THREADS)
        return (int32_t)n;
    if (whole && n > MAX_THREADS) {
        if (first_report())
            kvx_warn("KVX_NUM_THREADS=\"%s\" is more than %d (expected an integer 1..%d); "
                     "using %d threads",
                     text, MAX_THREADS, MAX_THREADS, MAX_THREADS);
        return MAX_THREADS;
    }
    if (first_report()) {
        const char *which;
        int32_t cpus = cpu_threads(&which);
        kvx_warn("KVX_NUM_THREADS=\"%s\" ignored (expected an integer 1..%d); using %d "
                 "thread%s (%s)",
                 text, MAX_THREADS, cpus, cpus == 1 ? "" : "s", which);
    }
    return 0;
}

static int32_t default_threads(void)
{
    const char *env = getenv("KVX_NUM_THREADS");
    /* Empty counts as unset, as in `KVX_NUM_THREADS= command`. */
    int32_t n = env && *env ? threads_from_env(env) : 0;
    if (n > 0)
        return n;
    const char *which;
    return cpu_threads(&which);
}

int32_t kvx_set_num_threads(int32_t num_threads)
{
    kvx_clear_error();
    if (num_threads < 0 || num_threads > MAX_THREADS)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT, "num_threads: expected 0 (default) to %d, got %d",
                        MAX_THREADS, (int)num_threads);
    atomic_store(&requested_threads, num_threads);
    return KVX_OK;
}

int32_t kvx_get_num_threads(void)
{
    int32_t n = atomic_load(&requested_threads);
    return n > 0 ? n : default_threads();
}

static void run_chunks(void)
{
    for (;;) {
        int64_t begin = atomic_fetch_add(&next_item, job.chunk);
        if (begin >= job.count)
            return;
        int64_t end = begin + job.chunk < job.count ? begin + job.chunk : job.count;
        job.fn(job.ctx, begin, end);
    }
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static int64_t monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* Spins (yielding the core now and then) until `done(arg)` holds or SPIN_NANOSECONDS pass;
 * returns whether it holds. */
static int spin_until(int (*done)(const void *), const void *arg)
{
    int64_t deadline = monotonic_ns() + SPIN_NANOSECONDS;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (done(arg))
                return 1;
            cpu_relax();
        }
        if (monotonic_ns() > deadline)
            return done(arg);
        /* On a loaded machine the thread we wait for may need this core. */
        sched_yield();
    }
}

static int ticket_changed(const void *seen)
{
    return atomic_load_explicit(&ticket, memory_order_acquire) != *(const uint64_t *)seen;
}

static int workers_done(const void *unused)
{
    (void)unused;
    return atomic_load_explicit(&workers_busy, memory_order_acquire) == 0;
}

/* The next ticket after `seen`: spinning first (if `spin`), then sleeping until woken. */
static uint64_t wait_for_job(int index, uint64_t seen, int spin)
{
    if (!spin || !spin_until(ticket_changed, &seen)) {
        pthread_mutex_lock(&state_lock);
        while (!ticket_changed(&seen))
            pthread_cond_wait(&job_posted[index], &state_lock);
        pthread_mutex_unlock(&state_lock);
    }
    return atomic_load_explicit(&ticket, memory_order_acquire);
}

static void *worker_main(void *arg)
{
    uint64_t index = (uint64_t)(intptr_t)arg;
    uint64_t seen = 0;
    int helped = 0;
    for (;;) {
        /* Only a worker that just helped spins: one left out (the thread count was lowered)
         * goes back to sleep, so surplus workers cost no CPU time. */
        seen = wait_for_job((int)index, seen, helped);
        helped = index < (seen & ((1u << TICKET_HELPER_BITS) - 1));
        if (!helped)
            continue;
        run_chunks();
        if (atomic_fetch_sub_explicit(&workers_busy, 1, memory_order_acq_rel) == 1) {
            /* under the lock, so a caller between its check and its wait cannot miss it */
            pthread_mutex_lock(&state_lock);
            pthread_cond_signal(&job_finished);
            pthread_mutex_unlock(&state_lock);
        }
    }
    return NULL;
}

/* Before fork(): waits for the job in flight, if any, and holds both locks, so that the child
 * copies a pool with no job and no lock held by a thread that does not exist there. A caller
 * that finds the pool held meanwhile runs its range on its own thread, as usual. */
static void hold_pool_locks(void)
{
    pthread_mutex_lock(&pool_owner);
    pthread_mutex_lock(&state_lock);
}

static void release_pool_locks(void)
{
    pthread_mutex_unlock(&state_lock);
    pthread_mutex_unlock(&pool_owner);
}

/* The child's only thread is the one that forked: forget the parent's workers, so that the next
 * job starts the child's own. Their condition variables may record waiters that do not exist
 * here; ensure_workers initialises each one afresh before its new worker uses it. */
static void forget_workers_in_child(void)
{
    workers_started = 0;
    /* A new worker waits for a ticket other than 0: no stale job must look new to it. */
    atomic_store(&ticket, 0);
    atomic_store(&workers_busy, 0);
    release_pool_locks();
}

static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;

static void register_fork_handlers(void)
{
    pthread_atfork(hold_pool_locks, release_pool_locks, forget_workers_in_child);
}

/* Starts workers up to `wanted`; returns how many exist. Called by the pool owner only. */
static int ensure_workers(int wanted)
{
    /* Before the first worker exists, so that no fork can copy a pool the child cannot use. */
    pthread_once(&fork_handlers_once, register_fork_handlers);
    while (workers_started < wanted) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_cond_init(&job_posted[workers_started], NULL);
        int failed = pthread_create(&thread, &attr, worker_main, (void *)(intptr_t)workers_started);
        pthread_attr_destroy(&attr);
        if (failed) {
            pthread_cond_destroy(&job_posted[workers_started]);
            break; /* run with the workers we have */
        }
        workers_started++;
    }
    return workers_started;
}

void kvx_parallel_for(int64_t count, int64_t grain, kvx_range_fn fn, void *ctx)
{
    if (count <= 0)
        return;
    if (grain < 1)
        grain = 1;
    int64_t threads = kvx_get_num_threads();
    if (threads > (count + grain - 1) / grain)
        threads = (count + grain - 1) / grain;
    if (threads <= 1 || pthread_mutex_trylock(&pool_owner) != 0) {
        fn(ctx, 0, count);
        return;
    }
    int helpers = ensure_workers((int)threads - 1);
    if (helpers > threads - 1)
        helpers = (int)threads - 1; /* more workers exist when the thread count was lowered */
    /* Several chunks per thread even out uneven item costs. */
    int64_t chunk = count / ((helpers + 1) * 8);
    job.fn = fn;
    job.ctx = ctx;
    job.count = count;
    job.chunk = chunk < grain ? grain : chunk;
    atomic_store(&next_item, 0);
    atomic_store(&workers_busy, helpers);

    uint64_t generation = (atomic_load(&ticket) >> TICKET_HELPER_BITS) + 1;
    pthread_mutex_lock(&state_lock);
    atomic_store_explicit(&ticket, generation << TICKET_HELPER_BITS | (uint64_t)helpers,
                          memory_order_release);
    for (int i = 0; i < helpers; i++)
        pthread_cond_signal(&job_posted[i]);
    pthread_mutex_unlock(&state_lock);

    run_chunks();

    if (!spin_until(workers_done, NULL)) {
        pthread_mutex_lock(&state_lock);
        while (!workers_done(NULL))
            pthread_cond_wait(&job_finished, &state_lock);
        pthread_mutex_unlock(&state_lock);
    }
    pthread_mutex_unlock(&pool_owner);
}
