"""Marks of a stream: has a device run everything queued on a stream up to some point?

:func:`mark` records the current end of a stream (``kvx_mark_record``) and
:meth:`Mark.passed` answers without waiting (``kvx_mark_passed``). On the CPU every call's work
is done when the call returns, so a mark has passed as soon as it exists. On a device it is an
event of that device recorded on the stream: a CUDA/HIP event without timing, an AscendCL
event, a CNRT notifier. This is what LMCache's stream-ordered completions and events need
(``kvx.lmcache.stream_ops``): work handed to the host once the stream got past a point, with no
callback running on the runtime's threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _devices, _torch
from ._devices import DEVICE_CPU
from ._errors import InvalidArgumentError, NotAvailableError
from ._native import check, ffi, lib
from ._tensors import stream_struct
from .memory import resolve_device


class Mark:
    """A point of one stream, from :func:`mark`.

    ``stream`` is ``(kvx device type, device index, handle)`` of the stream it was recorded on
    (handle 0: the device's default stream; ``(KVX_DEVICE_CPU, 0, 0)`` on the CPU): marks with
    the same ``stream`` pass in the order they were recorded. Free a mark with :meth:`release`,
    or leave it to the garbage collector; a mark released before its stream reached it keeps
    its event until the stream has. One thread may not release a mark while another asks
    :meth:`passed` about it."""

    __slots__ = ("_cdata", "stream")

    def __init__(self, cdata: Any, stream: tuple[int, int, int]):
        self._cdata = cdata
        self.stream = stream

    def passed(self) -> bool:
        """Whether the stream has run everything that was queued on it before the mark. Never
        waits; once True, always True. Raises :class:`kvx.DeviceError` when the runtime cannot
        tell, :class:`kvx.InvalidArgumentError` after :meth:`release`."""
        if self._cdata is None:
            raise InvalidArgumentError("mark: released already")
        answer = lib.kvx_mark_passed(self._cdata)
        if answer < 0:
            check(answer)
        return answer == 1

    def release(self) -> None:
        """Frees the mark now, passed or not. A second call does nothing."""
        cdata, self._cdata = self._cdata, None
        if cdata is not None:
            ffi.gc(cdata, None)  # freed here, with the status checked, not by the collector
            check(lib.kvx_mark_release(cdata))

    def __repr__(self) -> str:
        state = "released" if self._cdata is None else "recorded"
        return f"<kvx.Mark {state} on stream {self.stream}>"


def _handle(stream: Any, kind: _devices.DeviceKind) -> int:
    """The raw handle of ``stream``: an int as it is, or a torch stream's handle attribute."""
    if isinstance(stream, int) and not isinstance(stream, bool):
        if stream < 0:
            raise InvalidArgumentError(f"stream: expected a handle >= 0, got {stream}")
        return stream
    handle = getattr(stream, kind.stream_attribute or "", None)
    if not isinstance(handle, int):
        raise InvalidArgumentError(
            f"stream: expected None, a raw {kind.label} stream handle (int) or a "
            f"torch stream of that device, got {type(stream).__name__}"
        )
    return handle


def mark(device: Any = None, stream: Any = None) -> Mark:
    """Records a mark at the current end of a stream of ``device``, without waiting.

    Args:
        device: as in :func:`kvx.copy_batch`: None or ``"cpu"``, a torch.device, ``"cuda:1"``,
            ``"npu"``, ``"mlu:0"``, ``"hip:0"``... Without an index, torch's current device of
            that type. None with a torch stream as ``stream``: that stream's device.
        stream: which stream of the device. None: torch's current stream there. An int: a raw
            handle (``cudaStream_t``, ``aclrtStream``, ``cnrtQueue_t``; 0 is the device's
            default stream), as LMCache passes its stream pointers. Or a torch stream of that
            device type. Not looked at on the CPU, which has no streams.

    Raises :class:`kvx.NotAvailableError` when the device's backend cannot run,
    :class:`kvx.UnsupportedError` when its runtime has no events (a CNRT without notifiers),
    :class:`kvx.DeviceError` when the runtime fails."""
    if device is None and stream is not None and not isinstance(stream, int):
        device = getattr(stream, "device", None)
    device_type, index = resolve_device(device)
    out = ffi.new("kvx_mark **")
    if device_type == DEVICE_CPU:
        check(lib.kvx_mark_record(ffi.NULL, out))
        return Mark(ffi.gc(out[0], lib.kvx_mark_release), (DEVICE_CPU, 0, 0))
    # before torch is asked for the device's stream, which it may not have
    if not lib.kvx_backend_available(device_type):
        check(lib.KVX_ERR_NOT_AVAILABLE)
    kind = _devices.by_kvx_type(device_type)
    if stream is not None:
        handle = _handle(stream, kind)
    else:
        torch = _torch.load()
        if torch is None:
            raise NotAvailableError(
                f"stream: {kind.label} needs torch to read its current stream, and torch is not "
                "installed: pass the stream's handle"
            )
        handle = kind.current_stream_handle(torch, index)
    check(lib.kvx_mark_record(stream_struct(device_type, index, handle), out))
    return Mark(ffi.gc(out[0], lib.kvx_mark_release), (device_type, index, handle))


__all__: Sequence[str] = ["Mark", "mark"]
