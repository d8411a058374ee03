/*
 * bytes.h - the container's byte I/O: a little-endian writer that measures what does not fit,
 * and a reader that checks every read against the bytes really there (docs/codec-container.md,
 * "Conventions"). The per-byte paths are inline: they run once per count, length and scale of
 * every chunk; the failure paths are in bytes.c.
 */
#ifndef KVX_CODEC_BYTES_H
#define KVX_CODEC_BYTES_H

#include <stdint.h>
#include <string.h>

#include "kvx.h"

enum { MAX_VARINT32 = 5 }; /* LEB128 bytes of a uint32 */

/* ---------------------------------------------------------------- varints */

/* Bytes varint_write takes for v. */
static inline int varint_size(uint32_t v)
{
    return v < (1u << 7) ? 1 : v < (1u << 14) ? 2 : v < (1u << 21) ? 3 : v < (1u << 28) ? 4 : 5;
}

/* Writes v as unsigned LEB128 at p (varint_size(v) bytes); returns the byte after it. */
static inline uint8_t *varint_write(uint8_t *p, uint32_t v)
{
    while (v > 0x7f) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* ---------------------------------------------------------------- little-endian writer */

/* Writes into p[0 .. cap); past cap it only counts, so one pass both writes a container that fits
 * and measures one that does not (pos is then the size needed). */
typedef struct writer {
    uint8_t *p;
    int64_t pos, cap;
} writer;

/* Reserves n bytes; NULL once the buffer is full (pos keeps counting the size needed). */
static inline uint8_t *reserve(writer *w, int64_t n)
{
    uint8_t *at = w->pos + n <= w->cap ? w->p + w->pos : NULL;
    w->pos += n;
    return at;
}

static inline void put_le(writer *w, uint64_t v, int bytes)
{
    uint8_t *at = reserve(w, bytes);
    for (int i = 0; at && i < bytes; i++)
        at[i] = (uint8_t)(v >> (8 * i));
}

static inline void put_varint(writer *w, uint32_t v)
{
    uint8_t *at = reserve(w, varint_size(v));
    if (at)
        varint_write(at, v);
}

/* ---------------------------------------------------------------- bounds-checked reader */

/* Reads p[0 .. size); every read names the field it reads for the message when it fails. */
typedef struct reader {
    const uint8_t *p;
    int64_t pos, size;
} reader;

/* The failures, out of line: KVX_ERR_CORRUPT_INPUT with the message. */
int32_t kvx_codec_truncated(const reader *r, int64_t n, const char *field);
int32_t kvx_codec_get_varint_slow(reader *r, uint32_t *v, const char *field);

/* KVX_OK if n more bytes are there at r->pos, else fails naming `field`. */
static inline int32_t need(const reader *r, int64_t n, const char *field)
{
    if (n < 0 || n > r->size - r->pos)
        return kvx_codec_truncated(r, n, field);
    return KVX_OK;
}

/* The `bytes`-byte little-endian value at p (which the caller has bounds-checked). */
static inline uint64_t le_at(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline int32_t get_le(reader *r, int bytes, uint64_t *v, const char *field)
{
    int32_t rc = need(r, bytes, field);
    if (rc)
        return rc;
    *v = le_at(r->p + r->pos, bytes);
    r->pos += bytes;
    return KVX_OK;
}

/* A varint < 2^32 of at most MAX_VARINT32 bytes. */
static inline int32_t get_varint(reader *r, uint32_t *v, const char *field)
{
    if (r->pos < r->size && r->p[r->pos] < 0x80) { /* the common one-byte case */
        *v = r->p[r->pos++];
        return KVX_OK;
    }
    return kvx_codec_get_varint_slow(r, v, field);
}

#endif /* KVX_CODEC_BYTES_H */
