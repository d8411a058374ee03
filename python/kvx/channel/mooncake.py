"""Transport over the Mooncake Transfer Engine (``transport="mooncake"``).

Each side runs a ``mooncake.engine.TransferEngine`` with P2P handshake metadata (no metadata
server) and registers one staging pool once. Payloads go by one-sided writes from the sender's
pool into a range of the receiver's pool; a TCP control connection (``control.py``) carries the
rest: the receiver's pool address (HELLO), each header (ALLOC), the range it gets (GRANT) or why
not (REJECT), each segment's trailer once its writes are done (SEGMENT: the receiver checks that
segment while the next is written), and the receiver's replies.

``protocol`` is Mooncake's: ``"tcp"`` works on any machine (the wheel still needs libibverbs to
load), ``"rdma"`` needs RDMA NICs. A lost or stalled sender fails only its own request; the
receiver keeps serving other connections, and the range the failed request held is never
reused (a write still on its way could land in it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from . import base, control, wire
from .allocator import RangeAllocator
from .errors import (
    ChannelError,
    PeerLostError,
    RejectedError,
    StalledError,
    WireFormatError,
    for_request,
)

_HELLO = struct.Struct("<QQ")  # pool address, pool size; then the engine's session name
_GRANT = struct.Struct("<Q")  # offset in the receiver's pool
_POLL = 0.0002  # seconds between looks at a write in progress
_NO_BATCH = (0, -1, (1 << 64) - 1)  # what transfer_submit_write returns when it cannot start


def load_engine() -> Any:
    """``mooncake.engine.TransferEngine``, or an ImportError that says what is missing."""
    # Mooncake logs each connection at INFO level (its own MC_LOG_LEVEL variable; glog's are not
    # read): keep warnings and errors unless the user chose.
    os.environ.setdefault("MC_LOG_LEVEL", "WARNING")
    try:
        from mooncake.engine import TransferEngine
    except ImportError as exc:
        raise ImportError(
            "the mooncake transport needs the Mooncake Transfer Engine: pip install "
            "mooncake-transfer-engine-non-cuda (-npu on Ascend hosts), and on Debian/Ubuntu "
            f"apt-get install libibverbs1 ({exc})"
        ) from exc
    return TransferEngine


class MooncakeTransport(base.Transport):
    """See the module docstring. Options: ``protocol`` ("tcp"), ``staging_bytes`` (size of each
    side's registered pool, 1 GiB; a request larger than the receiver's is refused, the sender's
    grows as needed), ``chunk_bytes`` (64 MiB per write), ``connect_timeout`` (seconds)."""

    name = "mooncake"

    def __init__(
        self,
        role: str,
        address: str,
        *,
        timeout: float = 30.0,
        protocol: str = "tcp",
        staging_bytes: int = 1 << 30,
        chunk_bytes: int = 64 << 20,
        connect_timeout: float = 60.0,
    ) -> None:
        import torch

        self._torch = torch
        self.role, self.chunk_bytes, self._timeout = role, int(chunk_bytes), timeout
        self.address = address
        host, port = base.split_address(address)
        self._engine = load_engine()()
        if self._engine.initialize(host, "P2PHANDSHAKE", protocol, "") != 0:
            raise ChannelError(f"Mooncake TransferEngine.initialize({host!r}, {protocol!r}) failed")
        self._session = f"{host}:{self._engine.get_rpc_port()}"
        self._pool: Any = None
        self._closed = False
        self._threads: list[threading.Thread] = []  # joined by close
        if role == base.RECEIVER:
            self._start_receiver(host, port, staging_bytes)
        else:
            self._start_sender(host, port, staging_bytes, connect_timeout)

    def _start(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _register(self, nbytes: int) -> None:
        if self._pool is not None:
            self._engine.unregister_memory(self._pool.data_ptr())
        self._pool = self._torch.empty(nbytes, dtype=self._torch.uint8)
        if self._engine.register_memory(self._pool.data_ptr(), nbytes) != 0:
            raise ChannelError(f"Mooncake could not register a staging pool of {nbytes} bytes")

    # -- sender side --------------------------------------------------------------------------
    def _start_sender(self, host: str, port: int, staging_bytes: int, timeout: float) -> None:
        self._register(staging_bytes)
        self._pieces = RangeAllocator(staging_bytes)
        self._staged = threading.Condition()
        self._out = 0  # pieces handed out
        self._conn = control.connect(host, port, timeout)
        kind, body = self._conn.recv(timeout, "waiting for the receiver's HELLO")
        if kind != control.HELLO or len(body) <= _HELLO.size:
            raise WireFormatError("the receiver's first message is not a HELLO")
        self._peer_pool, self._peer_size = _HELLO.unpack_from(body)
        self._peer = body[_HELLO.size :].decode("utf-8")
        self._grants: queue.Queue[Any] = queue.Queue()
        self._replies: queue.Queue[Any] = queue.Queue()
        self._start(self._read_sender, "kvx-mooncake-ctl")

    def _read_sender(self) -> None:
        while True:
            try:
                kind, body = self._conn.recv(None, "waiting for the receiver")
            except ChannelError as exc:
                self._grants.put(exc)
                self._replies.put(exc)
                return
            (self._replies if kind == control.REPLY else self._grants).put((kind, body))

    def staging(self, nbytes: int) -> Any:
        # Pieces of the one registered pool; it is re-registered larger only while no piece is
        # out (the sender holds two at most: room for two of the largest request).
        with self._staged:
            while True:
                if nbytes <= self._pool.numel():
                    offset = self._pieces.alloc(nbytes, 0)
                    if offset is not None:
                        self._out += 1
                        return self._pool[offset : offset + nbytes]
                if self._out == 0:
                    piece = -(-nbytes // 4096) * 4096  # as the allocator rounds
                    self._register(max(2 * piece, self._pool.numel()))
                    self._pieces = RangeAllocator(self._pool.numel())
                    continue
                self._staged.wait()

    def release_staging(self, buffer: Any) -> None:
        with self._staged:
            self._pieces.free(buffer.data_ptr() - self._pool.data_ptr(), buffer.numel())
            self._out -= 1
            self._staged.notify_all()

    def begin(self, header: wire.Header, header_bytes: bytes) -> None:
        rid = header.request_id
        self._conn.send(control.ALLOC, header_bytes)
        try:
            # The receiver may wait up to its timeout for room in its pool.
            answer = self._grants.get(timeout=2 * self._timeout + 5)
        except queue.Empty:
            raise PeerLostError("the receiver did not answer the header in time", rid) from None
        if isinstance(answer, ChannelError):
            self._grants.put(answer)
            raise type(answer)(answer.detail, rid)
        kind, body = answer
        if kind == control.REJECT:
            raise RejectedError(f"the receiver refused it: {body.decode('utf-8', 'replace')}", rid)
        if kind != control.GRANT or len(body) != _GRANT.size:
            raise WireFormatError(f"unexpected control message {kind}", rid)
        (self._offset,) = _GRANT.unpack(body)

    def write(self, offset: int, chunk: Any) -> None:
        # Not transfer_sync_write: it polls for completion without pause, which takes a core
        # from the gathering and checksumming that go on meanwhile.
        n = chunk.numel()
        what = f"Mooncake write of payload bytes {offset}..{offset + n} to {self._peer}"
        batch = self._engine.transfer_submit_write(
            self._peer, chunk.data_ptr(), self._peer_pool + self._offset + offset, n
        )
        if batch in _NO_BATCH:
            raise PeerLostError(f"{what} could not start")
        deadline = time.monotonic() + self._timeout + n / (1 << 30)  # and 1 s per GiB
        while (status := self._engine.transfer_check_status(batch)) == 0:
            if time.monotonic() > deadline:
                raise StalledError(f"{what}: not done within {self._timeout} s")
            time.sleep(_POLL)
        if status != 1:
            raise PeerLostError(f"{what} failed (status {status})")

    def seal(self, trailer: bytes) -> None:
        self._conn.send(control.SEGMENT, trailer)

    def end(self) -> None:
        self._conn.send(control.END)

    def next_reply(self) -> bytes:
        answer = self._replies.get()
        if isinstance(answer, ChannelError):
            self._replies.put(answer)
            raise answer
        return answer[1]

    # -- receiver side ------------------------------------------------------------------------
    def _start_receiver(self, host: str, port: int, staging_bytes: int) -> None:
        self._register(staging_bytes)
        self._allocator = RangeAllocator(staging_bytes)
        self._listener = socket.create_server((host, port))
        self.address = f"{host}:{self._listener.getsockname()[1]}"
        self._frames: queue.Queue[Any] = queue.Queue()
        self._owners: dict[str, control.Connection] = {}  # request id -> who sent it
        self._lock = threading.Lock()
        self._senders = 0  # connections being served
        self._senders_left = threading.Condition(self._lock)
        self._conns: set[control.Connection] = set()  # being served
        self._check: Callable[[bytes], wire.Header] | None = None

    def next_frame(
        self, check: Callable[[bytes], wire.Header], inspect: Callable[[wire.Header], base.Segments]
    ) -> base.Frame | None:
        if self._check is None:
            self._check, self._inspect = check, inspect
            self._start(self._accept, "kvx-mooncake-accept")
        item = self._frames.get()
        if isinstance(item, Exception):
            raise item
        return item

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                self._frames.put(None)  # the listener was closed
                return
            conn = control.Connection(sock)
            hello = _HELLO.pack(self._pool.data_ptr(), self._pool.numel())
            try:
                conn.send(control.HELLO, hello + self._session.encode("utf-8"))
            except ChannelError:
                conn.close()
                continue
            self._start(self._serve, "kvx-mooncake-serve", conn)

    def _serve(self, conn: control.Connection) -> None:
        """One sender's frames, one after another, until it ends or fails."""
        with self._lock:
            self._senders += 1
            self._conns.add(conn)
        try:
            while self._serve_one(conn):
                pass
        finally:
            conn.close()
            with self._lock:
                self._senders -= 1
                self._conns.discard(conn)
                self._senders_left.notify_all()

    def drain(self, timeout: float) -> None:
        with self._lock:
            self._senders_left.wait_for(lambda: self._senders == 0, timeout)

    def _serve_one(self, conn: control.Connection) -> bool:
        try:
            kind, body = conn.recv(None, "waiting for the next header")
        except ChannelError:
            return False  # a sender that leaves between requests loses nothing
        if kind == control.END:
            conn.send(control.REPLY, wire.pack_reply("", wire.GOODBYE))
            return False
        if kind != control.ALLOC:
            self._frames.put(WireFormatError(f"unexpected control message {kind}"))
            return False
        try:
            header = self._check(body)
        except WireFormatError as exc:
            conn.send(control.REJECT, str(exc).encode("utf-8"))
            self._frames.put(exc)
            return True
        rid, n = header.request_id, header.payload_bytes
        offset = self._allocator.alloc(n, self._timeout) if n <= self._pool.numel() else None
        if offset is None:
            why = (
                f"its payload of {n} bytes does not fit the receiver's staging pool of "
                f"{self._pool.numel()} bytes"
                if n > self._pool.numel()
                else f"no room in the receiver's staging pool within {self._timeout} s"
            )
            conn.send(control.REJECT, why.encode("utf-8"))
            self._frames.put(RejectedError(why, rid))
            return True
        with self._lock:
            self._owners[rid] = conn
        conn.send(control.GRANT, _GRANT.pack(offset))
        region = self._pool[offset : offset + n]
        segments = self._inspect(header)
        try:
            self._receive_segments(conn, header, region, segments)
        except ChannelError as exc:
            # The range stays taken: a write already on its way could still land in it.
            self._frames.put(for_request(exc, rid))
            return False
        release = functools.partial(self._allocator.free, offset, n)
        self._frames.put(base.Frame(header, region, release, segments.error))
        return True

    def _receive_segments(
        self, conn: control.Connection, header: wire.Header, region: Any, segments: base.Segments
    ) -> None:
        """Waits for each segment's trailer (sent once its writes are done) and hands the
        segment to ``segments`` while the sender writes the next."""
        for index in range(header.num_segments):
            what = f"waiting for segment {index} of {header.num_segments} (a stalled sender?)"
            kind, body = conn.recv(self._timeout, what)
            if kind != control.SEGMENT:
                raise WireFormatError(f"expected segment {index}'s trailer, got message {kind}")
            start, end = header.segment(index)
            segments(index, region[start:end], body)

    def reply(self, data: bytes) -> None:
        rid = wire.parse_reply(data).request_id
        with self._lock:
            conn = self._owners.pop(rid, None)
        if conn is not None:
            conn.send(control.REPLY, data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.role == base.RECEIVER:
            # shutdown wakes the thread in accept() (close alone does not)
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._frames.put(None)
            with self._lock:
                conns = list(self._conns)
            for conn in conns:  # senders still connected: their threads stop
                conn.close()
        else:
            self._conn.close()
        # Our threads hold this object: one that ended during interpreter exit would free its
        # tensors then, and torch's deallocator (releasing the GIL) aborts the process there.
        for thread in self._threads:
            thread.join(self._timeout)
        # The pool stays registered: the engine may still be reading or writing it, and both go
        # with the process.


base.register("mooncake", MooncakeTransport)
