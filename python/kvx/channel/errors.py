"""The channel's errors: each names the request (when known) and what went wrong."""

from __future__ import annotations

from .._errors import KvxError


class ChannelError(KvxError, RuntimeError):
    """A transfer failed. ``request_id`` is the request it concerns (None: the whole channel).
    ``fatal``: raised by a transport that cannot go on (the peer is gone, or the byte stream lost
    its place), so every request in flight fails with it."""

    fatal = False

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message if request_id is None else f"request {request_id!r}: {message}")
        self.request_id = request_id
        self.detail = message  # without the request's name


class WireFormatError(ChannelError, ValueError):
    """Bytes from the peer are not a valid transfer: bad magic, version, checksum or fields."""


class PeerLostError(ChannelError, ConnectionError):
    """The peer closed the connection or died before the transfer was complete."""


class StalledError(ChannelError, TimeoutError):
    """The peer stopped sending in the middle of a transfer for longer than the channel's
    timeout."""


class RejectedError(ChannelError):
    """The receiver refused or could not land the request (its message says why)."""


class ChannelClosedError(ChannelError):
    """The channel was closed (or broken by an earlier error) before this request finished."""


def for_request(error: ChannelError, request_id: str) -> ChannelError:
    """``error`` as seen by ``request_id``: the same kind, naming that request (a channel-wide
    failure fails every request in flight, each with its own message)."""
    if error.request_id == request_id:
        return error
    copy = type(error)(str(error), request_id)
    copy.fatal = error.fatal
    return copy


def fatal(error: ChannelError) -> ChannelError:
    """``error``, marked as the end of the transport."""
    error.fatal = True
    return error
