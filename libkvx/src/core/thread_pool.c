/*
 * thread_pool.c - the CPU backend's small thread pool.
 *
 * One job at a time: the caller that wins `pool_owner` publishes the job, wakes the workers and
 * works too; items are handed out in chunks through an atomic counter. A caller that finds the
 * pool busy (another thread's job, or a nested call) runs its range on its own thread, so the
 * library stays re-entrant without queues or deadlocks.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "kvx_internal.h"

#define MAX_THREADS 256

static pthread_mutex_t pool_owner = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_posted = PTHREAD_COND_INITIALIZER;
static pthread_cond_t job_finished = PTHREAD_COND_INITIALIZER;

/* Guarded by state_lock (the job fields are written only by the owner while no worker runs). */
static int workers_started;
static int workers_busy;
static uint64_t job_generation;
static struct {
    kvx_range_fn fn;
    void *ctx;
    int64_t count;
    int64_t chunk;
    int helpers; /* workers that take part: the ones with index < helpers */
} job;
static _Atomic int64_t next_item;

static _Atomic int32_t requested_threads; /* 0 = default */

static int32_t default_threads(void)
{
    const char *env = getenv("KVX_NUM_THREADS");
    if (env) {
        long n = strtol(env, NULL, 10);
        if (n >= 1)
            return n > MAX_THREADS ? MAX_THREADS : (int32_t)n;
    }
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set) > MAX_THREADS ? MAX_THREADS : CPU_COUNT(&set);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online < 1 ? 1 : online > MAX_THREADS ? MAX_THREADS : (int32_t)online;
}

int32_t kvx_set_num_threads(int32_t num_threads)
{
    kvx_clear_error();
    if (num_threads < 0 || num_threads > MAX_THREADS)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "num_threads: expected 0 (default) to %d, got %d", MAX_THREADS,
                        (int)num_threads);
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

static void *worker_main(void *arg)
{
    int index = (int)(intptr_t)arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&state_lock);
    for (;;) {
        while (job_generation == seen)
            pthread_cond_wait(&job_posted, &state_lock);
        seen = job_generation;
        if (index >= job.helpers)
            continue;
        pthread_mutex_unlock(&state_lock);
        run_chunks();
        pthread_mutex_lock(&state_lock);
        if (--workers_busy == 0)
            pthread_cond_signal(&job_finished);
    }
    return NULL;
}

/* Starts workers up to `wanted`; returns how many exist. Called by the pool owner only. */
static int ensure_workers(int wanted)
{
    while (workers_started < wanted) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attr, worker_main,
                                    (void *)(intptr_t)workers_started);
        pthread_attr_destroy(&attr);
        if (failed)
            break; /* run with the workers we have */
        pthread_mutex_lock(&state_lock);
        workers_started++;
        pthread_mutex_unlock(&state_lock);
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
    /* Several chunks per thread even out uneven item costs. */
    int64_t chunk = count / ((helpers + 1) * 8);
    job.fn = fn;
    job.ctx = ctx;
    job.count = count;
    job.chunk = chunk < grain ? grain : chunk;
    job.helpers = helpers;
    atomic_store(&next_item, 0);

    pthread_mutex_lock(&state_lock);
    workers_busy = helpers;
    job_generation++;
    pthread_cond_broadcast(&job_posted);
    pthread_mutex_unlock(&state_lock);

    run_chunks();

    pthread_mutex_lock(&state_lock);
    while (workers_busy > 0)
        pthread_cond_wait(&job_finished, &state_lock);
    pthread_mutex_unlock(&state_lock);
    pthread_mutex_unlock(&pool_owner);
}
