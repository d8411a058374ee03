/* bytes.c - the reader's failure paths and multi-byte varints (see bytes.h). */
#include "bytes.h"

#include "../core/kvx_internal.h"

int32_t kvx_codec_truncated(const reader *r, int64_t n, const char *field)
{
    return kvx_fail(KVX_ERR_CORRUPT_INPUT,
                    "%s: truncated: needs %lld bytes at offset %lld, the "
                    "container has %lld",
                    field, (long long)n, (long long)r->pos, (long long)r->size);
}

int32_t kvx_codec_get_varint_slow(reader *r, uint32_t *v, const char *field)
{
    uint64_t value = 0;
    for (int i = 0; i < MAX_VARINT32; i++) {
        if (r->pos >= r->size)
            return kvx_fail(KVX_ERR_CORRUPT_INPUT, "%s: truncated varint at offset %lld", field,
                            (long long)r->pos);
        uint8_t b = r->p[r->pos++];
        value |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (value > 0xffffffffu)
                break;
            *v = (uint32_t)value;
            return KVX_OK;
        }
    }
    return kvx_fail(KVX_ERR_CORRUPT_INPUT, "%s: malformed varint ending at offset %lld", field,
                    (long long)r->pos);
}
