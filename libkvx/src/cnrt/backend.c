/* backend.c - the CNRT backend's vtable. The codec is host-staged (src/core/codec_staged.h:
 * device data copied to pinned host memory, CPU codec, results copied back; the stream is
 * synchronised). RoPE entries stay NULL ("unsupported"): kvx.rope falls back to vendor torch ops
 * or kvx.reference on the device (python/kvx/_rope_fallback.py). */
#include "../core/codec_staged.h"
#include "cnrt_backend.h"

static int32_t cnrt_available(void)
{
    return kvx_cnrt_load() != NULL;
}

const kvx_backend kvx_cnrt_backend = {
    .name = "cnrt",
    .device_type = KVX_DEVICE_CNRT,
    .available = cnrt_available,
    .transfer = kvx_cnrt_transfer,
    .synchronize = kvx_cnrt_synchronize,
    KVX_STAGED_CODEC_ENTRIES(kvx_cnrt_staging),
};
