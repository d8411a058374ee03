/*
 * grid_runner.cpp - runs a kernel launch on the CPU for host execution (gpu_host_runtime.h).
 *
 * The launch configuration is checked as CUDA checks it. Blocks run one after another; the
 * threads of a block are fibers (ucontext) on the launching OS thread, each run until it
 * reaches __syncthreads or returns. When every thread of the block waits at the barrier, all
 * are released into the next phase. A block whose threads disagree (some returned, some wait)
 * is a kernel bug that hangs or corrupts a GPU: the launch fails with a message.
 *
 * Order: within a phase the threads run one at a time, to completion of the phase, in an order
 * that changes with the launch, the block and the phase (first to last, last to first, or
 * shuffled), and the blocks of a launch run in a changing order too. A thread that reads what
 * another writes before a barrier that is missing then sees the value in some orders and not
 * in others, and the result differs from the CPU backend's. KVX_GPU_HOST_SCHEDULE=forward,
 * reverse or shuffle fixes one order (to reproduce a failure); the default varies them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <random>
#include <vector>

#include "gpu_host_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#define KVX_HOST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KVX_HOST_ASAN 1
#endif
#endif
#if defined(KVX_HOST_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

namespace {

constexpr unsigned kMaxBlockThreads = 1024;
constexpr size_t kMaxSharedBytes = 48 * 1024; /* without CUDA's opt-in for more */
/* ASan's redzones make frames several times larger than in a plain build. */
constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kGuardBytes = 4096;
constexpr unsigned char kSharedFill = 0xa5; /* leftovers, as in a GPU's shared memory */

enum class order { forward, reverse, shuffle };
enum class state { ready, at_barrier, done };

struct fiber {
    ucontext_t context;
    char *stack = nullptr; /* kGuardBytes of PROT_NONE, then the stack */
    state now = state::ready;
    uint3 thread_idx{};
};

/* One OS thread's running block. Fibers and their stacks are kept for the next launch; each
 * fiber stays at one address, since a ucontext_t points into itself. */
struct block_run {
    ucontext_t scheduler;
    std::vector<std::unique_ptr<fiber>> fibers;
    fiber *current = nullptr;
    void (*thread_body)(void *) = nullptr;
    void *context = nullptr;
    std::vector<unsigned char> dynamic_shared;
    std::vector<unsigned> thread_order; /* the order of the phase being run */
    const void *scheduler_stack = nullptr; /* for ASan's fiber switches */
    size_t scheduler_stack_size = 0;
};

thread_local block_run run;
std::atomic<unsigned long long> launches{0};

/* ---------------------------------------------------------------- fibers */

void leave_fiber(bool finished)
{
#if defined(KVX_HOST_ASAN)
    void *fake_stack = nullptr;
    __sanitizer_start_switch_fiber(finished ? nullptr : &fake_stack, run.scheduler_stack,
                                   run.scheduler_stack_size);
    swapcontext(&run.current->context, &run.scheduler);
    __sanitizer_finish_switch_fiber(fake_stack, &run.scheduler_stack, &run.scheduler_stack_size);
#else
    (void)finished;
    swapcontext(&run.current->context, &run.scheduler);
#endif
}

void fiber_main()
{
#if defined(KVX_HOST_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &run.scheduler_stack, &run.scheduler_stack_size);
#endif
    run.thread_body(run.context);
    run.current->now = state::done;
    leave_fiber(true);
}

void enter_fiber(fiber &f)
{
    run.current = &f;
    kvx_host_now.thread_idx = f.thread_idx;
#if defined(KVX_HOST_ASAN)
    void *fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, f.stack + kGuardBytes, kStackBytes);
    swapcontext(&run.scheduler, &f.context);
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
    swapcontext(&run.scheduler, &f.context);
#endif
}

bool ensure_fibers(size_t count)
{
    while (run.fibers.size() < count) {
        void *memory = mmap(nullptr, kGuardBytes + kStackBytes, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED)
            return false;
        auto f = std::make_unique<fiber>();
        f->stack = static_cast<char *>(memory);
        mprotect(f->stack, kGuardBytes, PROT_NONE); /* an overflow faults instead of corrupting */
        if (getcontext(&f->context) != 0)
            return false;
        run.fibers.push_back(std::move(f));
    }
    return true;
}

void start_fiber(fiber &f, uint3 thread_idx)
{
    f.thread_idx = thread_idx;
    f.now = state::ready;
    f.context.uc_stack.ss_sp = f.stack + kGuardBytes;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_main, 0);
}

/* ---------------------------------------------------------------- orders */

order chosen_order(unsigned long long variant)
{
    static const char *setting = getenv("KVX_GPU_HOST_SCHEDULE");
    if (setting && strcmp(setting, "forward") == 0)
        return order::forward;
    if (setting && strcmp(setting, "reverse") == 0)
        return order::reverse;
    if (setting && strcmp(setting, "shuffle") == 0)
        return order::shuffle;
    return static_cast<order>(variant % 3);
}

void arrange(std::vector<unsigned> &items, order how, unsigned long long seed)
{
    for (unsigned i = 0; i < items.size(); i++)
        items[i] = i;
    if (how == order::reverse)
        std::reverse(items.begin(), items.end());
    else if (how == order::shuffle)
        std::shuffle(items.begin(), items.end(), std::mt19937_64(seed));
}

/* ---------------------------------------------------------------- one block */

/* Runs the block's threads phase by phase; false (with the error set) if they diverge. */
bool run_block(const kvx_host_launch &launch, unsigned long long launch_number,
               unsigned long long block_number)
{
    const dim3 b = launch.block;
    const unsigned count = b.x * b.y * b.z;
    for (unsigned i = 0; i < count; i++)
        start_fiber(*run.fibers[i], uint3{i % b.x, i / b.x % b.y, i / (b.x * b.y)});
    std::fill(run.dynamic_shared.begin(), run.dynamic_shared.end(), kSharedFill);
    run.thread_order.resize(count);
    for (unsigned long long phase = 0;; phase++) {
        const unsigned long long variant = launch_number + block_number + phase;
        arrange(run.thread_order, chosen_order(variant), variant * 0x9e3779b97f4a7c15ull + count);
        for (unsigned i : run.thread_order)
            if (run.fibers[i]->now == state::ready)
                enter_fiber(*run.fibers[i]);
        unsigned waiting = 0, done = 0;
        for (unsigned i = 0; i < count; i++) {
            waiting += run.fibers[i]->now == state::at_barrier;
            done += run.fibers[i]->now == state::done;
        }
        if (waiting == 0)
            return true;
        if (done > 0) {
            char message[200];
            snprintf(message, sizeof message,
                     "host execution: in block %llu, %u threads wait at __syncthreads() while %u "
                     "have returned (a barrier in divergent code)",
                     block_number, waiting, done);
            kvx_host_set_error(gpuErrorLaunchFailure, message);
            return false;
        }
        for (unsigned i = 0; i < count; i++)
            run.fibers[i]->now = state::ready;
    }
}

bool valid_configuration(const kvx_host_launch &launch)
{
    const dim3 g = launch.grid, b = launch.block;
    const unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
    char message[200];
    if (threads == 0 || threads > kMaxBlockThreads || b.z > 64 || g.x == 0 || g.y == 0 ||
        g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
        snprintf(message, sizeof message,
                 "host execution: invalid configuration: grid (%u, %u, %u), block (%u, %u, %u)",
                 g.x, g.y, g.z, b.x, b.y, b.z);
        kvx_host_set_error(gpuErrorInvalidConfiguration, message);
        return false;
    }
    if (launch.shared_bytes > kMaxSharedBytes) {
        snprintf(message, sizeof message,
                 "host execution: %zu bytes of dynamic shared memory, more than %zu",
                 launch.shared_bytes, kMaxSharedBytes);
        kvx_host_set_error(gpuErrorInvalidValue, message);
        return false;
    }
    return true;
}

} // namespace

void kvx_host_syncthreads(void)
{
    run.current->now = state::at_barrier;
    leave_fiber(false);
}

void *kvx_host_dynamic_shared(void) { return run.dynamic_shared.data(); }

void kvx_host_run_grid(const kvx_host_launch &launch, void (*thread_body)(void *), void *context)
{
    if (!valid_configuration(launch))
        return;
    const dim3 g = launch.grid, b = launch.block;
    if (!ensure_fibers((size_t)b.x * b.y * b.z)) {
        kvx_host_set_error(gpuErrorMemoryAllocation, "host execution: no memory for fibers");
        return;
    }
    const unsigned long long launch_number = launches.fetch_add(1);
    run.thread_body = thread_body;
    run.context = context;
    run.dynamic_shared.assign(launch.shared_bytes, kSharedFill);
    kvx_host_now.block_dim = b;
    kvx_host_now.grid_dim = g;
    const unsigned long long blocks = (unsigned long long)g.x * g.y * g.z;
    std::vector<unsigned> sequence;
    /* Grids of up to 2^16 blocks run in a changing order; larger ones (rare in tests) in order. */
    if (blocks <= 65536) {
        sequence.resize(blocks);
        arrange(sequence, chosen_order(launch_number), launch_number);
    }
    for (unsigned long long n = 0; n < blocks; n++) {
        const unsigned long long block = sequence.empty() ? n : sequence[n];
        kvx_host_now.block_idx = uint3{(unsigned)(block % g.x), (unsigned)(block / g.x % g.y),
                                       (unsigned)(block / ((unsigned long long)g.x * g.y))};
        if (!run_block(launch, launch_number, block))
            return;
    }
}
