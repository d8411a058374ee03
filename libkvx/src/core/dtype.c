/* dtype.c - the element-type vocabulary. */
#include "kvx_internal.h"

int32_t kvx_dtype_size(int32_t dtype)
{
    switch (dtype) {
    case KVX_DTYPE_FLOAT8_E4M3FN:
    case KVX_DTYPE_FLOAT8_E5M2:
    case KVX_DTYPE_FLOAT8_E4M3FNUZ:
    case KVX_DTYPE_FLOAT8_E5M2FNUZ:
    case KVX_DTYPE_UINT8:
    case KVX_DTYPE_INT8: return 1;
    case KVX_DTYPE_FLOAT16:
    case KVX_DTYPE_BFLOAT16: return 2;
    case KVX_DTYPE_FLOAT32:
    case KVX_DTYPE_INT32: return 4;
    case KVX_DTYPE_FLOAT64:
    case KVX_DTYPE_INT64: return 8;
    default: return 0;
    }
}
