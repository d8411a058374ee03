"""Completion handles: what ``Sender.send`` and ``Receiver.expect`` return."""

from __future__ import annotations

import threading


class Handle:
    """The state of one request on one side: pending, done, or failed with an error.

    ``wait`` raises the error the transfer ended with (a :class:`kvx.channel.ChannelError`); a
    ``wait`` that times out raises :class:`TimeoutError` and leaves the transfer running.
    """

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self._event = threading.Event()
        self._error: BaseException | None = None

    def done(self) -> bool:
        """True once the request landed or failed (``wait`` then returns or raises at once)."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> None:
        """Blocks until the request is done, at most ``timeout`` seconds (None: no limit)."""
        if not self._event.wait(timeout):
            raise TimeoutError(f"request {self.request_id!r}: not done within {timeout} s")
        if self._error is not None:
            raise self._error

    def exception(self) -> BaseException | None:
        """The error the request failed with, None while pending or when it succeeded."""
        return self._error

    def _finish(self, error: BaseException | None = None) -> None:
        # The first outcome wins: a late reply cannot turn a failure into success.
        if not self._event.is_set():
            self._error = error
            self._event.set()

    def __repr__(self) -> str:
        state = "pending" if not self.done() else ("failed" if self._error else "done")
        return f"<kvx.channel.Handle {self.request_id!r} {state}>"
