/*
 * host_memory.c - kvx_host_alloc and kvx_host_free: the checks, the backend's allocation aligned
 * to a page, and a registry of what was handed out.
 *
 * Each backend frees with its own runtime call (free, cudaFreeHost, aclrtFreeHost, ...), and
 * handing one of them memory of another, or memory already freed, is undefined behaviour there.
 * The registry turns such a call into KVX_ERR_INVALID_ARGUMENT, and keeps what freeing needs but
 * the caller does not pass: the backend's own pointer (before alignment), the size and the
 * device. It is an open-addressing hash table under one lock, held only around table updates,
 * never across a runtime call.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "../core/kvx_internal.h"

typedef struct record {
    void *ptr; /* what the caller got; NULL marks a free slot */
    void *raw; /* what the backend's host_alloc returned */
    size_t bytes;
    int32_t device_type, device_index;
} record;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static record *table;   /* capacity slots, at most half used */
static size_t capacity; /* a power of two */
static size_t used;

/* fork() while another thread holds the lock would leave the child's copy locked for ever. */
static void lock_registry(void) { pthread_mutex_lock(&registry_lock); }
static void unlock_registry(void) { pthread_mutex_unlock(&registry_lock); }
static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static void register_fork_handlers(void)
{
    pthread_atfork(lock_registry, unlock_registry, unlock_registry);
}

static size_t home(const void *ptr, size_t mask)
{
    /* the pointers are page-aligned: their low bits say nothing */
    uint64_t h = (uint64_t)((uintptr_t)ptr >> 12) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & mask;
}

/* The slot holding ptr, or the free slot where it would go. Lock held. */
static size_t find(const void *ptr)
{
    size_t mask = capacity - 1, i = home(ptr, mask);
    while (table[i].ptr && table[i].ptr != ptr)
        i = (i + 1) & mask;
    return i;
}

/* Doubles the table (or creates it). Lock held. */
static int grow(void)
{
    size_t old_capacity = capacity, new_capacity = capacity ? 2 * capacity : 64;
    record *old = table, *fresh = calloc(new_capacity, sizeof *fresh);
    if (!fresh)
        return 0;
    table = fresh;
    capacity = new_capacity;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].ptr)
            table[find(old[i].ptr)] = old[i];
    free(old);
    return 1;
}

static int insert(const record *r)
{
    lock_registry();
    int ok = (used + 1) * 2 <= capacity || grow();
    if (ok) {
        table[find(r->ptr)] = *r;
        used++;
    }
    unlock_registry();
    return ok;
}

/* Empties slot i, moving later entries of its probe run back so that every entry stays
 * reachable from its home slot (no tombstones). Lock held. */
static void erase(size_t i)
{
    size_t mask = capacity - 1;
    for (size_t j = i;;) {
        table[i].ptr = NULL;
        for (;;) {
            j = (j + 1) & mask;
            if (!table[j].ptr)
                return;
            size_t k = home(table[j].ptr, mask);
            /* the entry at j stays where it is when its home lies cyclically in (i, j] */
            if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
                continue;
            table[i] = table[j];
            i = j;
            break;
        }
    }
}

/* Removes ptr's record into *out when it belongs to device_type. */
static int32_t take(void *ptr, int32_t device_type, record *out)
{
    int32_t rc = KVX_OK;
    lock_registry();
    size_t i = capacity ? find(ptr) : 0;
    if (!capacity || !table[i].ptr)
        rc = FAIL_ARG("ptr: %p is not memory from kvx_host_alloc, or was freed already", ptr);
    else if (table[i].device_type != device_type)
        rc = FAIL_ARG("ptr: %p was allocated for device type %d, not %d (pass the device_type "
                      "given to kvx_host_alloc)",
                      ptr, (int)table[i].device_type, (int)device_type);
    else {
        *out = table[i];
        erase(i);
        used--;
    }
    unlock_registry();
    return rc;
}

static size_t page_size(void)
{
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)page : 4096;
}

int32_t kvx_host_alloc(int32_t device_type, int32_t device_index, int64_t bytes, void **ptr)
{
    int32_t rc;
    size_t page = page_size();
    kvx_clear_error();
    if ((rc = kvx_check_range("bytes", bytes, 1, INT64_MAX - (int64_t)page)) ||
        (rc = kvx_check_range("device_index", device_index, 0, INT32_MAX)))
        return rc;
    if (!ptr)
        return FAIL_ARG("ptr: expected where to store the allocation's address, got NULL");
    pthread_once(&fork_handlers_once, register_fork_handlers);
    kvx_stream device = {device_type, device_index, NULL};
    KVX_DISPATCH(backend, &device, host_alloc, "host_alloc");
    /* where the backend does not promise a page, a page more always holds one that starts on
     * a page boundary and is followed by `bytes` bytes */
    size_t asked = (size_t)bytes + (backend->host_alloc_page_aligned ? 0 : page);
    void *raw = NULL;
    if ((rc = backend->host_alloc(&(kvx_host_alloc_args){asked, &raw}, &device)))
        return rc;
    record r = {(void *)(((uintptr_t)raw + page - 1) & ~(uintptr_t)(page - 1)), raw, asked,
                device_type, device_index};
    if (!insert(&r)) {
        backend->host_free(&(kvx_host_free_args){raw, asked}, &device);
        return kvx_fail(KVX_ERR_OUT_OF_MEMORY,
                        "host_alloc: cannot grow the table of host allocations");
    }
    *ptr = r.ptr;
    return KVX_OK;
}

int32_t kvx_host_free(int32_t device_type, void *ptr)
{
    int32_t rc;
    record r;
    kvx_clear_error();
    if (!ptr)
        return KVX_OK;
    if ((rc = take(ptr, device_type, &r)))
        return rc;
    kvx_stream device = {r.device_type, r.device_index, NULL};
    const kvx_backend *backend = kvx_backend_for(&device);
    rc = backend ? backend->host_free(&(kvx_host_free_args){r.raw, r.bytes}, &device)
                 : KVX_ERR_NOT_AVAILABLE;
    if (rc)
        insert(&r); /* still allocated: a later call may free it; the slot just freed holds it */
    return rc;
}
