"""LMCache's stream-ordered completions and events on kvx's stream marks (:mod:`kvx.marks`).

LMCache's CUDA ops enqueue a host callback on the stream: an item reaches the drain once the
stream has run everything queued before it. kvx records a mark on the active device's stream
instead, and a drain returns the items whose marks have passed, in recording order, keeping the
others for a later drain. Nothing runs on the runtime's threads, so nothing there can wait for
the GIL. On the CPU a mark has passed when it is made, so kvx behaves as LMCache's torch
versions do, which take every item at call time.

An event's timestamp is the wall-clock time at which kvx first saw its mark passed: when it was
recorded if the stream had got there by then, else the drain that found it. So it is never
earlier than the stream passing the mark, and at most as late as that drain; LMCache's CUDA op
stamps the time its callback ran on the stream instead (and its torch version the time of the
call).

Where the device's runtime has no events (a CNRT without notifiers), recording waits for the
stream (:func:`kvx.synchronize` of it) and says so once, as a warning of the ``kvx.lmcache``
logger: the item then reaches the drain at once, after the stream got there, which is what the
callback would give, at the cost of the wait.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .. import marks
from .._errors import UnsupportedError
from .._native import check, lib
from .._tensors import stream_struct
from ..memory import resolve_device
from . import _active, _fallback


class _Entry:
    """One recorded item and its mark; ``seen`` is when its mark was first seen passed."""

    __slots__ = ("item", "mark", "seen")

    def __init__(self, item: Any, mark: marks.Mark | None, seen: float | None):
        self.item, self.mark, self.seen = item, mark, seen


class _Recorder:
    """Items waiting for their marks, in recording order, behind one lock."""

    def __init__(self, op: str) -> None:
        self._op = op
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []

    def record(self, stream_ptr: int, item: Any) -> None:
        device = _active.device()
        # Marked under the lock, so that the entries of one stream are in that stream's order
        # and a drain may stop looking at a stream at its first mark not passed.
        with self._lock:
            try:
                mark = marks.mark(device, stream_ptr)
            except UnsupportedError as e:
                why = str(e)
            else:
                entry = _Entry(item, mark, None)
                if mark.passed():
                    _settle(entry)
                self._entries.append(entry)
                return
        _wait_for_stream(self._op, device, stream_ptr, why)  # not under the lock: it may take long
        entry = _Entry(item, None, None)
        _settle(entry)
        with self._lock:
            self._entries.append(entry)

    def drain(self) -> list[tuple[Any, float]]:
        """(item, time seen passed) of every entry whose mark passed, in recording order."""
        with self._lock:
            blocked: set[tuple[int, int, int]] = set()  # streams with a mark not passed
            for entry in self._entries:
                mark = entry.mark
                if mark is None or mark.stream in blocked:
                    continue
                # On an error the entries stay as they are (those seen passed keep that), so
                # a later drain returns each exactly once.
                if mark.passed():
                    _settle(entry)
                else:
                    blocked.add(mark.stream)
            ready = [(e.item, e.seen) for e in self._entries if e.mark is None]
            self._entries = [e for e in self._entries if e.mark is not None]
        return ready


def _settle(entry: _Entry) -> None:
    """Marks an entry ready: its mark has passed now (or there was none to wait for)."""
    entry.seen = time.time()
    if entry.mark is not None:
        entry.mark.release()
        entry.mark = None


def _wait_for_stream(op: str, device: Any, stream_ptr: int, why: str) -> None:
    """Waits for the stream a mark could not be recorded on, and says so once."""
    _fallback.announce(op, why, "waits for the stream instead of marking it")
    check(lib.kvx_synchronize(stream_struct(*resolve_device(device), stream_ptr)))


_completions = _Recorder("record_completion_on_stream")
_events = _Recorder("record_event_on_stream")


def record_completion_on_stream(cuda_stream_ptr: int, kind: str, payload: bytes) -> None:
    """Makes ``(kind, payload)`` reach :func:`drain_recorded_completions` once the active
    device's stream ``cuda_stream_ptr`` (a raw handle; 0: the device's default stream) has run
    what is queued on it now. On the CPU that is at once."""
    _completions.record(cuda_stream_ptr, (kind, payload))


def drain_recorded_completions() -> list[tuple[str, bytes]]:
    """Every ``(kind, payload)`` whose stream has got past the point where it was recorded, in
    recording order, each once; the others stay for a later drain. Thread-safe."""
    return [item for item, _ in _completions.drain()]


def record_event_on_stream(
    cuda_stream_ptr: int,
    event_type_name: str,
    session_id: str,
    str_metadata: dict[str, str],
    int_metadata: dict[str, int],
) -> None:
    """Makes the event reach :func:`drain_recorded_events` once the active device's stream
    ``cuda_stream_ptr`` has run what is queued on it now (on the CPU at once). The metadata is
    copied now."""
    item = (event_type_name, session_id, dict(str_metadata), dict(int_metadata))
    _events.record(cuda_stream_ptr, item)


def drain_recorded_events() -> list[tuple[str, str, float, dict[str, str], dict[str, int]]]:
    """Every event whose stream has got past it, in recording order, each once, as
    ``(event_type_name, session_id, timestamp, str_metadata, int_metadata)``: the timestamp is
    when kvx first saw the stream past it (see the module's docstring). Thread-safe."""
    return [(name, sid, seen, strs, ints) for (name, sid, strs, ints), seen in _events.drain()]
