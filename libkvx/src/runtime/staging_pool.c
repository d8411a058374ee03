/* staging_pool.c - see staging_pool.h. */
#include <pthread.h>
#include <stdlib.h>

#include "staging_pool.h"

#define POOL_SLOTS 8
#define DEFAULT_POOL_BYTES ((size_t)256 << 20)
#define MIN_BLOCK ((size_t)64 << 10)

typedef struct kept_block {
    const kvx_runtime_ops *ops; /* NULL: free slot */
    int32_t device;
    void *block;
    size_t capacity;
} kept_block;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static kept_block kept[POOL_SLOTS];

/* Read on every call, so that tests can change it between calls. */
static size_t pool_limit(void)
{
    const char *env = getenv("KVX_STAGING_POOL_BYTES");
    if (!env || !*env)
        return DEFAULT_POOL_BYTES;
    long long value = strtoll(env, NULL, 10);
    return value > 0 ? (size_t)value : 0;
}

size_t kvx_staging_pool_round(size_t bytes)
{
    size_t size = MIN_BLOCK;
    while (size < bytes && size <= ((size_t)-1 >> 1))
        size <<= 1;
    return size < bytes ? bytes : size;
}

void *kvx_staging_pool_take(const kvx_runtime_ops *ops, int32_t device, size_t bytes,
                            size_t *capacity)
{
    if (pool_limit() == 0)
        return NULL;
    pthread_mutex_lock(&pool_lock);
    kept_block *best = NULL;
    for (int i = 0; i < POOL_SLOTS; i++) {
        kept_block *k = &kept[i];
        if (k->ops == ops && k->device == device && k->capacity >= bytes &&
            (!best || k->capacity < best->capacity))
            best = k;
    }
    void *block = NULL;
    if (best) {
        block = best->block;
        *capacity = best->capacity;
        *best = (kept_block){0};
    }
    pthread_mutex_unlock(&pool_lock);
    return block;
}

int kvx_staging_pool_give(const kvx_runtime_ops *ops, int32_t device, void *block, size_t capacity)
{
    size_t limit = pool_limit();
    pthread_mutex_lock(&pool_lock);
    size_t total = capacity;
    kept_block *slot = NULL;
    for (int i = 0; i < POOL_SLOTS; i++) {
        total += kept[i].capacity;
        if (!kept[i].ops && !slot)
            slot = &kept[i];
    }
    int keep = slot && total <= limit;
    if (keep)
        *slot = (kept_block){ops, device, block, capacity};
    pthread_mutex_unlock(&pool_lock);
    return keep;
}
