"""The receiving side: takes whole frames from the transport (whose segments it checked as they
arrived), and lands each in the paged cache that :meth:`Receiver.expect` named for its
request."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from . import base, payload, wire
from .at_exit import close_receiver_at_exit
from .errors import ChannelClosedError, ChannelError, WireFormatError, for_request
from .handles import Handle

# A compressed payload may exceed the raw bytes a little (CDF tables of a short request); more
# than this is refused before any of it is received.
_COMPRESSED_SLACK = 1 << 20


def check_header(data: bytes) -> wire.Header:
    """Parses a header and refuses a payload size no honest sender declares."""
    header = wire.parse_header(data)
    if header.compressed and header.payload_bytes > 2 * header.raw_bytes + _COMPRESSED_SLACK:
        raise WireFormatError(
            f"compressed payload of {header.payload_bytes} bytes for {header.raw_bytes} bytes of "
            "KV",
            header.request_id,
        )
    return header


class Receiver:
    """Receives requests' KV caches from senders and lands them in paged caches.

    Args:
        transport: ``"torch"`` or ``"mooncake"`` (as the :class:`Sender`).
        address: ``"host:port"`` to listen at (mooncake: port 0 picks a free one; see
            :attr:`address`).
        timeout: seconds a started transfer may go without progress before it fails.
        **options: passed to the transport (see docs/channel.md).

    A request lands only once its whole payload arrived, the CRC-32 of each of its segments
    matched, it decoded (if compressed) and its shape and dtype matched the cache; otherwise the
    cache is not touched.
    """

    def __init__(
        self, transport: str, address: str, *, timeout: float = 30.0, **options: Any
    ) -> None:
        self._link = base.create(transport, base.RECEIVER, address, timeout=timeout, **options)
        self.timeout = float(timeout)
        self.address: str = self._link.address
        self._cond = threading.Condition()
        self._expected: dict[str, tuple[Handle, payload.Side]] = {}
        self._arrived: dict[str, base.Frame] = {}
        self._failed: dict[str, ChannelError] = {}  # failures of requests not expected yet
        self._broken: ChannelError | None = None
        self._closed = False
        self._closing = False  # close() was called: a second call returns at once
        self._receiver = threading.Thread(
            target=self._receive, name="kvx-channel-recv", daemon=True
        )
        self._lander = threading.Thread(target=self._land, name="kvx-channel-land", daemon=True)
        self._receiver.start()
        self._lander.start()
        close_receiver_at_exit(self)

    def expect(
        self, request_id: str, paged: Any, slot_mapping: Any, *, layout: str = "vllm_nhd"
    ) -> Handle:
        """Names where request ``request_id`` lands and returns its handle.

        Args:
            paged: the receiver's paged cache in ``layout`` (its own block size; the dtype, layer
                count, heads and head size must be the sender's).
            slot_mapping: int64 ``[T]``, T the sender's token count: the slot each token goes to
                (negative: not written).

        May be called before or after the request arrives. ``handle.wait()`` returns once the
        request is in the cache and raises a :class:`ChannelError` naming the request and the
        problem otherwise (the cache is then untouched).
        """
        wire.request_id_bytes(request_id)
        side = payload.resolve(paged, slot_mapping, layout)
        handle = Handle(request_id)
        with self._cond:
            if request_id in self._expected:
                raise ValueError(f"request_id: {request_id!r} is already expected")
            error = self._failed.pop(request_id, None) or self._broken
            if error is None and self._closed:
                error = ChannelClosedError("the receiver is closed")
            if error is not None and request_id not in self._arrived:
                handle._finish(for_request(error, request_id))
                return handle
            self._expected[request_id] = (handle, side)
            self._cond.notify_all()
        return handle

    def close(self, timeout: float = 30.0) -> None:
        """Waits up to ``timeout`` seconds for the sender(s) to end the channel (a transport is
        only taken down cleanly then), stops landing, and releases the link.
        Requests not landed by then fail with :class:`ChannelClosedError`. A receiver still
        open when the interpreter exits is closed then, with the constructor's ``timeout``."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
        deadline = time.monotonic() + timeout
        if self._link.ends_with_sender:
            self._receiver.join(timeout)
        else:
            self._link.drain(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._fail_all(ChannelClosedError("the receiver was closed"))
        self._link.close()
        # Background threads still running at interpreter exit abort the process when they free
        # a tensor then (torch releases the GIL in its deallocator, and a thread that wants it
        # back during finalization is ended by an unwind that C++ code does not let through).
        for thread in (self._lander, self._receiver):
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- background threads -------------------------------------------------------------------
    def _receive(self) -> None:
        while not self._closed:
            try:
                frame = self._link.next_frame(check_header, payload.SegmentCheck)
            except ChannelError as exc:
                if exc.fatal:
                    self._break(exc)
                    return
                if exc.request_id:
                    self._fail(exc.request_id, exc)
                continue
            if frame is None:
                return
            if frame.error is not None:  # failed its checks: answered now, nothing to hold
                frame.release()
                self._fail(frame.header.request_id, frame.error)
                self._answer(frame.header.request_id, frame.error)
                continue
            with self._cond:
                self._arrived[frame.header.request_id] = frame
                self._cond.notify_all()

    def _next_ready(self) -> tuple[base.Frame, Handle, payload.Side] | None:
        with self._cond:
            while not self._closed:
                ready = next((rid for rid in self._arrived if rid in self._expected), None)
                if ready is not None:
                    handle, side = self._expected.pop(ready)
                    return self._arrived.pop(ready), handle, side
                self._cond.wait()
        return None

    def _land(self) -> None:
        scratch = payload.Scratch()
        while (item := self._next_ready()) is not None:
            frame, handle, side = item
            header = frame.header
            error: ChannelError | None = None
            try:
                payload.land(side, header, frame.payload, scratch)
            except ChannelError as exc:
                error = exc
            except Exception as exc:  # e.g. kvx rejected the cache: this request only
                error = ChannelError(f"landing failed: {exc}", header.request_id)
            finally:
                frame.release()
            handle._finish(error)
            self._answer(header.request_id, error)

    def _answer(self, request_id: str, error: ChannelError | None) -> None:
        status = wire.LANDED if error is None else wire.FAILED
        # A sender that is gone or stalled cannot take it; the receive thread reports the link.
        with contextlib.suppress(ChannelError):
            self._link.reply(wire.pack_reply(request_id, status, error.detail if error else ""))

    def _fail(self, request_id: str, error: ChannelError) -> None:
        with self._cond:
            entry = self._expected.pop(request_id, None)
            if entry is None:
                self._failed[request_id] = error
        if entry is not None:
            entry[0]._finish(error)

    def _break(self, error: ChannelError) -> None:
        with self._cond:
            if self._broken is None:
                self._broken = error
        self._fail_all(error)

    def _fail_all(self, error: ChannelError) -> None:
        with self._cond:
            entries, self._expected = list(self._expected.values()), {}
            frames, self._arrived = list(self._arrived.values()), {}
        for frame in frames:
            frame.release()
        for handle, _ in entries:
            handle._finish(for_request(error, handle.request_id))
