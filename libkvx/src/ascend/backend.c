/* backend.c - the Ascend backend's vtable. Codec and RoPE entries stay NULL (unsupported): the
 * Python layer stages or falls back for them (issue 6). */
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
};
