/* version.c - version queries of the loaded library. */
#include "kvx_internal.h"

#define KVX_STR2(x) #x
#define KVX_STR(x) KVX_STR2(x)

uint32_t kvx_version_number(void)
{
    return KVX_VERSION_MAJOR * 10000u + KVX_VERSION_MINOR * 100u + KVX_VERSION_PATCH;
}

const char *kvx_version_string(void)
{
    return KVX_STR(KVX_VERSION_MAJOR) "." KVX_STR(KVX_VERSION_MINOR) "." KVX_STR(KVX_VERSION_PATCH);
}

uint32_t kvx_abi_version(void) { return KVX_ABI_VERSION; }
