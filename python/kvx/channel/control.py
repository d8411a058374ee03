"""Length-prefixed messages over a TCP socket: the control path of transports whose data path
has none (Mooncake's writes land in the peer's memory without telling it).

A message is ``[u32 length][u8 type][length bytes]``, little-endian.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

from .errors import PeerLostError, StalledError

HELLO, ALLOC, GRANT, REJECT, SEGMENT, REPLY, END = range(1, 8)
_PREFIX = struct.Struct("<IB")
MAX_BODY = 1 << 16  # every message here is small; a larger length means garbage


class Connection:
    """One control connection; ``send`` may be called from several threads."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, kind: int, body: bytes = b"") -> None:
        try:
            with self._send_lock:
                self.sock.sendall(_PREFIX.pack(len(body), kind) + body)
        except OSError as exc:
            raise PeerLostError(f"control connection lost while sending ({exc})") from exc

    def recv(self, timeout: float | None, what: str) -> tuple[int, bytes]:
        """The next message; ``timeout`` None waits without limit. Raises StalledError or
        PeerLostError (then the connection is unusable)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        length, kind = _PREFIX.unpack(self._exact(_PREFIX.size, deadline, what))
        if length > MAX_BODY:
            raise PeerLostError(f"{what}: garbage on the control connection (length {length})")
        return kind, self._exact(length, deadline, what)

    def _exact(self, n: int, deadline: float | None, what: str) -> bytes:
        data = bytearray()
        while len(data) < n:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise StalledError(f"{what}: nothing from the peer in time")
            try:
                self.sock.settimeout(left)
                piece = self.sock.recv(n - len(data))
            except TimeoutError:
                raise StalledError(f"{what}: nothing from the peer in time") from None
            except OSError as exc:
                raise PeerLostError(f"{what}: control connection lost ({exc})") from exc
            if not piece:
                raise PeerLostError(f"{what}: the peer closed the control connection")
            data += piece
        return bytes(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # already closed by the peer
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def connect(host: str, port: int, timeout: float) -> Connection:
    """Connects, retrying until ``timeout`` (the receiver may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Connection(socket.create_connection((host, port), timeout=timeout))
        except OSError as exc:
            if time.monotonic() > deadline:
                raise PeerLostError(f"cannot reach the receiver at {host}:{port} ({exc})") from exc
            time.sleep(0.05)
