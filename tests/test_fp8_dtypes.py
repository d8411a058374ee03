"""The four fp8 formats torch and DLPack name reach libkvx as four dtype codes: e4m3fn and
e4m3fnuz (and e5m2 / e5m2fnuz) encode different numbers in the same bits, so one code for both
would let a consumer decode a KV cache with the wrong format."""

import pytest
import torch
from kvx._native import lib
from kvx._tensors import describe

FP8 = {
    "float8_e4m3fn": lib.KVX_DTYPE_FLOAT8_E4M3FN,
    "float8_e5m2": lib.KVX_DTYPE_FLOAT8_E5M2,
    "float8_e4m3fnuz": lib.KVX_DTYPE_FLOAT8_E4M3FNUZ,
    "float8_e5m2fnuz": lib.KVX_DTYPE_FLOAT8_E5M2FNUZ,
}


@pytest.mark.parametrize("name", sorted(FP8))
def test_each_fp8_format_has_its_own_code(name):
    info = describe(torch.zeros(4, dtype=getattr(torch, name)), "x")
    assert info.dtype == FP8[name]
    assert lib.kvx_dtype_size(info.dtype) == 1


def test_codes_are_distinct_and_the_old_name_is_e4m3fn():
    assert len(set(FP8.values())) == 4
    assert lib.KVX_DTYPE_FLOAT8_E4M3 == lib.KVX_DTYPE_FLOAT8_E4M3FN
