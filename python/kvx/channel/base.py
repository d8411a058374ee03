"""The interface every transport implements, and the registry that picks one by name.

A transport moves *frames* one way (a 256-byte header, then the payload of the length the header
gives, segment by segment, each segment followed by its 16-byte trailer) and 512-byte *replies*
the other way. It knows nothing of KV caches: the sender and receiver in ``sender.py`` /
``receiver.py`` build and check what goes through it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from .allocator import BufferPool
from .errors import ChannelError
from .wire import Header

SENDER = "sender"
RECEIVER = "receiver"


class Segments(Protocol):
    """What a receiver does with each segment of a payload as it arrives (in order), while the
    next one is arriving: ``payload.SegmentCheck`` checks it against its trailer."""

    error: ChannelError | None  # the first segment that failed, None while all passed

    def __call__(self, index: int, data: Any, trailer: bytes) -> None: ...


@dataclass
class Frame:
    """One complete transfer as the receiver got it. ``payload`` (a 1-D uint8 torch tensor of
    ``header.payload_bytes``) stays valid until ``release()``. ``error``: why its segments
    failed their checks (then the payload must not be used), None if they passed."""

    header: Header
    payload: Any
    release: Callable[[], None]
    error: ChannelError | None = None


class Transport(abc.ABC):
    """One end of a point-to-point link between a sender and a receiver process.

    The receiver side listens at an address and the sender side connects to it. Methods of one
    side are called from that side only: ``begin``/``write``/``seal`` from one sender thread,
    ``next_reply`` from another; ``next_frame`` from one receiver thread, ``reply`` from it or
    another.
    Every blocking call either returns, or raises a :class:`ChannelError` within the transport's
    timeout once a transfer has started (waiting for the *next* frame or reply is unbounded:
    an idle link is not an error). The sender names the request in what ``begin``, ``write`` and
    ``seal`` raise, so those need not know it.
    """

    name: ClassVar[str]
    # True where the link lasts as long as one sender (torch.distributed): the receiver's close
    # then waits for the sender to end it.
    ends_with_sender: ClassVar[bool] = False
    role: str
    address: str
    chunk_bytes: int

    # -- sender side --------------------------------------------------------------------------
    def staging(self, nbytes: int) -> Any:
        """A 1-D uint8 torch tensor of ``nbytes`` that ``write`` can send from, until
        :meth:`release_staging` (transports that need registered memory hand out pieces of it).
        The sender holds at most two at a time. The default keeps released buffers for the
        next requests: first touching hundreds of MiB of fresh pages costs as much as sending
        them."""
        return self._staging_pool().take(nbytes, 0)[:nbytes]

    def allocate(self, nbytes: int) -> Any:
        """A new 1-D uint8 tensor for staging or receiving (host memory by default)."""
        import torch

        return torch.empty(nbytes, dtype=torch.uint8)

    def release_staging(self, buffer: Any) -> None:
        """Gives back a buffer from :meth:`staging` once its payload has been written."""
        self._staging_pool().give(buffer._base if buffer._base is not None else buffer)

    def _staging_pool(self) -> BufferPool:
        # Made on first use, so that transports need not call a base __init__; no budget: the
        # sender holds two buffers at most, and two spares are kept.
        pool = self.__dict__.get("_staging")
        if pool is None:
            pool = self.__dict__.setdefault("_staging", BufferPool(1 << 62, self.allocate))
        return pool

    @abc.abstractmethod
    def begin(self, header: Header, header_bytes: bytes) -> None:
        """Announces a frame. Raises :class:`RejectedError` if the receiver refuses it."""

    @abc.abstractmethod
    def write(self, offset: int, chunk: Any) -> None:
        """Sends ``chunk`` (uint8, from :meth:`staging`) as payload bytes ``offset...``; chunks
        come in order, as :func:`chunks` cuts each segment."""

    @abc.abstractmethod
    def seal(self, trailer: bytes) -> None:
        """Sends the trailer of the segment whose last chunk was just written."""

    @abc.abstractmethod
    def end(self) -> None:
        """Tells the receiver no more frames come (it answers with a GOODBYE reply)."""

    @abc.abstractmethod
    def next_reply(self) -> bytes:
        """The next reply's 512 bytes; blocks while there is none."""

    def send_frame(
        self, header: Header, header_bytes: bytes, payload: Any, trailer: Callable[[int], bytes]
    ) -> None:
        """``begin``, then for each segment: ``trailer(index)`` (which may wait until the sender
        has gathered and checksummed that segment), its bytes in chunks, ``seal``."""
        self.begin(header, header_bytes)
        for index in range(header.num_segments):
            sealed = trailer(index)
            for start, end in chunks(*header.segment(index), self.chunk_bytes):
                self.write(start, payload[start:end])
            self.seal(sealed)

    # -- receiver side ------------------------------------------------------------------------
    @abc.abstractmethod
    def next_frame(
        self, check: Callable[[bytes], Header], inspect: Callable[[Header], Segments]
    ) -> Frame | None:
        """Blocks for the next frame; ``check`` parses (and may refuse, raising) its header before
        any payload is accepted, ``inspect(header)`` gives what to call with each segment and its
        trailer as they arrive. None: no more frames come. Raises a :class:`ChannelError`
        naming the request it concerns, marked ``fatal`` when the transport cannot go on."""

    @abc.abstractmethod
    def reply(self, data: bytes) -> None:
        """Sends one reply to the sender."""

    def drain(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds for the senders connected now to end (receiver side,
        before ``close``)."""
        return None

    # -- both ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None:
        """Releases the link; safe to call more than once."""


_TRANSPORTS: dict[str, Callable[..., Transport]] = {}
_BUILTIN = ("torch_dist", "mooncake")


def register(name: str, factory: Callable[..., Transport]) -> None:
    """Makes ``factory(role, address, timeout=..., **options)`` available as ``transport=name``."""
    _TRANSPORTS[name] = factory


def create(name: str, role: str, address: str, **options: Any) -> Transport:
    """The transport ``name`` for ``role`` (SENDER or RECEIVER) at ``address``."""
    import importlib

    for module in _BUILTIN:  # each registers itself when imported
        importlib.import_module(f".{module}", __package__)

    try:
        factory = _TRANSPORTS[name]
    except KeyError:
        raise ValueError(
            f"transport: expected one of {sorted(_TRANSPORTS)}, got {name!r}"
        ) from None
    return factory(role, address, **options)


def chunks(start: int, end: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """Bytes ``[start, end)`` of a payload (one segment) as the transport moves them."""
    return [(at, min(at + chunk_bytes, end)) for at in range(start, end, chunk_bytes)]


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address: expected 'host:port', got {address!r}")
    return host.strip("[]"), int(port)
