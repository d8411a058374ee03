"""Every kind of device libkvx knows, in one place.

One :class:`DeviceKind` per backend holds its facts: the backend's name and ``kvx_device_type``,
the torch device type its tensors carry and the plugin that adds that type to torch, how to read
torch's current stream there, and how to name its devices in messages. What a backend can do is
asked of the library (``kvx_backend_compiled``, ``kvx_backend_available``,
``kvx_backend_supports``), never written down here. The rest of the package (tensor description,
streams, the RoPE route, ``kvx info``) looks device facts up here and keeps no table of its own.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import _torch
from ._errors import InvalidArgumentError
from ._native import check, last_error, lib


@dataclass(frozen=True)
class Op:
    """An operation ``kvx_backend_supports`` answers for: its name in ``kvx info``, its code."""

    name: str
    code: int  # lib.KVX_OP_*


OPS = (
    Op("transfer", lib.KVX_OP_TRANSFER),
    Op("quantize", lib.KVX_OP_CODEC_QUANTIZE),
    Op("dequantize", lib.KVX_OP_CODEC_DEQUANTIZE),
    Op("calculate_cdf", lib.KVX_OP_CODEC_CALCULATE_CDF),
    Op("encode", lib.KVX_OP_CODEC_ENCODE),
    Op("decode", lib.KVX_OP_CODEC_DECODE),  # decode_fast_new and decode_fast_prefsum
    Op("container", lib.KVX_OP_CODEC_CONTAINER),  # kvx.codec.encode / decode, in host memory
    Op("rerotate", lib.KVX_OP_ROPE_REROTATE),
    Op("apply", lib.KVX_OP_ROPE_APPLY),
    Op("copy", lib.KVX_OP_COPY),  # kvx.copy_batch
    # kvx.codec.quantize / dequantize with method="rotated"
    Op("quantize_rotated", lib.KVX_OP_CODEC_QUANTIZE_ROTATED),
    Op("dequantize_rotated", lib.KVX_OP_CODEC_DEQUANTIZE_ROTATED),
)
# The codec's low-level entries, which run on the device's stream (the container never does).
CODEC_OPS = OPS[1:6]
ROPE_OPS = OPS[7:9]

# How `kvx info` writes a kvx_support value.
SUPPORT_WORDS = {
    lib.KVX_SUPPORT_NONE: "-",
    lib.KVX_SUPPORT_NATIVE: "native",
    lib.KVX_SUPPORT_HOST_STAGED: "staged",
}


@functools.cache
def _supports(kvx_type: int, op: int) -> int:
    """kvx_backend_supports, remembered: it is a fact of the loaded build."""
    answer = int(lib.kvx_backend_supports(kvx_type, op))
    if answer < 0:
        check(answer)  # an op that is not a kvx_op: InvalidArgumentError with the C message
    return answer


@dataclass(frozen=True)
class DeviceKind:
    """One backend and the devices it drives."""

    name: str  # the backend's name in `kvx info` and kvx.backends(): "cpu", "cuda", "hip", ...
    kvx_type: int  # lib.KVX_DEVICE_*
    torch_type: str  # torch.device.type of its tensors: "cpu", "cuda" (also ROCm), "npu", "mlu"
    torch_plugin: str | None  # module whose import adds torch_type to torch; None: built in
    stream_attribute: str | None  # handle of torch.<torch_type>.current_stream(i); None: CPU
    label: str  # how messages name its devices ("hip:0", "npu:1")
    # whether its backend plans transfers on the host, and so reads slot_mapping there
    plans_on_host: bool = False

    def current_stream_handle(self, torch: ModuleType, index: int) -> int:
        """The raw handle (``cudaStream_t``, ``aclrtStream``, ``cnrtQueue_t``) of torch's
        current stream on device ``index``, read now: reading the NPU stream flushes
        torch_npu's queue, so it is never cached. 0 (the NULL stream) for the CPU."""
        if self.stream_attribute is None:
            return 0
        stream = getattr(torch, self.torch_type).current_stream(index)
        return int(getattr(stream, self.stream_attribute))

    def torch_module(self, torch: ModuleType) -> Any | None:
        """``torch.cuda`` / ``torch.npu`` / ``torch.mlu``, importing the vendor plugin that adds
        it when it is missing; None where the plugin is not installed (or fails to import)."""
        if self.torch_plugin and not hasattr(torch, self.torch_type):
            # Not installed, or broken: no such device then.
            with contextlib.suppress(Exception):
                importlib.import_module(self.torch_plugin)
        return getattr(torch, self.torch_type, None)

    def compiled(self) -> bool:
        """Whether its backend is compiled into the loaded libkvx."""
        return bool(lib.kvx_backend_compiled(self.kvx_type))

    def available(self) -> bool:
        """Whether its backend can be used now (runtime loaded, a device present); when not,
        :func:`kvx._native.last_error` says why."""
        return bool(lib.kvx_backend_available(self.kvx_type))

    def support(self, op: int) -> int:
        """How its backend runs ``op`` (a ``lib.KVX_OP_*``): ``lib.KVX_SUPPORT_NONE``,
        ``_NATIVE`` or ``_HOST_STAGED``; a fact of the build, whatever the runtime. Raises
        :class:`kvx.InvalidArgumentError` for an ``op`` that is not a ``kvx_op``."""
        return _supports(self.kvx_type, int(op))

    def why_not(self, op: int) -> str:
        """Why libkvx cannot run ``op`` on these devices now: its backend is not compiled in,
        has no entry for ``op``, or is unavailable (the reason libkvx gives); "" where it can
        (natively or host-staged)."""
        if self.support(op) == lib.KVX_SUPPORT_NONE:
            if not self.compiled():
                return f"the {self.name} backend is not compiled into this libkvx"
            name = next((o.name for o in OPS if o.code == op), str(op))
            return f"the {self.name} backend has no {name} kernel"
        if self.available():
            return ""
        return last_error() or f"the {self.name} backend is not available"


CPU = DeviceKind("cpu", lib.KVX_DEVICE_CPU, "cpu", None, None, "cpu")
CUDA = DeviceKind("cuda", lib.KVX_DEVICE_CUDA, "cuda", None, "cuda_stream", "cuda")
# ROCm builds of torch call their GPUs "cuda" too: see by_torch_type.
HIP = DeviceKind("hip", lib.KVX_DEVICE_HIP, "cuda", None, "cuda_stream", "hip")
ASCEND = DeviceKind(
    "ascend", lib.KVX_DEVICE_ASCEND, "npu", "torch_npu", "npu_stream", "npu", plans_on_host=True
)
CNRT = DeviceKind(
    "cnrt", lib.KVX_DEVICE_CNRT, "mlu", "torch_mlu", "mlu_stream", "mlu", plans_on_host=True
)

KINDS = (CPU, CUDA, HIP, ASCEND, CNRT)
DEVICE_CPU: int = CPU.kvx_type

_BY_KVX_TYPE = {kind.kvx_type: kind for kind in KINDS}
_BY_NAME = {kind.name: kind for kind in KINDS}
_BY_TORCH_TYPE = {kind.torch_type: kind for kind in KINDS if kind is not HIP}


def by_kvx_type(kvx_type: int) -> DeviceKind:
    """The kind of ``kvx_type`` (a ``lib.KVX_DEVICE_*``); InvalidArgumentError for another."""
    try:
        return _BY_KVX_TYPE[kvx_type]
    except KeyError:
        known = ", ".join(f"{kind.kvx_type} ({kind.name})" for kind in KINDS)
        raise InvalidArgumentError(
            f"device_type: expected one of {known}, got {kvx_type!r}"
        ) from None


def by_name(name: str) -> DeviceKind:
    """The kind whose backend is called ``name`` ("cpu", "cuda", "hip", "ascend", "cnrt")."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise InvalidArgumentError(
            f"name: expected one of {', '.join(_BY_NAME)}, got {name!r}"
        ) from None


def by_torch_type(torch_type: str, torch: ModuleType | None = None) -> DeviceKind:
    """The kind of torch device type ``torch_type``; ``"cuda"`` is HIP on a ROCm build of
    ``torch`` (``torch.version.hip`` set). InvalidArgumentError for a type libkvx lacks."""
    if torch_type == "cuda" and torch is not None and getattr(torch.version, "hip", None):
        return HIP
    try:
        return _BY_TORCH_TYPE[torch_type]
    except KeyError:
        raise InvalidArgumentError(
            f"device: libkvx does not support torch device type {torch_type!r}"
        ) from None


def by_torch_device(device: Any) -> DeviceKind:
    """The kind of a ``torch.device`` (torch is imported: the device came from it)."""
    return by_torch_type(device.type, _torch.imported())


def accelerators() -> tuple[DeviceKind, ...]:
    """Every kind but the CPU."""
    return tuple(kind for kind in KINDS if kind is not CPU)
