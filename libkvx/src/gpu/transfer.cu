/*
 * transfer.cu - KV transfer on CUDA and HIP GPUs.
 *
 * One kernel for every layout: a group of 32 threads copies one (token, plane) row, head by head,
 * with the widest vector (16, 8, 4, 2 or 1 bytes) that every address and stride allows. The
 * pointer table travels in the kernel's parameters (no per-call device allocation); the slot
 * mapping is read where it lives (device memory, or pinned host memory through unified
 * addressing), and the dense side may be pinned host memory, so an offload to CPU RAM is one
 * launch. Out-of-range slots are skipped and recorded for kvx_synchronize().
 */
#include "gpu_device.h"

#define MAX_BASES 256     /* pointers per launch; more layers take more launches */
#define GROUP 32          /* threads per row */
#define BLOCK_THREADS 256 /* 8 rows per thread block */

struct transfer_args {
    char *bases[MAX_BASES];
    int per_kv_bases; /* bases[kv * num_layers + layer] instead of bases[layer] */
    int num_layers;
    int num_heads;
    int to_dense;
    long long head_bytes;
    long long block_size, capacity;
    long long paged_kv, paged_block, paged_token, paged_head; /* byte strides */
    char *dense;
    long long dense_kv, dense_layer, dense_token, dense_head;
    const long long *slots;
    long long num_tokens;
    kvx_gpu_deferred_error *error;
};

template <typename V>
__global__ void __launch_bounds__(BLOCK_THREADS) transfer_rows(const transfer_args a)
{
    const long long token = (long long)blockIdx.x * (BLOCK_THREADS / GROUP) + threadIdx.x / GROUP;
    const int lane = threadIdx.x % GROUP;
    if (token >= a.num_tokens)
        return;
    /* One volatile load into a register, checked below and the only value used: the mapping may
     * be pinned host memory that a host thread rewrites during the kernel. */
    const long long slot = *(const volatile long long *)&a.slots[token];
    if (slot < 0)
        return;
    if (slot >= a.capacity) {
        if (lane == 0 && blockIdx.y == 0)
            kvx_gpu_record_error(a.error, KVX_GPU_BAD_SLOT, token, slot, a.capacity);
        return;
    }
    const int kv = blockIdx.y / a.num_layers, layer = blockIdx.y % a.num_layers;
    char *paged = a.bases[a.per_kv_bases ? blockIdx.y : layer] + kv * a.paged_kv +
                  (slot / a.block_size) * a.paged_block + (slot % a.block_size) * a.paged_token;
    char *dense = a.dense + kv * a.dense_kv + layer * a.dense_layer + token * a.dense_token;
    const long long per_head = a.head_bytes / (long long)sizeof(V);
    const long long total = per_head * a.num_heads;
    for (long long i = lane; i < total; i += GROUP) {
        const long long head = i / per_head, unit = i - head * per_head;
        V *p = reinterpret_cast<V *>(paged + head * a.paged_head) + unit;
        V *d = reinterpret_cast<V *>(dense + head * a.dense_head) + unit;
        if (a.to_dense)
            *d = *p;
        else
            *p = *d;
    }
}

/* The widest power-of-two access every address and stride is a multiple of (max 16 bytes). */
static int vector_bytes(const kvx_paged_desc *p, const kvx_dense_desc *d, long long elem)
{
    unsigned long long bits = (unsigned long long)(p->head_size * elem) |
                              (unsigned long long)(p->kv_stride * elem) |
                              (unsigned long long)(p->block_stride * elem) |
                              (unsigned long long)(p->token_stride * elem) |
                              (unsigned long long)(p->head_stride * elem) |
                              (unsigned long long)(d->kv_stride * elem) |
                              (unsigned long long)(d->layer_stride * elem) |
                              (unsigned long long)(d->token_stride * elem) |
                              (unsigned long long)(d->head_stride * elem) |
                              (unsigned long long)(uintptr_t)d->base;
    for (int i = 0; i < p->num_bases; i++)
        bits |= (unsigned long long)(uintptr_t)p->bases[i];
    int width = 16;
    while (width > 1 && (bits & (unsigned long long)(width - 1)))
        width /= 2;
    return width;
}

static void launch(const transfer_args &a, int width, int planes, gpuStream_t stream)
{
    dim3 grid((unsigned)((a.num_tokens + BLOCK_THREADS / GROUP - 1) / (BLOCK_THREADS / GROUP)),
              (unsigned)planes);
    switch (width) {
    case 16: KVX_LAUNCH(transfer_rows<uint4>, grid, BLOCK_THREADS, 0, stream)(a); break;
    case 8: KVX_LAUNCH(transfer_rows<uint2>, grid, BLOCK_THREADS, 0, stream)(a); break;
    case 4: KVX_LAUNCH(transfer_rows<unsigned>, grid, BLOCK_THREADS, 0, stream)(a); break;
    case 2: KVX_LAUNCH(transfer_rows<unsigned short>, grid, BLOCK_THREADS, 0, stream)(a); break;
    default: KVX_LAUNCH(transfer_rows<unsigned char>, grid, BLOCK_THREADS, 0, stream)(a); break;
    }
}

static transfer_args base_args(const kvx_paged_desc *p, const kvx_dense_desc *d,
                               const int64_t *slots, int32_t direction, long long elem)
{
    transfer_args a = {};
    a.per_kv_bases = p->num_bases != p->num_layers;
    a.num_heads = p->num_heads;
    a.to_dense = direction == KVX_PAGED_TO_DENSE;
    a.head_bytes = p->head_size * elem;
    a.block_size = p->block_size;
    a.capacity = p->num_blocks * p->block_size;
    a.paged_kv = p->kv_stride * elem;
    a.paged_block = p->block_stride * elem;
    a.paged_token = p->token_stride * elem;
    a.paged_head = p->head_stride * elem;
    a.dense_kv = d->kv_stride * elem;
    a.dense_layer = d->layer_stride * elem;
    a.dense_token = d->token_stride * elem;
    a.dense_head = d->head_stride * elem;
    a.slots = (const long long *)slots;
    a.num_tokens = d->num_tokens;
    return a;
}

extern "C" int32_t kvx_gpu_transfer(const kvx_transfer_args *args, const kvx_stream *stream)
{
    const kvx_paged_desc *p = args->paged;
    const kvx_dense_desc *d = args->dense;
    int device = kvx_gpu_device_index(stream);
    kvx_gpu_device_scope scope(device);
    if (scope.status() != gpuSuccess)
        return kvx_gpu_fail(scope.status(), "selecting stream->device_index");
    long long elem = kvx_dtype_size(p->dtype);
    transfer_args a = base_args(p, d, args->slot_mapping, args->direction, elem);
    int32_t rc = kvx_gpu_error_record(device, &a.error);
    if (rc != KVX_OK)
        return rc;
    int width = vector_bytes(p, d, elem);
    int per_launch = a.per_kv_bases ? MAX_BASES / p->num_kv : MAX_BASES;
    for (int first = 0; first < p->num_layers; first += per_launch) {
        int layers = p->num_layers - first < per_launch ? p->num_layers - first : per_launch;
        a.num_layers = layers;
        a.dense = (char *)d->base + first * a.dense_layer;
        for (int kv = 0; kv < (a.per_kv_bases ? p->num_kv : 1); kv++)
            for (int l = 0; l < layers; l++)
                a.bases[kv * layers + l] =
                    (char *)p->bases[kv * p->num_layers * a.per_kv_bases + first + l];
        launch(a, width, p->num_kv * layers, kvx_gpu_stream(stream));
        gpuError_t error = gpuGetLastError();
        if (error != gpuSuccess)
            return kvx_gpu_fail(error, "launching the transfer kernel");
    }
    return KVX_OK;
}
