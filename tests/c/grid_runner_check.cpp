/*
 * grid_runner_check.cpp - host execution's grid runner (libkvx/src/gpu/host/) on small kernels
 * whose right and wrong behaviour is known, driven by tests/test_gpu_host_runner.py.
 *
 * Usage: grid_runner_check CHECK, where CHECK is one of the functions below; prints one line
 * and exits 0 when the runner behaved as a GPU would, 1 when not.
 */
#include <stdio.h>
#include <string.h>

#include <vector>

#include "gpu_runtime.h"

#define THREADS 64

/* The thread a thread reads from: its neighbour above (the last thread reads its own). */
static inline unsigned neighbour(unsigned t) { return t + 1 < THREADS ? t + 1 : t; }

/* Each thread stores its index in shared memory, then (after a barrier, or not) reads its
 * neighbour's: without the barrier the neighbour may not have written yet. Threads run first to
 * last see stale values (the previous launch's: each launch writes its own); last to first,
 * right ones: only a runner that varies the order shows the bug whichever order a GPU would use. */
__global__ void neighbours(int *out, int with_barrier, int launch)
{
    __shared__ int slots[THREADS];
    slots[threadIdx.x] = (int)threadIdx.x + 1000 * (int)blockIdx.x + 100000 * launch;
    if (with_barrier)
        __syncthreads();
    out[blockIdx.x * THREADS + threadIdx.x] = slots[neighbour(threadIdx.x)];
}

/* Half the threads return before a barrier the others wait at. */
__global__ void divergent(int *out)
{
    if (threadIdx.x % 2)
        return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

/* Records which (block, thread) ran, and the coordinates it saw. */
__global__ void census(int *hits, unsigned *seen_dims)
{
    unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    atomicAdd(&hits[block * blockDim.x * blockDim.y * blockDim.z + thread], 1);
    seen_dims[0] = blockDim.x * blockDim.y * blockDim.z;
    seen_dims[1] = gridDim.x * gridDim.y * gridDim.z;
}

/* Dynamic shared memory: thread 0 writes n values, all read them after the barrier. */
__global__ void dynamic_shared(int *out, int n)
{
    KVX_DYNAMIC_SHARED(int, values);
    if (threadIdx.x == 0)
        for (int i = 0; i < n; i++)
            values[i] = i * i;
    __syncthreads();
    int sum = 0;
    for (int i = 0; i < n; i++)
        sum += values[i];
    out[threadIdx.x] = sum;
}

/* Launches of `blocks` blocks; how many gave a wrong result. */
static int run_neighbours(int with_barrier, int blocks)
{
    std::vector<int> out(blocks * THREADS);
    int wrong_launches = 0;
    for (int launch = 0; launch < 6; launch++) { /* the order changes from launch to launch */
        KVX_LAUNCH(neighbours, blocks, THREADS, 0, nullptr)(out.data(), with_barrier, launch);
        if (gpuGetLastError() != gpuSuccess)
            return -1;
        for (int b = 0; b < blocks; b++)
            for (int t = 0; t < THREADS; t++)
                if (out[b * THREADS + t] != (int)neighbour(t) + 1000 * b + 100000 * launch) {
                    wrong_launches++;
                    b = blocks;
                    break;
                }
    }
    return wrong_launches;
}

static int barrier_orders_threads(void)
{
    int wrong = run_neighbours(1, 3);
    printf("with the barrier: %d of 6 launches wrong\n", wrong);
    return wrong == 0 ? 0 : 1;
}

static int missing_barrier_shows(void)
{
    /* one block: its threads' order is the launch's, first to last, last to first or shuffled */
    int wrong = run_neighbours(0, 1);
    printf("without the barrier: %d of 6 launches wrong\n", wrong);
    return wrong > 0 && wrong < 6 ? 0 : 1; /* some orders hide it, others show it */
}

static int divergent_barrier_fails(void)
{
    std::vector<int> out(THREADS);
    KVX_LAUNCH(divergent, 1, THREADS, 0, nullptr)(out.data());
    gpuError_t error = gpuGetLastError();
    printf("divergent barrier: error %d: %s\n", (int)error, gpuGetErrorString(error));
    return error == gpuErrorLaunchFailure && strstr(gpuGetErrorString(error), "__syncthreads") ? 0
                                                                                               : 1;
}

static int every_thread_runs_once(void)
{
    const dim3 grid(3, 2, 2), block(8, 4, 2);
    std::vector<int> hits(3 * 2 * 2 * 8 * 4 * 2);
    unsigned dims[2] = {0, 0};
    KVX_LAUNCH(census, grid, block, 0, nullptr)(hits.data(), dims);
    int bad = gpuGetLastError() != gpuSuccess || dims[0] != 64 || dims[1] != 12;
    for (int h : hits)
        bad |= h != 1;
    printf("census: %s\n", bad ? "wrong" : "every thread once");
    return bad;
}

static int configuration_is_checked(void)
{
    std::vector<int> out(2048);
    unsigned dims[2];
    int failures = 0;
    KVX_LAUNCH(census, 1, 2048, 0, nullptr)(out.data(), dims); /* > 1024 threads */
    failures += gpuGetLastError() == gpuErrorInvalidConfiguration;
    KVX_LAUNCH(census, 0, 32, 0, nullptr)(out.data(), dims); /* an empty grid */
    failures += gpuGetLastError() == gpuErrorInvalidConfiguration;
    KVX_LAUNCH(census, dim3(1, 70000), 32, 0, nullptr)(out.data(), dims); /* grid.y > 65535 */
    failures += gpuGetLastError() == gpuErrorInvalidConfiguration;
    KVX_LAUNCH(dynamic_shared, 1, 32, 64 * 1024, nullptr)(out.data(), 4); /* > 48 KiB */
    failures += gpuGetLastError() == gpuErrorInvalidValue;
    printf("bad configurations refused: %d of 4\n", failures);
    return failures == 4 ? 0 : 1;
}

static int dynamic_shared_memory_works(void)
{
    std::vector<int> out(THREADS);
    KVX_LAUNCH(dynamic_shared, 1, THREADS, 100 * sizeof(int), nullptr)(out.data(), 100);
    int bad = gpuGetLastError() != gpuSuccess;
    for (int v : out)
        bad |= v != 328350; /* sum of i*i, i < 100 */
    printf("dynamic shared memory: %s\n", bad ? "wrong" : "right");
    return bad;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*check)(void);
    } checks[] = {
        {"barrier_orders_threads", barrier_orders_threads},
        {"missing_barrier_shows", missing_barrier_shows},
        {"divergent_barrier_fails", divergent_barrier_fails},
        {"every_thread_runs_once", every_thread_runs_once},
        {"configuration_is_checked", configuration_is_checked},
        {"dynamic_shared_memory_works", dynamic_shared_memory_works},
    };
    for (const auto &c : checks)
        if (argc == 2 && strcmp(argv[1], c.name) == 0)
            return c.check();
    fprintf(stderr, "usage: %s CHECK\n", argv[0]);
    return 2;
}
