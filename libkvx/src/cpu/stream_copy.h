/* stream_copy.h - the copy the CPU backend's transfers use for their pieces: memcpy, or, for
 * transfers far larger than the last-level cache, a copy whose stores bypass the caches
 * (stream_copy.c says when and why). For any kernel that copies many pieces of one big transfer.
 */
#ifndef KVX_STREAM_COPY_H
#define KVX_STREAM_COPY_H

#include <stddef.h>
#include <stdint.h>

typedef void (*kvx_copy_fn)(void *dst, const void *src, size_t bytes);

/* The copy for the pieces of a transfer that moves `total_bytes` in all (the bytes written, all
 * threads together): the streaming copy when total_bytes exceeds kvx_stream_threshold() and this
 * CPU has one (*streaming = 1), else a plain memcpy (*streaming = 0). Either gives memcpy's bytes
 * for any sizes and alignments (pieces too small to gain are copied with memcpy inside the
 * streaming copy); regions must not overlap. After running the streaming copy, a thread calls
 * kvx_stream_fence() before it reports its work done, so that the bytes are visible to the thread
 * that waits for it. */
kvx_copy_fn kvx_stream_copy_for(int64_t total_bytes, int *streaming);

/* Orders this thread's streaming stores before its later stores (sfence); nothing elsewhere. */
void kvx_stream_fence(void);

/* Transfers moving more bytes than this stream: KVX_CPU_STREAM_THRESHOLD, else the size of the
 * last-level cache, else 32 MiB. Read once per process. */
int64_t kvx_stream_threshold(void);

/* Name of the copy large transfers use in this process: "stream-avx2", "stream-sse2" (x86-64
 * with KVX_CPU_ISA=baseline or without AVX2) or "memcpy" (other CPUs). */
const char *kvx_stream_copy_variant(void);

#endif /* KVX_STREAM_COPY_H */
