/*
 * transfer.c - kvx_transfer: the checks every backend relies on, then dispatch.
 *
 * After these checks a backend may assume: shapes agree, strides are non-negative, every element
 * offset a valid slot or token can produce fits in int64 bytes, and pointers are non-NULL and
 * aligned to their element size where data will be touched. Slot values are checked by the
 * backend, which knows where they live.
 */
#include <stddef.h>
#include <stdio.h>

#include "../core/kvx_internal.h"

static int32_t check_paged(const kvx_paged_desc *p)
{
    int32_t rc;
    if (kvx_dtype_size(p->dtype) == 0)
        return FAIL_ARG("paged->dtype: expected a kvx_dtype, got %d", (int)p->dtype);
    if ((rc = kvx_check_field("paged", "num_layers", p->num_layers, 1, INT32_MAX)) ||
        (rc = kvx_check_field("paged", "num_kv", p->num_kv, 1, 2)) ||
        (rc = kvx_check_field("paged", "num_heads", p->num_heads, 1, INT32_MAX)) ||
        (rc = kvx_check_field("paged", "head_size", p->head_size, 1, INT32_MAX)) ||
        (rc = kvx_check_field("paged", "block_size", p->block_size, 1, INT64_MAX)) ||
        (rc = kvx_check_field("paged", "num_blocks", p->num_blocks, 0, INT64_MAX)))
        return rc;
    if (p->reserved0 != 0)
        return FAIL_ARG("paged->reserved0: expected 0, got %d", (int)p->reserved0);
    int64_t capacity;
    if (__builtin_mul_overflow(p->num_blocks, p->block_size, &capacity))
        return FAIL_ARG("paged: num_blocks * block_size (%lld * %lld) overflows int64",
                        (long long)p->num_blocks, (long long)p->block_size);
    int64_t per_kv = (int64_t)p->num_kv * p->num_layers;
    if (p->num_bases != p->num_layers && p->num_bases != per_kv)
        return FAIL_ARG("paged->num_bases: expected num_layers (%d) or num_kv * num_layers "
                        "(%lld), got %d",
                        (int)p->num_layers, (long long)per_kv, (int)p->num_bases);
    if ((rc = kvx_check_array("paged->bases", p->bases, p->num_bases, "pointers")))
        return rc;
    int32_t elem_size = kvx_dtype_size(p->dtype);
    for (int32_t i = 0; i < p->num_bases; i++) {
        const void *base = p->bases[i];
        if (!base)
            return FAIL_ARG("paged->bases[%d]: expected a pointer, got NULL", (int)i);
        if (!kvx_is_aligned(base, elem_size)) {
            char name[32];
            snprintf(name, sizeof name, "paged->bases[%d]", (int)i);
            return kvx_check_dtype_aligned(name, base, 1, p->dtype);
        }
    }
    int64_t max_offset = p->head_size - 1;
    if ((rc = kvx_check_extent("paged", "kv_stride", p->kv_stride, p->num_kv, &max_offset)) ||
        (rc = kvx_check_extent("paged", "block_stride", p->block_stride, p->num_blocks,
                               &max_offset)) ||
        (rc = kvx_check_extent("paged", "token_stride", p->token_stride, p->block_size,
                               &max_offset)) ||
        (rc = kvx_check_extent("paged", "head_stride", p->head_stride, p->num_heads, &max_offset)))
        return rc;
    return kvx_check_bytes_fit("paged", max_offset, kvx_dtype_size(p->dtype));
}

static int32_t check_dense(const kvx_dense_desc *d, const kvx_paged_desc *p)
{
    int32_t rc;
#define SAME(field)                                                                            \
    if (d->field != p->field)                                                                  \
        return FAIL_ARG("dense->" #field ": expected %lld (paged->" #field "), got %lld",       \
                        (long long)p->field, (long long)d->field);
    SAME(dtype)
    SAME(num_layers)
    SAME(num_kv)
    SAME(num_heads)
    SAME(head_size)
#undef SAME
    if (d->num_tokens < 0)
        return FAIL_ARG("dense->num_tokens: expected >= 0, got %lld", (long long)d->num_tokens);
    if (d->num_tokens > 0 && !d->base)
        return FAIL_ARG("dense->base: expected a pointer, got NULL");
    if ((rc = kvx_check_dtype_aligned("dense->base", d->base, d->num_tokens, d->dtype)))
        return rc;
    int64_t max_offset = d->head_size - 1;
    if ((rc = kvx_check_extent("dense", "kv_stride", d->kv_stride, d->num_kv, &max_offset)) ||
        (rc = kvx_check_extent("dense", "layer_stride", d->layer_stride, d->num_layers,
                               &max_offset)) ||
        (rc = kvx_check_extent("dense", "token_stride", d->token_stride, d->num_tokens,
                               &max_offset)) ||
        (rc = kvx_check_extent("dense", "head_stride", d->head_stride, d->num_heads, &max_offset)))
        return rc;
    return kvx_check_bytes_fit("dense", max_offset, kvx_dtype_size(d->dtype));
}

int32_t kvx_transfer(const kvx_paged_desc *paged, const kvx_dense_desc *dense,
                     const int64_t *slot_mapping, int32_t direction, const kvx_stream *stream)
{
    int32_t rc;
    kvx_paged_desc p;
    kvx_dense_desc d;
    kvx_clear_error();
    if ((rc = kvx_read_struct("paged", "kvx_paged_desc", paged, &p, sizeof p)) ||
        (rc = kvx_read_struct("dense", "kvx_dense_desc", dense, &d, sizeof d)) ||
        (rc = check_paged(&p)) || (rc = check_dense(&d, &p)))
        return rc;
    if (direction != KVX_PAGED_TO_DENSE && direction != KVX_DENSE_TO_PAGED)
        return FAIL_ARG("direction: expected KVX_PAGED_TO_DENSE (0) or KVX_DENSE_TO_PAGED (1), "
                        "got %d",
                        (int)direction);
    if ((rc = kvx_check_array("slot_mapping", slot_mapping, d.num_tokens, "int64 entries")) ||
        (rc = kvx_check_aligned("slot_mapping", slot_mapping, d.num_tokens, 8, "int64")))
        return rc;
    KVX_DISPATCH(backend, stream, transfer, "transfer");
    if (d.num_tokens == 0)
        return KVX_OK;
    kvx_transfer_args args = {&p, &d, slot_mapping, direction};
    return backend->transfer(&args, stream);
}
