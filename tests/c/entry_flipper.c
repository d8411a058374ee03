/* A native thread that flips one entry of an array between a good and a bad value, for
 * tests/test_inputs_changed_during_call.py (a Python thread would need the GIL for every write
 * and barely run while the library works). Built as a shared library and driven with ctypes. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

static pthread_t writer;
static atomic_int running;
static atomic_llong flips;
static void *entry;
static int entry_bytes, writer_cpu;
static int64_t good_value, bad_value;

static void store(int64_t value)
{
    if (entry_bytes == 8)
        *(volatile int64_t *)entry = value;
    else
        *(volatile int32_t *)entry = (int32_t)value;
}

/* Stores value and keeps it a moment, so that each value is in place about half the time. */
static void hold(int64_t value)
{
    store(value);
    for (volatile int i = 0; i < 32; i++)
        ;
}

static void *flip(void *unused)
{
    (void)unused;
    if (writer_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(writer_cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    for (long long n = 1; atomic_load_explicit(&running, memory_order_relaxed); n++) {
        hold(bad_value);
        hold(good_value);
        atomic_store_explicit(&flips, n, memory_order_relaxed);
    }
    return NULL;
}

/* Starts a thread that writes bad, good, bad, good... to the int64 (bytes 8) or int32 at p, on
 * CPU `cpu` only (any CPU when cpu < 0). */
int flipper_start(void *p, int bytes, int64_t good, int64_t bad, int cpu)
{
    entry = p;
    entry_bytes = bytes;
    writer_cpu = cpu;
    good_value = good;
    bad_value = bad;
    atomic_store(&running, 1);
    return pthread_create(&writer, NULL, flip, NULL);
}

/* How many times the thread has flipped the value so far. */
long long flipper_flips(void) { return atomic_load_explicit(&flips, memory_order_relaxed); }

/* Stops the thread, leaving the good value in place. */
void flipper_stop(void)
{
    atomic_store(&running, 0);
    pthread_join(writer, NULL);
    store(good_value);
}
