/* backend.c - the CPU backend's vtable: always compiled in, always available. */
#include "cpu_backend.h"

static int32_t cpu_available(void) { return 1; }

const kvx_backend kvx_cpu_backend = {
    .name = "cpu",
    .device_type = KVX_DEVICE_CPU,
    .available = cpu_available,
    .transfer = kvx_cpu_transfer,
    /* KVX-CPU-CODEC-VTABLE */
    /* KVX-CPU-ROPE-VTABLE */
};
