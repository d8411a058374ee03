"""Library-wide queries and settings: version, backends, CPU thread count, where the files are."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from ._native import check, ffi, header_path, last_error, lib, library_path

_BACKENDS = (
    ("cpu", lib.KVX_DEVICE_CPU),
    ("cuda", lib.KVX_DEVICE_CUDA),
    ("hip", lib.KVX_DEVICE_HIP),
    ("ascend", lib.KVX_DEVICE_ASCEND),
    ("cnrt", lib.KVX_DEVICE_CNRT),
)


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


# Backends whose codec entries are the host-staged codec (src/core/codec_staged.c).
_STAGED_CODEC = ("ascend", "cnrt")
# torch device type of each backend, for the RoPE fallback's route
_TORCH_DEVICE = {"cuda": "cuda", "hip": "cuda", "ascend": "npu", "cnrt": "mlu"}
HOST_STAGED = "host-staged (copies to pinned host memory, CPU codec, copies back; synchronises the stream)"


@dataclass(frozen=True)
class BackendState:
    """Whether a backend is compiled in and usable now, and if not, why; and how the codec and
    RoPE run on its devices ("native", "host-staged ...", "fallback: ...", "unsupported ...")."""

    name: str
    compiled: bool
    available: bool
    reason: str
    codec: str = ""
    rope: str = ""


def _stream(device_type: int) -> object:
    stream = ffi.new("kvx_stream *")
    stream.device_type, stream.device_index, stream.handle = device_type, 0, ffi.NULL
    return stream


def _has_codec(device_type: int) -> bool:
    """Asks the backend itself: an empty quantize touches no memory, and answers
    KVX_ERR_UNSUPPORTED when the backend has no codec entries."""
    bins = ffi.new("int32_t[1]", [4])
    return lib.kvx_codec_quantize(ffi.NULL, lib.KVX_DTYPE_FLOAT32, 1, 0, 1, 0, 1, bins, ffi.NULL, ffi.NULL,
                                  _stream(device_type)) == lib.KVX_OK


def _has_rope(device_type: int) -> bool:
    """The same for RoPE: an apply over zero tokens."""
    t = ffi.new("kvx_rope_tensor *", {"struct_size": ffi.sizeof("kvx_rope_tensor"), "dtype": lib.KVX_DTYPE_FLOAT32,
                                      "num_layers": 1, "num_heads": 1, "head_size": 2})
    table = ffi.new("float[2]")
    c = ffi.new("kvx_rope_cache *", {"struct_size": ffi.sizeof("kvx_rope_cache"), "dtype": lib.KVX_DTYPE_FLOAT32,
                                     "rot_dim": 2, "pairing": lib.KVX_ROPE_NEOX, "max_position": 1,
                                     "row_stride": 2, "cos_sin": table})
    return lib.kvx_rope_apply(t, ffi.NULL, c, ffi.NULL, lib.KVX_DTYPE_INT64, _stream(device_type)) == lib.KVX_OK


def _routes(name: str, device_type: int, compiled: bool, available: bool) -> tuple[str, str]:
    """(codec route, RoPE route) of a backend: asked of the backend when it is available; for
    a runtime-loaded backend without its runtime, what its compiled-in table says."""
    from . import _rope_fallback

    fallback = _rope_fallback.routes(_TORCH_DEVICE.get(name, name))
    if not compiled:
        return ("-", fallback if name != "cpu" else "-")
    if not available:
        if name in _STAGED_CODEC:
            return (HOST_STAGED, fallback)
        return ("unknown until the backend is available", fallback)
    codec = HOST_STAGED if name in _STAGED_CODEC else "native"
    if not _has_codec(device_type):
        codec = "unsupported (kvx.codec.encode/decode go through host memory)"
    return (codec, "native" if _has_rope(device_type) else fallback)


def backends() -> list[BackendState]:
    """The state of every backend libkvx knows of, and which codec and RoPE route it uses."""
    states = []
    for name, device_type in _BACKENDS:
        compiled = bool(lib.kvx_backend_compiled(device_type))
        available = bool(lib.kvx_backend_available(device_type))
        reason = "" if available else last_error()
        codec, rope = _routes(name, device_type, compiled, available)
        states.append(BackendState(name, compiled, available, reason, codec, rope))
    return states


def set_num_threads(num_threads: int) -> None:
    """Threads the CPU backend uses; 0 restores the default (``KVX_NUM_THREADS`` or all CPUs)."""
    check(lib.kvx_set_num_threads(int(num_threads)))


def get_num_threads() -> int:
    """Threads the CPU backend uses now."""
    return int(lib.kvx_get_num_threads())


# Instruction-set extensions the CPU kernels choose between (x86-64 and aarch64 /proc/cpuinfo names).
_ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16",
              "asimd", "asimdhp", "fphp", "bf16", "sve", "sve2")


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
    return f"{platform.machine()}, {model}: {' '.join(present) or 'none of ' + ' '.join(_ISA_FLAGS)}"


def cpu_kernels() -> str:
    """The instruction-set variants the CPU kernels run in this process, chosen from the CPU and
    ``KVX_CPU_ISA``, e.g. ``"rope=avx512bf16 range_coder=avx2"``."""
    return ffi.string(lib.kvx_cpu_kernels()).decode()
