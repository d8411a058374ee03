"""kvx.checksum.crc32 and kvx_crc32: zlib's CRC-32 on every length, start offset, starting value
and kind of buffer, chained, for the variant this CPU picks and for the baseline tables
(KVX_CPU_ISA=baseline, in a child process: the choice is made once per process); the argument
errors. tests/c/crc32_check.c checks the C entry against the bit-at-a-time definition, natively
and, under qemu-x86_64, as CPUs without VPCLMULQDQ (the 128-bit PCLMULQDQ lanes) and without
PCLMULQDQ (the tables); tests/test_cross_build.py runs it for 64-bit ARM."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import zlib

import kvx
import numpy as np
import pytest
from kvx import _native
from kvx.checksum import crc32
from machine import CC, c_program, cpu_flags, isa_environment, run_crc32_check

SEEDS = [0, 1, 0x12345678, 0xFFFFFFFF]


def _data(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _expected_variant() -> str:
    """The variant crc32.c picks on this CPU, from /proc/cpuinfo's flags."""
    flags = cpu_flags()
    if platform.machine() in ("aarch64", "arm64"):
        return "armv8-crc" if "crc32" in flags else "baseline"
    if "pclmulqdq" not in flags:
        return "baseline"
    return "vpclmul" if {"avx2", "vpclmulqdq"} <= flags else "pclmul"


def test_every_short_length_and_starting_value():
    data = _data(300)
    for n in range(301):
        for seed in SEEDS:
            assert crc32(data[:n], seed) == zlib.crc32(data[:n], seed), (n, seed)


@pytest.mark.parametrize("n", [511, 512, 513, 4095, 65536 + 1, (1 << 20) + 13, 16 << 20])
def test_large_lengths(n):
    data = _data(n, seed=n)
    assert crc32(data) == zlib.crc32(data)
    assert crc32(data, 0xDEADBEEF) == zlib.crc32(data, 0xDEADBEEF)


def test_every_start_offset():
    """Loads need no alignment: the same bytes from 64 different addresses."""
    buffer = np.frombuffer(_data(4096 + 64), dtype=np.uint8)
    for offset in range(64):
        for n in (0, 15, 16, 63, 64, 127, 128, 129, 255, 256, 1000, 4096):
            view = buffer[offset : offset + n]
            assert crc32(view, offset) == zlib.crc32(view, offset), (offset, n)


def test_chained_pieces_give_the_whole():
    data = _data(100_000)
    want = zlib.crc32(data)
    for cut in (0, 1, 15, 16, 64, 127, 128, 4097, 99_999, 100_000):
        assert crc32(data[cut:], crc32(data[:cut])) == want, cut
    crc, at, piece = 0, 0, 1
    while at < len(data):
        crc = crc32(data[at : at + piece], crc)
        at, piece = at + piece, piece * 3 % 1009 + 1
    assert crc == want


@pytest.mark.parametrize("value", [-1, 2**32, 2**32 + 5, 2**64 + 7, True])
def test_value_is_taken_modulo_2_to_the_32_as_zlib_does(value):
    data = _data(1000)
    assert crc32(data, value) == zlib.crc32(data, value)


def test_any_contiguous_buffer():
    raw = _data(4096 + 8)
    array = np.frombuffer(raw, dtype=np.uint8)
    cases = [
        raw,
        bytearray(raw),
        memoryview(raw)[3:],
        array[:4096].view(np.float32).reshape(16, -1)[2:],  # rows of a 2-D array: contiguous
        array[:4096].view(np.int16),
        np.zeros((0, 5), dtype=np.float64),
    ]
    for data in cases:
        assert crc32(data) == zlib.crc32(data), type(data)


def test_cpu_torch_tensors_of_any_dtype():
    torch = pytest.importorskip("torch")
    values = torch.from_numpy(np.frombuffer(bytearray(_data(4096)), dtype=np.uint8))
    for tensor in (values, values[7:], values.view(torch.bfloat16), values.view(torch.int64)[3:]):
        want = zlib.crc32(tensor.view(torch.uint8).numpy().tobytes())
        assert crc32(tensor) == want
    assert crc32(torch.empty(0)) == 0


def test_refused_arguments_name_them():
    matrix = np.arange(64, dtype=np.int32).reshape(8, 8)
    with pytest.raises(kvx.InvalidArgumentError, match=r"^data: expected a C-contiguous array"):
        crc32(matrix[:, 1])
    with pytest.raises(kvx.InvalidArgumentError, match=r"^data: expected a C-contiguous array"):
        crc32(np.array([b"x", 1], dtype=object))
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"^data: expected a C-contiguous memoryview"
    ):
        crc32(memoryview(b"abcdef")[::2])
    with pytest.raises(kvx.InvalidArgumentError, match=r"^data: expected bytes, .* got str"):
        crc32("text")
    with pytest.raises(ValueError, match=r"^value: expected an int .* got float"):
        crc32(b"x", 1.0)


def test_tensors_refused_name_the_argument():
    torch = pytest.importorskip("torch")
    with pytest.raises(kvx.InvalidArgumentError, match=r"^data: expected a contiguous tensor"):
        crc32(torch.zeros(8, 8)[:, 1])
    # a device tensor (the meta device stands for any): not copied behind the caller's back
    with pytest.raises(kvx.InvalidArgumentError, match=r"^data: a tensor on meta.*data\.cpu\(\)"):
        crc32(torch.empty(16, device="meta"))


def test_the_variant_this_cpu_runs_is_named():
    assert kvx.checksum.variant() in ("vpclmul", "pclmul", "armv8-crc", "baseline")
    if "KVX_CPU_ISA" not in os.environ:
        assert f"crc32={_expected_variant()}" in kvx.cpu_kernels()


@pytest.mark.parametrize("isa", ["baseline", None])
def test_each_variant_equals_zlib_in_a_fresh_process(isa):
    """The tables (KVX_CPU_ISA=baseline) and the variant the CPU picks, chosen in a child."""
    script = """
import zlib, numpy as np
from kvx import checksum
rng = np.random.default_rng(5)
data = rng.integers(0, 256, (1 << 20) + 77, dtype=np.uint8).tobytes()
for n in list(range(300)) + [4096 + 3, len(data)]:
    for offset in (0, 1, 7, 33):
        piece = data[offset : offset + n]
        assert checksum.crc32(piece, n) == zlib.crc32(piece, n), (n, offset)
print(checksum.variant())
"""
    run = subprocess.run(
        [sys.executable, "-c", script],
        env=isa_environment(isa),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (isa or _expected_variant())


needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on this machine")


@pytest.fixture(scope="module")
def crc32_check(tmp_path_factory):
    """tests/c/crc32_check.c built against the library under test."""
    out = tmp_path_factory.mktemp("crc32") / "crc32_check"
    return c_program("crc32_check.c", CC, _native.library_path(), out)


@needs_cc
@pytest.mark.parametrize("isa", [None, "baseline"])
def test_c_entry_matches_the_definition(crc32_check, isa):
    assert run_crc32_check([str(crc32_check)], isa) == (isa or _expected_variant())


@needs_cc
@pytest.mark.skipif(
    shutil.which("qemu-x86_64") is None or "pclmulqdq" not in cpu_flags(),
    reason="needs qemu-x86_64 (apt-get install qemu-user) on an x86-64 CPU",
)
@pytest.mark.parametrize("cpu,variant", [("max", "pclmul"), ("Nehalem", "baseline")])
def test_c_entry_on_cpus_with_fewer_instructions(crc32_check, cpu, variant):
    """qemu's "max" x86-64 CPU has PCLMULQDQ but not VPCLMULQDQ; Nehalem has neither."""
    assert run_crc32_check(["qemu-x86_64", "-cpu", cpu, str(crc32_check)]) == variant
