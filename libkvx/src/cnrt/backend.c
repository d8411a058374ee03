/* backend.c - the CNRT backend's vtable. Codec and RoPE entries stay NULL (unsupported): the
 * Python layer stages or falls back for them (issue 6). */
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
};
