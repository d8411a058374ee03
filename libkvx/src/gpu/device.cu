/* device.cu - availability, device selection, deferred errors and kvx_synchronize for the GPU
 * backend. */
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "../codec/rotated_token.h" /* KVX_ROT_RANGE_MESSAGE, kvx_rot_limit */
#include "gpu_device.h"

#define MAX_DEVICES 64

/* Whether this build has a kernel image for a device: fixed for the process once known. */
enum image_verdict { IMAGE_UNKNOWN = 0, IMAGE_RUNS, IMAGE_MISSING };

struct device_state {
    std::atomic<int> image{IMAGE_UNKNOWN};
    /* set once, after `reader`; NULL until the device's first kernel launch */
    std::atomic<kvx_gpu_deferred_error *> record{nullptr};
    gpuStream_t reader{}; /* private non-blocking stream that reads and clears the record */
    std::mutex read_lock; /* one reader at a time: see take_error() */
};

static device_state devices[MAX_DEVICES];
static std::mutex set_up_lock;

int32_t kvx_gpu_fail(gpuError_t error, const char *call)
{
    return kvx_fail(KVX_ERR_DEVICE, "%s: %s (%s error %d)", call, gpuGetErrorString(error),
                    KVX_GPU_NAME, (int)error);
}

kvx_gpu_device_scope::kvx_gpu_device_scope(int device)
{
    status_ = gpuGetDevice(&previous_);
    if (status_ == gpuSuccess && previous_ != device)
        status_ = gpuSetDevice(device);
    else
        previous_ = -1; /* nothing to restore */
}

kvx_gpu_device_scope::~kvx_gpu_device_scope()
{
    if (previous_ >= 0)
        (void)gpuSetDevice(previous_); /* a destructor cannot report; the call already did */
}

/* Lets this thread make calls that a stream capture in global or thread-local mode forbids
 * (allocating, creating and synchronising a private stream), so the first kvx call inside a
 * graph capture sets up without breaking it; restores the thread's mode afterwards. */
class relaxed_capture {
  public:
    relaxed_capture() { exchanged_ = gpuThreadExchangeStreamCaptureMode(&mode_) == gpuSuccess; }
    ~relaxed_capture()
    {
        if (exchanged_)
            (void)gpuThreadExchangeStreamCaptureMode(&mode_);
    }

  private:
    gpuStreamCaptureMode_t mode_ = gpuStreamCaptureModeRelaxed;
    bool exchanged_ = false;
};

/* Never launched: asking the runtime for its attributes tells whether this build has code for a
 * device (every kernel of the backend is built for the same targets). */
static __global__ void image_probe(void) {}

static bool is_missing_image(gpuError_t error)
{
    return error == gpuErrorInvalidDeviceFunction || error == gpuErrorNoKernelImage;
}

static gpuError_t probe_image(int device)
{
    relaxed_capture relaxed;
    kvx_gpu_device_scope scope(device);
    if (scope.status() != gpuSuccess)
        return scope.status();
    gpuFuncAttributes_t attributes;
    gpuError_t error = gpuFuncGetAttributes(&attributes, (const void *)image_probe);
    if (error != gpuSuccess)
        (void)gpuGetLastError(); /* or the caller's next launch check would report it */
    return error;
}

/* gpuSuccess when this build's kernels can run on `device`, else why not. Only the two definite
 * answers are kept: any other failure may pass. */
static gpuError_t image_status(int device)
{
    device_state *d = device < MAX_DEVICES ? &devices[device] : NULL;
    int known = d ? d->image.load() : IMAGE_UNKNOWN;
    if (known != IMAGE_UNKNOWN)
        return known == IMAGE_RUNS ? gpuSuccess : gpuErrorNoKernelImage;
    gpuError_t error = probe_image(device);
    if (d && (error == gpuSuccess || is_missing_image(error)))
        d->image.store(error == gpuSuccess ? IMAGE_RUNS : IMAGE_MISSING);
    return error;
}

/* KVX_ERR_NOT_AVAILABLE naming the device, its architecture and what to rebuild with. */
static int32_t fail_image(int device, gpuError_t error)
{
    gpuDeviceProp_t properties;
    char arch[64] = "?";
    const char *name = "?";
    if (gpuGetDeviceProperties(&properties, device) == gpuSuccess) {
        name = properties.name;
        gpuDeviceArch(&properties, arch, sizeof arch);
    } else {
        (void)gpuGetLastError(); /* the message below already says the device is unusable */
    }
    if (is_missing_image(error))
        return kvx_fail(KVX_ERR_NOT_AVAILABLE,
                        "%s: device %d (%s, %s%s) has no kernel image in this build (rebuild "
                        "with -D%s including %s)",
                        KVX_GPU_NAME, device, name, KVX_GPU_ARCH_PREFIX, arch,
                        KVX_GPU_TARGETS_OPTION, arch);
    return kvx_fail(KVX_ERR_NOT_AVAILABLE,
                    "%s: device %d (%s, %s%s) cannot run this build's kernels: %s (%s error %d)",
                    KVX_GPU_NAME, device, name, KVX_GPU_ARCH_PREFIX, arch, gpuGetErrorString(error),
                    KVX_GPU_NAME, (int)error);
}

/* The current device, or failing that any other, can run this build's kernels. Devices other
 * than the current one are probed (which creates their contexts) only when it cannot; an op on a
 * device without an image then fails on its own (kvx_gpu_error_record). */
static int any_device_runs(int count)
{
    int current = 0;
    if (gpuGetDevice(&current) != gpuSuccess)
        current = 0;
    gpuError_t error = image_status(current);
    for (int device = 0; error != gpuSuccess && device < count; device++)
        if (device != current && image_status(device) == gpuSuccess)
            return 1;
    if (error == gpuSuccess)
        return 1;
    fail_image(current, error);
    return 0;
}

extern "C" int32_t kvx_gpu_available(void)
{
    int count = 0;
    gpuError_t error = gpuGetDeviceCount(&count);
    if (error != gpuSuccess) {
        kvx_fail(KVX_ERR_NOT_AVAILABLE, "%s: no usable device: %s (error %d)", KVX_GPU_NAME,
                 gpuGetErrorString(error), (int)error);
        return 0;
    }
    if (count == 0) {
        kvx_fail(KVX_ERR_NOT_AVAILABLE, "%s: the runtime reports no devices", KVX_GPU_NAME);
        return 0;
    }
    return any_device_runs(count);
}

/* Allocates the record and zeroes it on a private non-blocking stream, which it keeps for reading
 * the record: stream 0 would wait on every blocking stream of the device, and is illegal to
 * touch while a graph is being captured. */
static int32_t set_up(device_state *d)
{
    relaxed_capture relaxed;
    void *memory = NULL;
    gpuStream_t reader{};
    gpuError_t error = gpuStreamCreateNonBlocking(&reader);
    if (error == gpuSuccess)
        error = gpuMalloc(&memory, sizeof(kvx_gpu_deferred_error));
    if (error == gpuSuccess)
        error = gpuMemsetAsync(memory, 0, sizeof(kvx_gpu_deferred_error), reader);
    if (error == gpuSuccess)
        error = gpuStreamSynchronize(reader);
    if (error != gpuSuccess) {
        if (memory)
            (void)gpuFree(memory);
        if (reader)
            (void)gpuStreamDestroy(reader);
        return kvx_gpu_fail(error, "setting up the deferred-error record");
    }
    d->reader = reader;
    d->record.store((kvx_gpu_deferred_error *)memory); /* publishes `reader` with it */
    return KVX_OK;
}

int32_t kvx_gpu_error_record(int device, kvx_gpu_deferred_error **record)
{
    if (device < 0 || device >= MAX_DEVICES)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT, "stream->device_index: expected 0..%d, got %d",
                        MAX_DEVICES - 1, device);
    device_state *d = &devices[device];
    if ((*record = d->record.load()))
        return KVX_OK;
    std::lock_guard<std::mutex> guard(set_up_lock);
    if (!d->record.load()) {
        gpuError_t error = image_status(device);
        if (error != gpuSuccess)
            return fail_image(device, error);
        int32_t rc = set_up(d);
        if (rc != KVX_OK)
            return rc;
    }
    *record = d->record.load();
    return KVX_OK;
}

/* A codec error a kernel recorded, worded like the CPU backend's up-front checks. */
static int32_t report_codec(const kvx_gpu_deferred_error *seen, unsigned long long index)
{
    switch (seen->kind) {
    case KVX_GPU_NON_FINITE:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "x: expected finite values, got inf or NaN in row %lld token %lld (found "
                        "on the device; that token was skipped)",
                        seen->value, seen->limit);
    case KVX_GPU_ROTATED_RANGE:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        KVX_ROT_RANGE_MESSAGE " (found on the device; that token was skipped)",
                        (double)kvx_rot_limit((int64_t)index), seen->value, seen->limit);
    case KVX_GPU_BAD_SYMBOL:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "symbols: expected 0..%lld, got %lld at flat index %llu of [layers, "
                        "tokens, channels] (found on the device; that symbol was skipped)",
                        seen->limit, seen->value, index);
    case KVX_GPU_BAD_CDF:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "cdf[%llu]: expected strictly increasing entries, got cdf[%lld] >= "
                        "cdf[%lld] (found on the device; that stream was skipped)",
                        index, seen->value, seen->value + 1);
    case KVX_GPU_BAD_LENGTH:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "lengths[%llu]: expected 0..%lld (stream_capacity), got %lld (found on "
                        "the device; that stream was not decoded)",
                        index, seen->limit, seen->value);
    case KVX_GPU_BAD_END_OFFSET:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "end_offsets[%llu]: expected non-decreasing offsets at most num_bytes "
                        "%lld, got %lld (found on the device; that stream was not decoded)",
                        index, seen->limit, seen->value);
    case KVX_GPU_STREAM_OVERFLOW:
        return kvx_fail(KVX_ERR_BUFFER_TOO_SMALL,
                        "stream_capacity: stream %llu needs %lld bytes, got %lld "
                        "(kvx_codec_stream_bound gives a safe capacity; found on the device)",
                        index, seen->value, seen->limit);
    default: return kvx_fail(KVX_ERR_INTERNAL, "unknown device error kind %d", (int)seen->kind);
    }
}

/* The error a kernel recorded, worded like the CPU backend's up-front checks. */
static int32_t report(const kvx_gpu_deferred_error *seen)
{
    unsigned long long index = seen->index;
    switch (seen->kind) {
    case KVX_GPU_NON_FINITE:
    case KVX_GPU_ROTATED_RANGE:
    case KVX_GPU_BAD_SYMBOL:
    case KVX_GPU_BAD_CDF:
    case KVX_GPU_BAD_LENGTH:
    case KVX_GPU_BAD_END_OFFSET:
    case KVX_GPU_STREAM_OVERFLOW: return report_codec(seen, index);
    case KVX_GPU_BAD_SLOT:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "slot_mapping[%llu]: slot %lld is out of range; the paged cache holds "
                        "%lld slots (found on the device; that token was skipped)",
                        index, seen->value, seen->limit);
    case KVX_GPU_BAD_POSITION:
    case KVX_GPU_BAD_OLD_POSITION:
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "%s[%llu]: position %lld is outside the cache's 0..%lld (found on the "
                        "device; that token was skipped)",
                        seen->kind == KVX_GPU_BAD_OLD_POSITION ? "old_positions" : "positions",
                        index, seen->value, seen->limit - 1);
    default: return kvx_fail(KVX_ERR_INTERNAL, "unknown device error kind %d", (int)seen->kind);
    }
}

/* Copies the record's state word until no kernel is writing it. The caller's stream has
 * finished, so a WRITING record belongs to a kernel on another stream, which publishes it within
 * microseconds unless the GPU was preempted; a second is a generous bound. */
static int32_t settled_state(device_state *d, unsigned *state)
{
    const kvx_gpu_deferred_error *record = d->record.load();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    for (;;) {
        gpuError_t error = gpuMemcpyAsync(state, &record->state, sizeof *state,
                                          gpuMemcpyDeviceToHost, d->reader);
        if (error == gpuSuccess)
            error = gpuStreamSynchronize(d->reader);
        if (error != gpuSuccess)
            return kvx_gpu_fail(error, "reading the deferred-error record");
        if (*state != KVX_GPU_RECORD_WRITING)
            return KVX_OK;
        if (std::chrono::steady_clock::now() > deadline)
            return kvx_fail(KVX_ERR_DEVICE,
                            "%s: a kernel on another stream left the deferred-error record "
                            "half-written for over a second; it is read at the next check",
                            KVX_GPU_NAME);
        std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
}

/* Copies a published record, then frees it for the next error. The fields are copied only after
 * a separate copy saw PUBLISHED: one copy of the whole record could read the fields before a
 * writer wrote them and the state after it published. Copy and clear run in order on one
 * stream, so the clear lands after the copy; while the state is PUBLISHED no kernel writes the
 * record (their atomicCAS from FREE fails), and read_lock makes this the only reader, so clearing
 * the state word alone loses nothing. */
static int32_t take_published(device_state *d, kvx_gpu_deferred_error *seen)
{
    kvx_gpu_deferred_error *record = d->record.load();
    gpuError_t error = gpuMemcpyAsync(seen, record, sizeof *seen, gpuMemcpyDeviceToHost, d->reader);
    if (error == gpuSuccess)
        error = gpuMemsetAsync(&record->state, 0, sizeof record->state, d->reader);
    if (error == gpuSuccess)
        error = gpuStreamSynchronize(d->reader);
    return error == gpuSuccess ? KVX_OK : kvx_gpu_fail(error, "reading the deferred-error record");
}

/* Reports the first error any stream recorded on the device since the last check, once. Readers
 * take turns: two interleaved ones could both report one error, or one could clear the state
 * while another copies a record a kernel is rewriting. */
static int32_t take_error(device_state *d)
{
    std::lock_guard<std::mutex> guard(d->read_lock);
    unsigned state = KVX_GPU_RECORD_FREE;
    int32_t rc = settled_state(d, &state);
    if (rc != KVX_OK || state != KVX_GPU_RECORD_PUBLISHED)
        return rc;
    kvx_gpu_deferred_error seen;
    rc = take_published(d, &seen);
    return rc != KVX_OK ? rc : report(&seen);
}

extern "C" int32_t kvx_gpu_synchronize(const kvx_stream *stream)
{
    int device = kvx_gpu_device_index(stream);
    kvx_gpu_device_scope scope(device);
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    gpuError_t error = gpuStreamSynchronize(kvx_gpu_stream(stream));
    if (error != gpuSuccess)
        return kvx_gpu_fail(error, "synchronizing the stream");
    if (device < 0 || device >= MAX_DEVICES)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT, "stream->device_index: expected 0..%d, got %d",
                        MAX_DEVICES - 1, device);
    device_state *d = &devices[device];
    /* no record: no kvx kernel ran on this device, so there is nothing to report */
    return d->record.load() ? take_error(d) : KVX_OK;
}
