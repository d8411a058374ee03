"""Library-wide queries and settings: version, backends, CPU thread count, where the files are."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

from . import _devices
from ._native import check, ffi, header_path, last_error, lib, library_path


def version() -> str:
    """Version of the loaded libkvx, e.g. ``"0.1.0"``."""
    return ffi.string(lib.kvx_version_string()).decode()


def get_include() -> str:
    """Folder holding ``kvx.h``, for C and C++ code built against the installed package.

    Like ``numpy.get_include()``: pass it as ``-I`` (or to ``include_directories``). The header
    declares the same API the package loads (``python -m kvx --cflags`` prints ``-I`` with it).
    """
    return str(header_path().parent)


def get_library() -> str:
    """Path of the libkvx shared library this package loads (``.../kvx/libkvx.so.0`` in a wheel).

    Link against it by path (``cc app.c /path/libkvx.so.0``), which records ``NEEDED libkvx.so.0``,
    and add its folder to the program's rpath or ``LD_LIBRARY_PATH``; ``python -m kvx --libs``
    prints such flags. The wheel has no ``libkvx.so`` link, so a bare ``-lkvx`` does not find it.
    """
    return str(library_path())


HOST_STAGED = (
    "host-staged (copies to pinned host memory, CPU codec, copies back; synchronises the stream)"
)
_CODEC_ROUTES = {
    lib.KVX_SUPPORT_NATIVE: "native",
    lib.KVX_SUPPORT_HOST_STAGED: HOST_STAGED,
    lib.KVX_SUPPORT_NONE: "unsupported (kvx.codec.encode/decode go through host memory)",
}


@dataclass(frozen=True)
class BackendState:
    """Whether a backend is compiled in and usable now, and if not, why; how the codec and RoPE
    run on its devices ("native", "host-staged ...", "fallback: ...", "unsupported ..."); and
    ``ops``: how the build runs each operation there, by the operation's name in ``kvx info``
    ("transfer", "quantize", ..., "rerotate", "apply"): "native", "staged" or "-"."""

    name: str
    compiled: bool
    available: bool
    reason: str
    codec: str = ""
    rope: str = ""
    # left out of the hash, so that states stay hashable as before
    ops: dict[str, str] = field(default_factory=dict, hash=False)


def _by_support(kind: _devices.DeviceKind, ops: tuple[_devices.Op, ...]) -> dict[int, list[str]]:
    """The names of ``ops``, grouped by how ``kind``'s backend runs them (kvx_support)."""
    groups: dict[int, list[str]] = {}
    for op in ops:
        groups.setdefault(kind.support(op.code), []).append(op.name)
    return groups


def _route(groups: dict[int, list[str]], words: dict[int, str]) -> str:
    """One route when every op shares it, else each route with its ops."""
    if len(groups) == 1:
        return words[next(iter(groups))]
    return "; ".join(f"{', '.join(names)}: {words[support]}" for support, names in groups.items())


def _routes(kind: _devices.DeviceKind, compiled: bool, available: bool) -> tuple[str, str]:
    """(codec route, RoPE route) on ``kind``'s devices. The codec's is a fact of the build
    (kvx_backend_supports); RoPE runs libkvx's kernel where the backend has one and is available
    now, else the fallback kvx.rope picks (kvx._rope_fallback), whatever the runtime."""
    from . import _rope_fallback

    fallback = _rope_fallback.routes(kind.torch_type)
    if not compiled:
        return ("-", "-" if kind is _devices.CPU else fallback)
    codec = _route(_by_support(kind, _devices.CODEC_OPS), _CODEC_ROUTES)
    if not available:
        return (codec, fallback)
    rope_words = {
        lib.KVX_SUPPORT_NATIVE: "native",
        lib.KVX_SUPPORT_HOST_STAGED: "host-staged",
        lib.KVX_SUPPORT_NONE: fallback,
    }
    return (codec, _route(_by_support(kind, _devices.ROPE_OPS), rope_words))


def _state(kind: _devices.DeviceKind) -> BackendState:
    compiled = kind.compiled()
    available = kind.available()
    reason = "" if available else last_error()
    codec, rope = _routes(kind, compiled, available)
    ops = {op.name: _devices.SUPPORT_WORDS[kind.support(op.code)] for op in _devices.OPS}
    return BackendState(kind.name, compiled, available, reason, codec, rope, ops)


def backends() -> list[BackendState]:
    """The state of every backend libkvx knows of, how the codec and RoPE run on its devices, and
    how the build runs each operation there."""
    return [_state(kind) for kind in _devices.KINDS]


def set_num_threads(num_threads: int) -> None:
    """Threads the CPU backend uses; 0 restores the default (``KVX_NUM_THREADS`` or all CPUs)."""
    check(lib.kvx_set_num_threads(int(num_threads)))


def get_num_threads() -> int:
    """Threads the CPU backend uses now."""
    return int(lib.kvx_get_num_threads())


# Instruction-set extensions the CPU kernels choose between (x86-64 and aarch64 /proc/cpuinfo
# names).
_ISA_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512_bf16",
    "pclmulqdq",
    "vpclmulqdq",
    "asimd",
    "asimdhp",
    "fphp",
    "bf16",
    "sve",
    "sve2",
    "crc32",
)


def cpu_isa() -> str:
    """This machine's CPU and the extensions kvx's kernels choose between, e.g.
    ``"x86_64, Intel(R) Xeon(R) Platinum 8481C: avx2 fma f16c avx512f ..."``: what a benchmark
    figure should be quoted with, since machines of one kind differ (AVX-512 or AVX2 only)."""
    model, flags = "unknown model", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "CPU part") and model == "unknown model":
                    model = value.strip() if key == "model name" else f"CPU part {value.strip()}"
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    present = [flag for flag in _ISA_FLAGS if flag in flags]
    return (
        f"{platform.machine()}, {model}: {' '.join(present) or 'none of ' + ' '.join(_ISA_FLAGS)}"
    )


def cpu_kernels() -> str:
    """The instruction-set variants the CPU kernels run in this process, chosen from the CPU and
    ``KVX_CPU_ISA``, e.g. ``"rope=avx512bf16 range_coder=avx2 copy=stream-avx2 crc32=vpclmul"``
    (``copy``: how transfers larger than the last-level cache copy, see
    ``KVX_CPU_STREAM_THRESHOLD``; ``crc32``: :mod:`kvx.checksum`'s variant)."""
    return ffi.string(lib.kvx_cpu_kernels()).decode()
