"""kvx._devices, the one registry of device kinds: its records agree with the loaded library
(device type constants, kvx_backend_compiled / _available / _supports for every op), the torch
device mapping round-trips (ROCm's "cuda" included), streams are read through it, and
`python -m kvx info` prints the capability matrix the library answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import kvx
import pytest
from kvx import _devices, _tensors
from kvx._native import ffi, lib

DEVICE_CONSTANTS = {name: getattr(lib, name) for name in dir(lib) if name.startswith("KVX_DEVICE_")}
OP_CONSTANTS = {name: getattr(lib, name) for name in dir(lib) if name.startswith("KVX_OP_")}
KINDS = pytest.mark.parametrize("kind", _devices.KINDS, ids=lambda kind: kind.name)


def test_one_kind_per_device_type_of_the_header():
    assert sorted(kind.kvx_type for kind in _devices.KINDS) == sorted(DEVICE_CONSTANTS.values())
    for kind in _devices.KINDS:
        assert DEVICE_CONSTANTS[f"KVX_DEVICE_{kind.name.upper()}"] == kind.kvx_type


def test_every_op_of_the_header_is_named_once():
    assert sorted(op.code for op in _devices.OPS) == sorted(OP_CONSTANTS.values())
    assert len({op.name for op in _devices.OPS}) == len(_devices.OPS)
    assert {op.code for op in _devices.CODEC_OPS} == {
        lib.KVX_OP_CODEC_QUANTIZE,
        lib.KVX_OP_CODEC_DEQUANTIZE,
        lib.KVX_OP_CODEC_CALCULATE_CDF,
        lib.KVX_OP_CODEC_ENCODE,
        lib.KVX_OP_CODEC_DECODE,
    }
    assert {op.code for op in _devices.ROPE_OPS} == {
        lib.KVX_OP_ROPE_REROTATE,
        lib.KVX_OP_ROPE_APPLY,
    }


@KINDS
def test_compiled_and_available_are_the_library_answers(kind):
    assert kind.compiled() == bool(lib.kvx_backend_compiled(kind.kvx_type))
    assert kind.available() == bool(lib.kvx_backend_available(kind.kvx_type))
    assert _devices.CPU.compiled() and _devices.CPU.available()


@KINDS
def test_support_is_the_library_answer_for_every_op(kind):
    for name, code in OP_CONSTANTS.items():
        assert kind.support(code) == lib.kvx_backend_supports(kind.kvx_type, code), name
        assert kind.support(code) in _devices.SUPPORT_WORDS
        if not kind.compiled():
            assert kind.support(code) == lib.KVX_SUPPORT_NONE, name


@pytest.mark.parametrize("op", [0, max(OP_CONSTANTS.values()) + 1, -1])
def test_an_op_that_is_not_a_kvx_op_is_an_invalid_argument(op):
    with pytest.raises(kvx.InvalidArgumentError, match="op: expected a kvx_op"):
        _devices.CPU.support(op)
    assert lib.kvx_backend_supports(lib.KVX_DEVICE_CPU, op) == lib.KVX_ERR_INVALID_ARGUMENT


@KINDS
def test_why_not_is_empty_exactly_where_libkvx_runs_the_op(kind):
    for op in _devices.OPS:
        runs = kind.support(op.code) != lib.KVX_SUPPORT_NONE and kind.available()
        reason = kind.why_not(op.code)
        assert (reason == "") == runs, (op.name, reason)
        if not kind.compiled():
            assert reason == f"the {kind.name} backend is not compiled into this libkvx"
        elif kind.support(op.code) == lib.KVX_SUPPORT_NONE:
            assert reason == f"the {kind.name} backend has no {op.name} kernel"


def test_why_not_names_the_missing_runtime():
    """Ascend without its runtime: the host-staged codec is compiled in but cannot run now, and
    why_not says which library is missing. Asked in a fresh interpreter without
    LD_LIBRARY_PATH, since earlier tests load the stub runtime into this one."""
    if not _devices.ASCEND.compiled():
        pytest.skip("the Ascend backend is not compiled into this libkvx")
    code = (
        "from kvx import _devices; from kvx._native import lib; a = _devices.ASCEND; "
        "print(a.available()); print(a.why_not(lib.KVX_OP_CODEC_QUANTIZE))"
    )
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    available, reason = result.stdout.splitlines()
    if available == "True":
        pytest.skip("an AscendCL runtime is installed on this machine's library path")
    assert "libascendcl.so" in reason


# ---------------------------------------------------------------- lookups


def fake_torch(rocm: bool) -> SimpleNamespace:
    return SimpleNamespace(version=SimpleNamespace(hip="6.2.0" if rocm else None))


@KINDS
def test_lookups_round_trip(kind):
    assert _devices.by_kvx_type(kind.kvx_type) is kind
    assert _devices.by_name(kind.name) is kind
    assert _devices.by_torch_type(kind.torch_type, fake_torch(rocm=kind is _devices.HIP)) is kind


def test_cuda_is_hip_on_a_rocm_build_of_torch():
    assert _devices.by_torch_type("cuda", fake_torch(rocm=True)) is _devices.HIP
    assert _devices.by_torch_type("cuda", fake_torch(rocm=False)) is _devices.CUDA
    assert _devices.by_torch_type("cuda") is _devices.CUDA  # torch not imported: no ROCm to see
    assert _devices.by_torch_type("npu", fake_torch(rocm=True)) is _devices.ASCEND


def test_unknown_devices_are_named_in_the_error():
    with pytest.raises(kvx.InvalidArgumentError, match="torch device type 'xla'"):
        _devices.by_torch_type("xla")
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"device_type: expected one of 1 \(cpu\).*got 12345"
    ):
        _devices.by_kvx_type(12345)
    with pytest.raises(kvx.InvalidArgumentError, match="name: expected one of cpu, cuda"):
        _devices.by_name("tpu")


def test_tensors_are_described_through_the_registry():
    torch = pytest.importorskip("torch")
    assert _tensors.describe(torch.zeros(2), "x").device_type == _devices.CPU.kvx_type
    assert _devices.by_torch_device(torch.device("cpu")) is _devices.CPU
    expected = _devices.HIP if getattr(torch.version, "hip", None) else _devices.CUDA
    assert _devices.by_torch_device(torch.device("cuda", 0)) is expected


# ---------------------------------------------------------------- streams


class FakeStream:
    def __init__(self, attribute: str, index: int) -> None:
        setattr(self, attribute, 0x1000 + index)


def fake_device_torch() -> SimpleNamespace:
    """torch with torch.cuda / torch.npu / torch.mlu whose current stream carries its handle in
    the attribute each vendor uses."""
    modules = {
        torch_type: SimpleNamespace(current_stream=lambda index, a=attribute: FakeStream(a, index))
        for torch_type, attribute in (
            ("cuda", "cuda_stream"),
            ("npu", "npu_stream"),
            ("mlu", "mlu_stream"),
        )
    }
    return SimpleNamespace(version=SimpleNamespace(hip=None), **modules)


@pytest.mark.parametrize("kind", _devices.accelerators(), ids=lambda kind: kind.name)
def test_current_stream_is_read_from_the_vendor_attribute(kind, monkeypatch):
    torch = fake_device_torch()
    assert kind.current_stream_handle(torch, 3) == 0x1003
    monkeypatch.setattr(_tensors._torch, "imported", lambda: torch)
    stream = _tensors.current_stream((kind.kvx_type, 2))
    assert (stream.device_type, stream.device_index) == (kind.kvx_type, 2)
    assert int(ffi.cast("uintptr_t", stream.handle)) == 0x1002


def test_the_cpu_has_the_null_stream():
    assert _devices.CPU.current_stream_handle(fake_device_torch(), 0) == 0
    assert _tensors.current_stream((lib.KVX_DEVICE_CPU, 0)) == ffi.NULL


def test_no_other_module_keeps_a_table_of_devices():
    """Device facts live in _devices.py only: no other module of the package names an
    accelerator's device type or reads a vendor's stream attribute itself."""
    package = Path(kvx.__file__).parent
    accelerator_names = [name for name in DEVICE_CONSTANTS if name != "KVX_DEVICE_CPU"]
    words = accelerator_names + ["cuda_stream", "npu_stream", "mlu_stream"]
    for path in package.glob("*.py"):
        if path.name == "_devices.py":
            continue
        text = path.read_text()
        assert not [word for word in words if word in text], path.name


# ---------------------------------------------------------------- kvx info


def info_matrix() -> tuple[list[str], dict[str, list[str]]]:
    out = subprocess.run(
        [sys.executable, "-m", "kvx", "info"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("operations each backend runs"))
    header, *rows = out[start + 1 : start + 2 + len(_devices.KINDS)]
    return header.split(), {row.split()[0]: row.split()[1:] for row in rows}


def test_info_prints_the_capability_matrix():
    header, rows = info_matrix()
    assert header == [op.name for op in _devices.OPS]
    assert list(rows) == [kind.name for kind in _devices.KINDS]
    for kind in _devices.KINDS:
        expected = [
            _devices.SUPPORT_WORDS[lib.kvx_backend_supports(kind.kvx_type, op.code)]
            for op in _devices.OPS
        ]
        assert rows[kind.name] == expected, kind.name
    assert rows["cpu"] == ["native"] * len(_devices.OPS)


def test_backend_states_carry_the_matrix():
    for state in kvx.backends():
        kind = _devices.by_name(state.name)
        words = {op.name: _devices.SUPPORT_WORDS[kind.support(op.code)] for op in _devices.OPS}
        assert state.ops == words
    assert len({state for state in kvx.backends()}) == len(_devices.KINDS)  # still hashable
