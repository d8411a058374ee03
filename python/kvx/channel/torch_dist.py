"""Transport over torch.distributed point-to-point sends (``transport="torch"``).

Two ranks: the receiver is rank 0 (it hosts the rendezvous at ``address``), the sender rank 1.
Frames go as a 256-byte header tensor followed by each segment of the payload in ``chunk_bytes``
pieces and its 16-byte trailer (tag 1); replies come back as 512-byte tensors (tag 2). gloo runs
on any CPU; ``backend="nccl"``, ``"hccl"`` (torch_npu) or ``"cncl"`` (torch_mlu) take the same
path with staging on ``device``.

gloo closes the connection when a wait times out, and a dead peer ends the process group, so a
stall or a lost peer breaks the channel: every request in flight fails and a new channel (a new
process group) is needed. A payload that arrives whole but fails its checks fails only its own
request, and so does one that finds no room in the receiver's ``staging_bytes`` in time (its
bytes are read and dropped, so the stream keeps its place).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from typing import Any

from . import base, wire
from .allocator import BufferPool
from .errors import (
    ChannelError,
    PeerLostError,
    RejectedError,
    StalledError,
    WireFormatError,
    fatal,
)

_FRAMES, _REPLIES = 1, 2
# Waiting for the next frame or reply has no limit (an idle channel is fine): gloo needs some
# value, and a timeout would close the connection.
_IDLE = datetime.timedelta(days=365)


def _error(exc: Exception, what: str, request_id: str | None, timeout: float) -> ChannelError:
    """A torch.distributed failure as a channel error: a timeout is a stall, anything else
    (gloo: "Connection closed by peer") a lost peer."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "Timed out" in text or "timeout" in text.lower():
        return StalledError(f"{what}: no progress within {timeout} s ({text})", request_id)
    return PeerLostError(f"{what}: the peer is gone ({text})", request_id)


class TorchTransport(base.Transport):
    """See the module docstring. Options: ``backend`` ("gloo"), ``chunk_bytes`` (64 MiB; both
    sides must agree), ``device`` ("cpu"; where staging and received payloads live),
    ``staging_bytes`` (receiver: 1 GiB for the payloads received and not landed yet, a larger
    request only alone), ``connect_timeout`` (seconds to wait for the other rank), or ``group``
    and ``peer`` to use an existing process group instead of creating one at ``address``."""

    name = "torch"
    ends_with_sender = True

    def __init__(
        self,
        role: str,
        address: str,
        *,
        timeout: float = 30.0,
        backend: str = "gloo",
        chunk_bytes: int = 64 << 20,
        device: str = "cpu",
        staging_bytes: int = 1 << 30,
        connect_timeout: float = 120.0,
        group: Any = None,
        peer: int | None = None,
    ) -> None:
        import torch
        import torch.distributed as dist

        self.role, self.address, self.chunk_bytes = role, address, int(chunk_bytes)
        self._torch, self._dist, self._device = torch, dist, torch.device(device)
        self._stall = datetime.timedelta(seconds=timeout)
        self._timeout = timeout
        self._owns_group = group is None
        self._lock = threading.Lock()
        self._buffers = BufferPool(int(staging_bytes), self.allocate)  # received payloads
        self._waiting = 0  # threads blocked in an unbounded receive (see close)
        self._ended = False
        if group is None:
            base.split_address(address)
            if dist.is_initialized():
                raise ValueError(
                    "torch.distributed is already initialized in this process: pass group= and "
                    "peer= (the other side's rank in it)"
                )
            dist.init_process_group(
                backend,
                init_method=f"tcp://{address}",
                rank=0 if role == base.RECEIVER else 1,
                world_size=2,
                timeout=datetime.timedelta(seconds=connect_timeout),
            )
            peer = 1 if role == base.RECEIVER else 0
        elif peer is None:
            raise ValueError("peer: the other side's rank in group is needed with group=")
        self._group, self._peer = group, int(peer)

    def _send(self, tensor: Any, tag: int, what: str, wait: Any = None) -> None:
        # Unnamed: the Sender names the request of a frame that failed; END and replies
        # concern the whole channel.
        try:
            work = self._dist.isend(tensor, dst=self._peer, group=self._group, tag=tag)
            work.wait(timeout=wait or self._stall)
        except RuntimeError as exc:
            raise _error(exc, what, None, self._timeout) from exc

    def _post_recv(self, tensor: Any, what: str, request_id: str | None) -> Any:
        try:
            return self._dist.irecv(tensor, src=self._peer, group=self._group, tag=_FRAMES)
        except RuntimeError as exc:
            raise _error(exc, what, request_id, self._timeout) from exc

    def _wait(self, work: Any, what: str, request_id: str | None) -> None:
        try:
            work.wait(timeout=self._stall)
        except RuntimeError as exc:
            raise _error(exc, what, request_id, self._timeout) from exc

    def _recv(
        self, tensor: Any, tag: int, what: str, request_id: str | None, wait: Any = None
    ) -> None:
        with self._lock:
            self._waiting += 1
        try:
            work = self._dist.irecv(tensor, src=self._peer, group=self._group, tag=tag)
            work.wait(timeout=wait or self._stall)
        except RuntimeError as exc:
            raise _error(exc, what, request_id, self._timeout) from exc
        finally:
            with self._lock:
                self._waiting -= 1

    def _bytes_tensor(self, data: bytes) -> Any:
        return self._torch.frombuffer(bytearray(data), dtype=self._torch.uint8).to(self._device)

    def allocate(self, nbytes: int) -> Any:
        return self._torch.empty(nbytes, dtype=self._torch.uint8, device=self._device)

    # -- sender side --------------------------------------------------------------------------
    def begin(self, header: wire.Header, header_bytes: bytes) -> None:
        self._send(self._bytes_tensor(header_bytes), _FRAMES, "sending the header")

    def write(self, offset: int, chunk: Any) -> None:
        what = f"sending payload bytes {offset}..{offset + chunk.numel()}"
        # The receiver may wait up to its timeout for room before it reads the first bytes.
        wait = datetime.timedelta(seconds=2 * self._timeout + 5) if offset == 0 else None
        self._send(chunk, _FRAMES, what, wait)

    def seal(self, trailer: bytes) -> None:
        what = "sending a segment's trailer"
        self._send(self._bytes_tensor(trailer), _FRAMES, what)

    def end(self) -> None:
        self._send(self._bytes_tensor(wire.end_header()), _FRAMES, "ending the channel")

    def next_reply(self) -> bytes:
        reply = self._torch.empty(wire.REPLY_SIZE, dtype=self._torch.uint8, device=self._device)
        self._recv(reply, _REPLIES, "waiting for the receiver's replies", None, _IDLE)
        return reply.cpu().numpy().tobytes()

    # -- receiver side ------------------------------------------------------------------------
    def next_frame(
        self, check: Callable[[bytes], wire.Header], inspect: Callable[[wire.Header], base.Segments]
    ) -> base.Frame | None:
        if self._ended:
            return None
        try:
            header = self._next_header(check)
            if header is None:
                return None
            buffer = self._buffers.take(header.payload_bytes, self._timeout)
            if buffer is not None:
                return self._receive_frame(header, buffer, inspect)
            refusal = self._refuse(header)
        except ChannelError as exc:
            raise fatal(exc) from None
        raise refusal  # its bytes were read: the stream keeps its place

    def _next_header(self, check: Callable[[bytes], wire.Header]) -> wire.Header | None:
        """The next header, checked; None (after answering GOODBYE) at the end of the channel."""
        raw = self._torch.empty(wire.HEADER_SIZE, dtype=self._torch.uint8, device=self._device)
        self._recv(raw, _FRAMES, "waiting for the next header", None, _IDLE)
        try:
            header = check(raw.cpu().numpy().tobytes())
        except WireFormatError as exc:
            # The payload's length is unknown: the stream cannot be followed any further.
            raise WireFormatError(
                f"{exc.detail}; the torch channel cannot skip the payload and stops",
                exc.request_id,
            ) from exc
        if header.flags & wire.FLAG_END:
            self._ended = True
            self.reply(wire.pack_reply("", wire.GOODBYE))
            return None
        return header

    def _receive_frame(
        self, header: wire.Header, buffer: Any, inspect: Callable[[wire.Header], base.Segments]
    ) -> base.Frame:
        payload = buffer[: header.payload_bytes]
        segments = inspect(header)
        # On failure the buffer is not given back: receives may still be posted into it (and
        # the channel is over).
        self._receive_payload(header, lambda start, end: payload[start:end], segments)
        return base.Frame(header, payload, lambda: self._buffers.give(buffer), segments.error)

    def _refuse(self, header: wire.Header) -> RejectedError:
        """Reads and drops a payload that found no room, answers FAILED; returns the error."""
        pool = self._buffers
        why = (
            f"no room for its {header.payload_bytes} bytes within {self._timeout} s: "
            f"{pool.in_use} bytes of the receiver's staging_bytes={pool.limit} are held by "
            "requests received and not landed yet (not expected yet, or landing)"
        )
        scratch = self.allocate(min(header.payload_bytes, header.segment_bytes, self.chunk_bytes))
        self._receive_payload(header, lambda start, end: scratch[: end - start], None)
        self.reply(wire.pack_reply(header.request_id, wire.FAILED, why))
        return RejectedError(why, header.request_id)

    def _receive_payload(
        self,
        header: wire.Header,
        into: Callable[[int, int], Any],
        segments: base.Segments | None,
    ) -> None:
        """Receives each segment in chunks, then its trailer; ``into(start, end)`` is where
        payload bytes ``[start, end)`` land. ``segments`` (if any) sees each segment once its
        trailer is in, while the next ones arrive."""
        rid, n = header.request_id, header.payload_bytes
        # Every receive is posted at once, so that no chunk or trailer of the sender's waits
        # for the receiver to post its receive.
        posted = []
        for index in range(header.num_segments):
            for start, end in base.chunks(*header.segment(index), self.chunk_bytes):
                what = f"receiving payload bytes {start}..{end} of {n}"
                posted.append((self._post_recv(into(start, end), what, rid), what, None))
            trailer = self._torch.empty(
                wire.TRAILER_SIZE, dtype=self._torch.uint8, device=self._device
            )
            what = f"receiving the trailer of segment {index}"
            posted.append((self._post_recv(trailer, what, rid), what, (index, trailer)))
        for work, what, sealed in posted:
            self._wait(work, what, rid)
            if sealed is not None and segments is not None:
                index, trailer = sealed
                segments(index, into(*header.segment(index)), trailer.cpu().numpy().tobytes())

    def reply(self, data: bytes) -> None:
        self._send(self._bytes_tensor(data), _REPLIES, "sending a reply")

    def close(self) -> None:
        # A thread still blocked in a receive cannot be woken: the group is then left as it is
        # (destroying it under a pending receive can hang) and goes with the process.
        with self._lock:
            idle = self._waiting == 0
        if self._owns_group and idle and self._dist.is_initialized():
            self._dist.destroy_process_group()
            self._owns_group = False


base.register("torch", TorchTransport)
