/* errors.c - status names, the thread-local last-error message, and warnings on stderr. */
#include <stdarg.h>
#include <stdio.h>

#include "kvx_internal.h"

/* Long enough for a message that names an argument, its value and the limit. */
static _Thread_local char last_error[512];

int32_t kvx_vfail(int32_t status, const char *fmt, va_list args)
{
    vsnprintf(last_error, sizeof last_error, fmt, args);
    return status;
}

int32_t kvx_fail(int32_t status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    kvx_vfail(status, fmt, args);
    va_end(args);
    return status;
}

void kvx_clear_error(void) { last_error[0] = '\0'; }

const char *kvx_last_error(void) { return last_error; }

void kvx_warn(const char *fmt, ...)
{
    char message[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    fprintf(stderr, "kvx: %s\n", message); /* one call: racing threads' lines stay whole */
}

const char *kvx_status_name(int32_t status)
{
    switch (status) {
    case KVX_OK: return "KVX_OK";
    case KVX_ERR_INVALID_ARGUMENT: return "KVX_ERR_INVALID_ARGUMENT";
    case KVX_ERR_UNSUPPORTED: return "KVX_ERR_UNSUPPORTED";
    case KVX_ERR_NOT_AVAILABLE: return "KVX_ERR_NOT_AVAILABLE";
    case KVX_ERR_DEVICE: return "KVX_ERR_DEVICE";
    case KVX_ERR_OUT_OF_MEMORY: return "KVX_ERR_OUT_OF_MEMORY";
    case KVX_ERR_CORRUPT_INPUT: return "KVX_ERR_CORRUPT_INPUT";
    case KVX_ERR_BUFFER_TOO_SMALL: return "KVX_ERR_BUFFER_TOO_SMALL";
    case KVX_ERR_INTERNAL: return "KVX_ERR_INTERNAL";
    default: return "KVX_UNKNOWN_STATUS";
    }
}
