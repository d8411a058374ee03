/*
 * stream_wait.h - memory a stream may still read after the call that queued the work returned
 * (batch descriptors, bounce buffers), kept until the stream has passed that point.
 *
 * A block is handed over with an event recorded after the work that reads it; later calls and
 * kvx_synchronize reap the blocks whose events completed. Events come from one pool per
 * (runtime, device): AscendCL records an event only on streams of the device it was created
 * on. Where no event can be recorded the stream is synchronised instead, so a block is never
 * freed while the runtime may read it. Stream marks (kvx_mark_record) take their events from the
 * same pools, and an event of a mark released before the stream reached it waits here too.
 */
#ifndef KVX_STREAM_WAIT_H
#define KVX_STREAM_WAIT_H

#include "runtime_ops.h"

typedef void (*kvx_release_fn)(void *block);

/* Frees `block` with `release` once `stream` (of `device`, current on this thread) has passed
 * this point. On failure the stream has been synchronised and the block freed (or, if that
 * failed too, left allocated: the copies may still run); the error names the vendor call. */
int32_t kvx_keep_until_passed(const kvx_runtime_ops *ops, int32_t device, void *stream, void *block,
                              kvx_release_fn release);

/* Synchronises the stream, then frees `block`; if the synchronisation fails the block is left
 * allocated (a leak, after a runtime failure) rather than freed under queued copies. Returns
 * the vendor code of the synchronisation. */
int64_t kvx_release_after_sync(const kvx_runtime_ops *ops, void *stream, void *block,
                               kvx_release_fn release);

/* Frees the blocks whose streams have passed; with `wait`, also waits for the oldest while too
 * many are pending. */
void kvx_reap_passed(int wait);

#endif /* KVX_STREAM_WAIT_H */
