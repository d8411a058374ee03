/* checks.c - argument checks shared by the public entry points (see kvx_internal.h). */
#include <stdio.h>
#include <string.h>

#include "kvx_internal.h"

int32_t kvx_check_range(const char *name, int64_t value, int64_t lo, int64_t hi)
{
    if (value < lo || value > hi)
        return FAIL_ARG("%s: expected %lld..%lld, got %lld", name, (long long)lo, (long long)hi,
                        (long long)value);
    return KVX_OK;
}

int32_t kvx_check_field(const char *owner, const char *field, int64_t value, int64_t lo, int64_t hi)
{
    /* Checks run on every call, failures rarely: the name is formatted only for a message. */
    if (value >= lo && value <= hi)
        return KVX_OK;
    char name[128];
    snprintf(name, sizeof name, "%s->%s", owner, field);
    return kvx_check_range(name, value, lo, hi);
}

int32_t kvx_check_pointer(const char *name, const void *ptr, int64_t count)
{
    if (!ptr && count > 0)
        return FAIL_ARG("%s: expected a pointer to %lld elements, got NULL", name,
                        (long long)count);
    return KVX_OK;
}

int32_t kvx_check_array(const char *name, const void *ptr, int64_t count, const char *what)
{
    if (!ptr && count > 0)
        return FAIL_ARG("%s: expected %lld %s, got NULL", name, (long long)count, what);
    return KVX_OK;
}

int32_t kvx_check_extent(const char *owner, const char *field, int64_t stride, int64_t count,
                         int64_t *max_offset)
{
    int64_t span;
    if (stride < 0)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "%s->%s: expected a non-negative stride, got %lld", owner, field,
                        (long long)stride);
    if (count <= 1)
        return KVX_OK;
    if (__builtin_mul_overflow(stride, count - 1, &span) ||
        __builtin_add_overflow(*max_offset, span, max_offset))
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "%s->%s: stride %lld overflows 64-bit offsets over %lld items", owner,
                        field, (long long)stride, (long long)count);
    return KVX_OK;
}

int32_t kvx_check_bytes_fit(const char *owner, int64_t max_offset, int64_t elem_size)
{
    int64_t bytes;
    if (__builtin_mul_overflow(max_offset, elem_size, &bytes))
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT, "%s: strides address more than 2^63 bytes",
                        owner);
    return KVX_OK;
}

int32_t kvx_check_aligned(const char *name, const void *ptr, int64_t count, int32_t size,
                          const char *type)
{
    if (count <= 0 || kvx_is_aligned(ptr, size))
        return KVX_OK;
    return FAIL_ARG("%s: expected an address aligned to %d bytes (%s), got 0x%llx", name, (int)size,
                    type, (unsigned long long)(uintptr_t)ptr);
}

int32_t kvx_check_dtype_aligned(const char *name, const void *ptr, int64_t count, int32_t dtype)
{
    int32_t size = kvx_dtype_size(dtype);
    return kvx_check_aligned(name, ptr, count, size > 0 ? size : 1, kvx_dtype_name(dtype));
}

int32_t kvx_struct_size(const char *name, const char *type, const void *user, size_t size,
                        uint32_t *declared)
{
    if (!user)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT, "%s: expected a %s, got NULL", name, type);
    memcpy(declared, user, sizeof *declared);
    if (*declared < sizeof(uint32_t) || *declared > size)
        return kvx_fail(KVX_ERR_INVALID_ARGUMENT,
                        "%s->struct_size: expected sizeof(%s) (%zu; an older kvx.h's smaller "
                        "size also works), got %u",
                        name, type, size, (unsigned)*declared);
    return KVX_OK;
}

int32_t kvx_read_struct(const char *name, const char *type, const void *user, void *copy,
                        size_t size)
{
    uint32_t declared = 0;
    int32_t rc = kvx_struct_size(name, type, user, size, &declared);
    if (rc)
        return rc;
    memset(copy, 0, size);
    memcpy(copy, user, declared);
    return KVX_OK;
}

int32_t kvx_write_struct(const char *name, const char *type, void *user, const void *value,
                         size_t size)
{
    uint32_t declared = 0;
    int32_t rc = kvx_struct_size(name, type, user, size, &declared);
    if (rc)
        return rc;
    memcpy((char *)user + sizeof declared, (const char *)value + sizeof declared,
           declared - sizeof declared);
    return KVX_OK;
}
