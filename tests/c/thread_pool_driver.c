/*
 * thread_pool_driver.c - which threads run a kvx_parallel_for job (for
 * tests/test_transfer_threads.py).
 *
 * Built from libkvx/src/core/thread_pool.c and errors.c alone. For a sequence of thread counts it
 * sets the count, runs a job and checks that exactly that many distinct threads ran its items,
 * the caller among them. Without depending on timing:
 *   - at most N: every thread that ran an item is recorded (under a lock) before its item ends,
 *     and kvx_parallel_for returns only after every item has ended;
 *   - at least N: each item waits until N distinct threads have arrived, so the job cannot end
 *     before N threads took part (a guard of GUARD_SECONDS turns a pool that never sends them
 *     into a failure instead of a hang).
 * Counts go down and up again, so that surplus workers that just worked (and spin, waiting for
 * the next job) are there to be wrongly used.
 *
 * Usage: thread_pool_driver COUNT... (e.g. 8 2 1 4); prints one line per failure, exits 1 if any.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kvx_internal.h"

#ifndef GUARD_SECONDS
#define GUARD_SECONDS 60
#endif
#define MAX_SEEN 512 /* more than the pool's 256 threads: an excess is still counted */
#define ITEMS 4096   /* enough chunks for every thread, whatever the count */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t arrived;
    pthread_t seen[MAX_SEEN];
    int num_seen;
    int wanted;     /* items wait until this many distinct threads have arrived */
    int timed_out;  /* the guard expired: stop waiting, report */
    struct timespec deadline;
} team;

static int already_seen(const team *t, pthread_t self)
{
    for (int i = 0; i < t->num_seen; i++)
        if (pthread_equal(t->seen[i], self))
            return 1;
    return 0;
}

/* The range function: records the calling thread, then waits for the rest of the team. */
static void join_team(void *ctx, int64_t begin, int64_t end)
{
    (void)begin;
    (void)end;
    team *t = ctx;
    pthread_t self = pthread_self();
    pthread_mutex_lock(&t->lock);
    if (!already_seen(t, self) && t->num_seen < MAX_SEEN) {
        t->seen[t->num_seen++] = self;
        pthread_cond_broadcast(&t->arrived);
    }
    while (t->num_seen < t->wanted && !t->timed_out)
        if (pthread_cond_timedwait(&t->arrived, &t->lock, &t->deadline) == ETIMEDOUT)
            t->timed_out = 1;
    pthread_mutex_unlock(&t->lock);
    /* Leave the core to other threads for a while: a pool that wrongly woke surplus workers
     * then lets them take items, and they are counted. (Only how likely such a bug is caught
     * depends on this; a correct pool passes whatever the scheduler does.) */
    nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);
}

static void team_init(team *t, int wanted)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->arrived, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&t->lock, NULL);
    t->num_seen = 0;
    t->wanted = wanted;
    t->timed_out = 0;
    clock_gettime(CLOCK_MONOTONIC, &t->deadline);
    t->deadline.tv_sec += GUARD_SECONDS;
}

static void team_destroy(team *t)
{
    pthread_cond_destroy(&t->arrived);
    pthread_mutex_destroy(&t->lock);
}

/* Runs one job on `threads` threads; returns 0 if exactly that many ran it, the caller among
 * them, else says what went wrong and returns 1, or 2 when the guard expired. */
static int check_job(int job, int threads)
{
    if (kvx_set_num_threads(threads) != KVX_OK || kvx_get_num_threads() != threads) {
        printf("job %d: kvx_set_num_threads(%d) did not take effect\n", job, threads);
        return 1;
    }
    team t;
    team_init(&t, threads);
    kvx_parallel_for(ITEMS, 1, join_team, &t);
    int failed = 1;
    if (t.timed_out) {
        printf("job %d: only %d of %d threads took part within %d s\n", job, t.num_seen, threads,
               GUARD_SECONDS);
        failed = 2;
    } else if (t.num_seen != threads)
        printf("job %d: %d threads ran items with the count set to %d\n", job, t.num_seen, threads);
    else if (!already_seen(&t, pthread_self()))
        printf("job %d: the calling thread ran no item\n", job);
    else
        failed = 0;
    team_destroy(&t);
    return failed;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s COUNT...\n", argv[0]);
        return 2;
    }
    int jobs = 0, failures = 0;
    while (jobs < argc - 1) {
        int failed = check_job(jobs + 1, atoi(argv[jobs + 1]));
        jobs++;
        failures += failed != 0;
        if (failed == 2)
            break; /* the pool does not send its threads: more jobs would only wait as long */
    }
    printf("%d of %d jobs failed\n", failures, jobs);
    return failures ? 1 : 0;
}
