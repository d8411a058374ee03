/* A C program that uses libkvx the way an engine would: built by tests/test_c_api.py against the
 * installed header and library (pkg-config), then run. Prints "ok" and exits 0 on success. */
#include <kvx.h>
#include <stdio.h>
#include <string.h>

#define L 2
#define NB 4
#define BS 4
#define H 2
#define D 3
#define T 5

#define EXPECT(cond)                                                      \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: failed: %s (last error: %s)\n",       \
                    __FILE__, __LINE__, #cond, kvx_last_error());         \
            return 1;                                                     \
        }                                                                 \
    } while (0)

static uint16_t cache[L][2][NB][BS][H][D]; /* per layer [2, NB, BS, H, D]: vLLM NHD */
static uint16_t dense[2][L][T][H * D];     /* LMCache KV_2LTD */

int main(void)
{
    EXPECT(kvx_version_number() ==
           KVX_VERSION_MAJOR * 10000 + KVX_VERSION_MINOR * 100 + KVX_VERSION_PATCH);
    EXPECT(kvx_abi_version() == KVX_ABI_VERSION);
    EXPECT(kvx_backend_available(KVX_DEVICE_CPU) == 1);
    EXPECT(kvx_crc32(0, "123456789", 9) == 0xcbf43926u); /* CRC-32's standard check value */

    for (size_t i = 0; i < sizeof cache / sizeof(uint16_t); i++)
        ((uint16_t *)cache)[i] = (uint16_t)(i * 7 + 1);
    void *bases[L] = {cache[0], cache[1]};
    kvx_paged_desc paged = {
        .struct_size = sizeof paged,
        .dtype = KVX_DTYPE_BFLOAT16,
        .num_layers = L,
        .num_kv = 2,
        .num_heads = H,
        .head_size = D,
        .num_bases = L,
        .bases = bases,
        .block_size = BS,
        .num_blocks = NB,
        .kv_stride = NB * BS * H * D,
        .block_stride = BS * H * D,
        .token_stride = H * D,
        .head_stride = D,
    };
    kvx_dense_desc dense_desc = {
        .struct_size = sizeof dense_desc,
        .dtype = KVX_DTYPE_BFLOAT16,
        .num_layers = L,
        .num_kv = 2,
        .num_heads = H,
        .head_size = D,
        .num_tokens = T,
        .base = dense,
        .kv_stride = L * T * H * D,
        .layer_stride = T * H * D,
        .token_stride = H * D,
        .head_stride = D,
    };
    int64_t slots[T] = {13, 14, -1, 2, 15};
    EXPECT(kvx_transfer(&paged, &dense_desc, slots, KVX_PAGED_TO_DENSE, NULL) == KVX_OK);
    for (int kv = 0; kv < 2; kv++)
        for (int l = 0; l < L; l++)
            for (int t = 0; t < T; t++) {
                if (slots[t] < 0) {
                    EXPECT(dense[kv][l][t][0] == 0);
                    continue;
                }
                int64_t b = slots[t] / BS, o = slots[t] % BS;
                EXPECT(memcmp(dense[kv][l][t], cache[l][kv][b][o], sizeof dense[kv][l][t]) == 0);
            }

    /* Errors: a status, a name, a message naming the argument; nothing written. */
    uint16_t before[sizeof dense / sizeof(uint16_t)];
    memcpy(before, dense, sizeof dense);
    memset(cache, 0, sizeof cache);
    slots[1] = NB * BS;
    EXPECT(kvx_transfer(&paged, &dense_desc, slots, KVX_DENSE_TO_PAGED, NULL) ==
           KVX_ERR_INVALID_ARGUMENT);
    EXPECT(strstr(kvx_last_error(), "slot_mapping[1]") != NULL);
    EXPECT(strcmp(kvx_status_name(KVX_ERR_INVALID_ARGUMENT), "KVX_ERR_INVALID_ARGUMENT") == 0);
    for (size_t i = 0; i < sizeof cache / sizeof(uint16_t); i++)
        EXPECT(((uint16_t *)cache)[i] == 0);
    EXPECT(memcmp(before, dense, sizeof dense) == 0);

    if (!kvx_backend_compiled(KVX_DEVICE_CUDA)) {
        kvx_stream cuda = {KVX_DEVICE_CUDA, 0, NULL};
        slots[1] = 0;
        EXPECT(kvx_transfer(&paged, &dense_desc, slots, KVX_PAGED_TO_DENSE, &cuda) ==
               KVX_ERR_NOT_AVAILABLE);
        EXPECT(strstr(kvx_last_error(), "device_type") != NULL);
    }
    printf("ok\n");
    return 0;
}
