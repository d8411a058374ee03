/*
 * staging_pool.h - pinned staging blocks kept between calls of the host-staged codec.
 *
 * Allocating page-locked memory is slow (the runtime pins every page, and a fresh block
 * page-faults on first use), and a KV codec call stages tens of MiB, so the blocks of finished
 * calls are kept for the next ones: a few blocks per (runtime, device), up to
 * KVX_STAGING_POOL_BYTES in all (default 256 MiB; 0 turns the pool off). Blocks are only ever
 * given back once no copy can touch them, so reuse is safe; they are freed when the pool is
 * full, and otherwise live as long as the process.
 */
#ifndef KVX_STAGING_POOL_H
#define KVX_STAGING_POOL_H

#include <stddef.h>

#include "runtime_ops.h"

/* A kept block of at least `bytes` for this runtime and device (the smallest that fits), with
 * its size in *capacity; NULL when there is none. */
void *kvx_staging_pool_take(const kvx_runtime_ops *ops, int32_t device, size_t bytes,
                            size_t *capacity);

/* Keeps a block for later calls; returns 0 when the pool is full or off (then the caller frees
 * it). */
int kvx_staging_pool_give(const kvx_runtime_ops *ops, int32_t device, void *block, size_t capacity);

/* The size to allocate for `bytes`: a power of two (at least 64 KiB), so that calls of
 * similar sizes can share blocks. */
size_t kvx_staging_pool_round(size_t bytes);

#endif /* KVX_STAGING_POOL_H */
