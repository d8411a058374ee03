"""kvx_backend_supports: the capability matrix a build answers without loading any runtime."""

import pytest
from kvx._native import ffi, lib

OPS = {name: getattr(lib, name) for name in dir(lib) if name.startswith("KVX_OP_")}
CODEC_OPS = {
    "KVX_OP_CODEC_QUANTIZE",
    "KVX_OP_CODEC_DEQUANTIZE",
    "KVX_OP_CODEC_CALCULATE_CDF",
    "KVX_OP_CODEC_ENCODE",
    "KVX_OP_CODEC_DECODE",
}


def test_every_op_is_named():
    assert sorted(OPS.values()) == list(range(1, 13))


def test_cpu_runs_every_op_natively():
    for name, op in OPS.items():
        assert lib.kvx_backend_supports(lib.KVX_DEVICE_CPU, op) == lib.KVX_SUPPORT_NATIVE, name


@pytest.mark.parametrize("op", [0, 13, -1, 1 << 30])
def test_unknown_op_is_an_invalid_argument(op):
    assert lib.kvx_backend_supports(lib.KVX_DEVICE_CPU, op) == lib.KVX_ERR_INVALID_ARGUMENT
    assert ffi.string(lib.kvx_last_error()).decode().startswith("op: expected a kvx_op")


def test_unknown_device_type_supports_nothing():
    for op in OPS.values():
        assert lib.kvx_backend_supports(12345, op) == lib.KVX_SUPPORT_NONE


@pytest.mark.parametrize("device", ["KVX_DEVICE_ASCEND", "KVX_DEVICE_CNRT"])
def test_runtime_loaded_backends_stage_the_codec(device):
    """Ascend and CNRT transfer and copy natively, run the CacheGen codec through host memory and
    have no RoPE, container or rotated-method entries; the answer needs no runtime (none is
    installed here)."""
    device_type = getattr(lib, device)
    if not lib.kvx_backend_compiled(device_type):
        pytest.skip(f"{device} is not compiled into this libkvx")
    expected = {
        name: lib.KVX_SUPPORT_HOST_STAGED if name in CODEC_OPS else lib.KVX_SUPPORT_NONE
        for name in OPS
    }
    expected["KVX_OP_TRANSFER"] = expected["KVX_OP_COPY"] = lib.KVX_SUPPORT_NATIVE
    got = {name: lib.kvx_backend_supports(device_type, op) for name, op in OPS.items()}
    assert got == expected


@pytest.mark.parametrize("device", ["KVX_DEVICE_CUDA", "KVX_DEVICE_HIP"])
def test_gpu_backend_runs_the_rotated_method_natively(device):
    device_type = getattr(lib, device)
    if not lib.kvx_backend_compiled(device_type):
        pytest.skip(f"{device} is not compiled into this libkvx")
    for op in (lib.KVX_OP_CODEC_QUANTIZE_ROTATED, lib.KVX_OP_CODEC_DEQUANTIZE_ROTATED):
        assert lib.kvx_backend_supports(device_type, op) == lib.KVX_SUPPORT_NATIVE
