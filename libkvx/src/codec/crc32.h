/* crc32.h - zlib's CRC-32 (reflected 0xEDB88320), which guards the container's header and every
 * chunk (docs/codec-container.md), so that `zlib.crc32` in any reader gives the same value. */
#ifndef KVX_CODEC_CRC32_H
#define KVX_CODEC_CRC32_H

#include <stdint.h>

/* CRC-32 of the n bytes at p; thread-safe (the tables are built once, on first use). */
uint32_t kvx_codec_crc32(const uint8_t *p, int64_t n);

#endif /* KVX_CODEC_CRC32_H */
