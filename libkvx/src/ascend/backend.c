/* backend.c - the Ascend backend's vtable. The codec is host-staged (src/core/codec_staged.h:
 * device data copied to pinned host memory, CPU codec, results copied back; the stream is
 * synchronised). RoPE entries stay NULL ("unsupported"): kvx.rope falls back to vendor torch ops
 * or kvx.reference on the device (python/kvx/_rope_fallback.py). */
#include "../core/codec_staged.h"
#include "ascend_backend.h"

static int32_t ascend_available(void)
{
    return kvx_acl_load() != NULL;
}

const kvx_backend kvx_ascend_backend = {
    .name = "ascend",
    .device_type = KVX_DEVICE_ASCEND,
    .available = ascend_available,
    .transfer = kvx_ascend_transfer,
    .synchronize = kvx_ascend_synchronize,
    KVX_STAGED_CODEC_ENTRIES(kvx_ascend_staging),
};
