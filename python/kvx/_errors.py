"""The kvx exception hierarchy: one base class, each also the matching builtin exception."""

from __future__ import annotations


class KvxError(Exception):
    """Base class of every error libkvx raises. ``status`` is the C status code."""

    status: int = -8

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidArgumentError(KvxError, ValueError):
    """An argument is out of its documented range (shape, dtype, device, slot...)."""

    status = -1


class UnsupportedError(KvxError, NotImplementedError):
    """The arguments are valid but the selected backend cannot perform the operation."""

    status = -2


class NotAvailableError(KvxError, RuntimeError):
    """The backend is not compiled in, or its runtime or device is missing."""

    status = -3


class DeviceError(KvxError, RuntimeError):
    """The device runtime reported an error."""

    status = -4


class OutOfMemoryError(KvxError, MemoryError):
    """An allocation inside libkvx failed."""

    status = -5


class CorruptInputError(KvxError, ValueError):
    """Encoded data failed a structural or checksum test."""

    status = -6


class BufferTooSmallError(KvxError, ValueError):
    """An output buffer cannot hold the result."""

    status = -7


class InternalError(KvxError, RuntimeError):
    """A bug in libkvx; please report it with the message."""

    status = -8


ERROR_BY_STATUS: dict[int, type[KvxError]] = {
    cls.status: cls
    for cls in (
        InvalidArgumentError,
        UnsupportedError,
        NotAvailableError,
        DeviceError,
        OutOfMemoryError,
        CorruptInputError,
        BufferTooSmallError,
        InternalError,
    )
}
