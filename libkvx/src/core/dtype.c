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

const char *kvx_dtype_name(int32_t dtype)
{
    switch (dtype) {
    case KVX_DTYPE_FLOAT32: return "float32";
    case KVX_DTYPE_FLOAT16: return "float16";
    case KVX_DTYPE_BFLOAT16: return "bfloat16";
    case KVX_DTYPE_FLOAT8_E4M3FN: return "float8_e4m3fn";
    case KVX_DTYPE_FLOAT8_E5M2: return "float8_e5m2";
    case KVX_DTYPE_UINT8: return "uint8";
    case KVX_DTYPE_INT8: return "int8";
    case KVX_DTYPE_FLOAT64: return "float64";
    case KVX_DTYPE_INT32: return "int32";
    case KVX_DTYPE_INT64: return "int64";
    case KVX_DTYPE_FLOAT8_E4M3FNUZ: return "float8_e4m3fnuz";
    case KVX_DTYPE_FLOAT8_E5M2FNUZ: return "float8_e5m2fnuz";
    default: return "unknown dtype";
    }
}
