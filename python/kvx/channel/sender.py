"""The sending side: gathers a request from the paged cache segment by segment while its first
segments are already on the wire, and reports the receiver's answer through a handle."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import base, payload, wire
from .at_exit import close_sender_at_exit
from .errors import ChannelClosedError, ChannelError, RejectedError, for_request
from .handles import Handle

_STOP = object()
DEPTH = 2  # staging buffers per sender: one being sent, the next being gathered
SEGMENT_BYTES = 16 << 20  # small enough to fill the pipeline fast, large for few trailers


class Outgoing:
    """A request on its way: header and staging buffer, and the trailers of the segments the
    gathering thread has finished (gathered and checksummed) so far, which the sending thread
    waits for one by one."""

    def __init__(self, handle: Handle, header: wire.Header, buffer: Any) -> None:
        self.handle, self.header, self.buffer = handle, header, buffer
        self.error: BaseException | None = None  # why the later segments were abandoned
        self.cancelled = False  # the sending thread gave up on it: stop gathering
        self._trailers: list[bytes] = []
        self._cond = threading.Condition()

    def add(self, crc: int) -> None:
        """The next segment is in the buffer and has CRC-32 ``crc``."""
        with self._cond:
            self._trailers.append(wire.pack_trailer(wire.Trailer(len(self._trailers), crc)))
            self._cond.notify_all()

    def abandon(self, error: BaseException) -> None:
        """The segments not added yet will not be: they go marked as abandoned."""
        with self._cond:
            self.error = error
            self._cond.notify_all()

    def trailer(self, index: int) -> bytes:
        """Segment ``index``'s trailer, once the segment is ready (or abandoned)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._trailers) > index or self.error is not None)
            if index < len(self._trailers):
                return self._trailers[index]
        return wire.pack_trailer(wire.Trailer(index, 0, abandoned=True))


def _segments(out: Outgoing, side: payload.Side | None) -> Iterator[None]:
    """Fills ``out`` one step at a time (yielding after each): a raw payload (``side``) is
    gathered a few layers at a time, and each segment gets its checksum once gathered whole; a
    compressed one, already in the buffer, is checksummed segment by segment."""
    header, buffer = out.header, out.buffer
    ends = [header.segment(index)[1] for index in range(header.num_segments)]
    done = 0  # segments checksummed

    def checksum(upto: int) -> None:
        nonlocal done
        while done < len(ends) and ends[done] <= upto:
            start, end = header.segment(done)
            out.add(payload.crc32(buffer[start:end]))
            done += 1

    if side is None:
        for end in ends:
            checksum(end)
            yield
        return
    layers, per_layer = side.cache.num_layers, side.layer_bytes
    group = max(1, header.segment_bytes // per_layer)
    for first in range(0, layers, group):
        count = min(group, layers - first)
        payload.gather(side, buffer, first, count)
        checksum((first + count) * per_layer)
        yield


class Sender:
    """Sends requests' KV caches to one :class:`Receiver`.

    Args:
        transport: ``"torch"`` (torch.distributed point-to-point; ``backend="gloo"`` by default,
            ``"nccl"``, ``"hccl"``, ``"cncl"`` where installed) or ``"mooncake"``.
        address: the receiver's ``"host:port"``.
        timeout: seconds a started transfer may go without progress before it fails.
        segment_bytes: the payload goes in segments of this many bytes (at least 4096), each
            checksummed on its own, so that one is sent while the next is gathered.
        **options: passed to the transport (see docs/channel.md).

    Requests are sent one after another in the order of :meth:`send` calls by a background
    thread, while another gathers the next segments; any number may be queued.
    """

    def __init__(
        self,
        transport: str,
        address: str,
        *,
        timeout: float = 30.0,
        segment_bytes: int = SEGMENT_BYTES,
        **options: Any,
    ) -> None:
        if not wire.MIN_SEGMENT <= segment_bytes <= wire.MAX_SEGMENT:
            raise ValueError(
                f"segment_bytes: expected {wire.MIN_SEGMENT}..{wire.MAX_SEGMENT}, got "
                f"{segment_bytes}"
            )
        self._segment_bytes = int(segment_bytes)
        self.timeout = float(timeout)
        self._link = base.create(transport, base.SENDER, address, timeout=timeout, **options)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending: dict[str, Handle] = {}
        self._lock = threading.Lock()
        self._broken: ChannelError | None = None
        self._closed = False
        self._ready: queue.Queue[Any] = queue.Queue()  # prepared frames, in order
        self._buffers = threading.Semaphore(DEPTH)  # staging buffers in use
        self._preparer = threading.Thread(
            target=self._prepare_all, name="kvx-channel-gather", daemon=True
        )
        self._worker = threading.Thread(target=self._send_all, name="kvx-channel-send", daemon=True)
        self._replies = threading.Thread(target=self._read, name="kvx-channel-acks", daemon=True)
        self._goodbye = threading.Event()
        self._scratch = payload.Scratch()  # the gathering thread's, for compressing
        self._preparer.start()
        self._worker.start()
        self._replies.start()
        close_sender_at_exit(self)

    def send(
        self,
        request_id: str,
        paged: Any,
        slot_mapping: Any,
        *,
        layout: str = "vllm_nhd",
        compress: bool = False,
    ) -> Handle:
        """Queues the request's KV for sending and returns its handle.

        Args:
            request_id: a non-empty string of at most 188 bytes of UTF-8, unique among the
                requests in flight; the receiver's :meth:`Receiver.expect` names the same.
            paged: the sender's paged cache in ``layout`` (any kvx layout; see
                ``kvx.layouts.PAGED_LAYOUTS``).
            slot_mapping: int64 ``[T]``: the slot of each of the request's tokens; a negative slot
                sends zeros for that token.
            compress: send a ``kvx.codec`` container (CacheGen, lossy) instead of raw elements.

        ``handle.wait()`` returns once the receiver reports the request in its paged cache and
        raises a :class:`ChannelError` if it could not land it. The slots must keep their
        contents until the handle is done (they are read by the background thread).
        """
        wire.request_id_bytes(request_id)
        side = payload.resolve(paged, slot_mapping, layout)
        handle = Handle(request_id)
        with self._lock:
            if self._broken is not None:
                raise for_request(self._broken, request_id)
            if self._closed:
                raise ChannelClosedError("the sender is closed", request_id)
            if request_id in self._pending:
                raise ValueError(f"request_id: {request_id!r} is already in flight")
            self._pending[request_id] = handle
        self._queue.put((handle, side, compress))
        return handle

    def close(self, timeout: float = 30.0) -> None:
        """Waits for queued requests to be sent, tells the receiver, and releases the link. A
        sender still open when the interpreter exits is closed then, with the constructor's
        ``timeout``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        # Replies of requests in flight come before END, so that the receiver's GOODBYE is
        # the last thing on the link.
        with self._lock:
            handles = list(self._pending.values())
        for handle in handles:
            handle._event.wait(max(0.0, deadline - time.monotonic()))
        self._fail_all(ChannelClosedError("the sender was closed before the receiver answered"))
        self._queue.put(_STOP)
        self._worker.join(max(0.0, deadline - time.monotonic()))
        self._goodbye.wait(max(0.0, deadline - time.monotonic()))
        self._link.close()
        # As Receiver.close: no thread of ours may free tensors while the interpreter exits.
        for thread in (self._preparer, self._replies):
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- background threads -------------------------------------------------------------------
    def _prepare_all(self) -> None:
        """Gathers (and checksums, compresses) each request, at most DEPTH staging buffers ahead
        of the sending thread, which sends each segment as soon as it is ready."""
        while (item := self._queue.get()) is not _STOP:
            handle, side, compress = item
            if handle.done():  # failed by close() before it was sent
                continue
            if self._broken is not None:
                handle._finish(for_request(self._broken, handle.request_id))
                continue
            self._buffers.acquire()
            try:
                out, steps = self._prepare(handle, side, compress)
            except Exception as exc:  # a bug or a cache changed under us: this request only
                self._buffers.release()
                self._complete(handle.request_id, ChannelError(repr(exc), handle.request_id))
                continue
            self._ready.put(out)
            try:
                for _ in steps:
                    if out.cancelled:
                        break
            except Exception as exc:  # its first segments may be on the wire already
                out.abandon(exc)
        self._ready.put(_STOP)

    def _prepare(
        self, handle: Handle, side: payload.Side, compress: bool
    ) -> tuple[Outgoing, Iterator[None]]:
        """Stages the request's first step (gather, or the whole compressed container): it fails
        before anything was sent. Returns the request and the steps that fill in the rest."""
        if compress:
            blob = payload.compress(payload.gather(side, self._scratch.get(side.raw_bytes)))
            buffer = self._link.staging(len(blob))
            payload.fill(buffer, blob)
        else:
            buffer = self._link.staging(side.raw_bytes)
        layers, kv, tokens, heads, head_size = side.shape
        header = wire.Header(
            handle.request_id, side.cache.dtype, side.itemsize, layers, kv, tokens, heads,
            head_size, buffer.numel(), self._segment_bytes,
            wire.FLAG_COMPRESSED if compress else 0,
        )  # fmt: skip
        out = Outgoing(handle, header, buffer)
        steps = _segments(out, None if compress else side)
        try:
            next(steps)
        except BaseException:
            self._link.release_staging(buffer)
            raise
        return out, steps

    def _send_all(self) -> None:
        while (out := self._ready.get()) is not _STOP:
            rid = out.handle.request_id
            try:
                if self._broken is not None:
                    out.handle._finish(for_request(self._broken, rid))
                elif not out.handle.done():
                    header_bytes = wire.pack_header(out.header)
                    self._link.send_frame(out.header, header_bytes, out.buffer, out.trailer)
                    if out.error is not None:
                        # Failed now with the sender's reason; it stays pending (its id in use)
                        # until the receiver's FAILED reply comes.
                        error = ChannelError(f"gathering failed: {out.error!r}", rid)
                        out.handle._finish(error)
            except ChannelError as exc:  # a transport's write may not know whose bytes failed
                self._complete(rid, for_request(exc, rid))
                if not isinstance(exc, RejectedError):
                    self._break(exc)
            finally:
                # The gathering thread alone stages buffers: it reuses this one only after it
                # stopped filling it.
                out.cancelled = True
                self._link.release_staging(out.buffer)
                self._buffers.release()
        if self._broken is None:
            try:
                self._link.end()
            except ChannelError as exc:
                self._break(exc)

    def _read(self) -> None:
        while True:
            try:
                reply = wire.parse_reply(self._link.next_reply())
            except ChannelError as exc:
                self._break(exc)
                return
            if reply.status == wire.GOODBYE:
                self._goodbye.set()
                return
            error = None
            if reply.status == wire.FAILED:
                error = RejectedError(f"the receiver failed it: {reply.message}", reply.request_id)
            self._complete(reply.request_id, error)

    def _complete(self, request_id: str, error: ChannelError | None) -> None:
        with self._lock:
            handle = self._pending.pop(request_id, None)
        if handle is not None:
            handle._finish(error)

    def _break(self, error: ChannelError) -> None:
        """The link is gone: every request still in flight fails with ``error``."""
        with self._lock:
            if self._broken is None:
                self._broken = error
        self._goodbye.set()
        self._fail_all(error)

    def _fail_all(self, error: ChannelError) -> None:
        with self._lock:
            handles, self._pending = list(self._pending.values()), {}
        for handle in handles:
            handle._finish(for_request(error, handle.request_id))
