"""Closes the senders and receivers a program left open when its interpreter exits.

Their background threads must not outlive the interpreter: a thread that frees a tensor during
finalization aborts the process (torch releases the GIL in its deallocator, and CPython ends a
thread that wants it back then with an unwind that C++ frames turn into ``std::terminate``).
``atexit`` runs while those (daemon) threads still run normally, so closing there is clean.
Senders close first: a receiver's ``close`` waits for its senders to end the channel, and in a
process that holds both, the sender's end is what it waits for.
"""

from __future__ import annotations

import atexit
import contextlib
import weakref
from typing import Any

_senders: weakref.WeakSet[Any] = weakref.WeakSet()
_receivers: weakref.WeakSet[Any] = weakref.WeakSet()


def close_sender_at_exit(sender: Any) -> None:
    """``sender.close(its timeout)`` runs at interpreter exit unless it was closed before."""
    _senders.add(sender)


def close_receiver_at_exit(receiver: Any) -> None:
    """As :func:`close_sender_at_exit`, after every sender of the process."""
    _receivers.add(receiver)


@atexit.register
def _close_open_endpoints() -> None:
    for endpoints in (_senders, _receivers):
        for endpoint in list(endpoints):
            # One that fails to close must not keep the others open.
            with contextlib.suppress(Exception):
                endpoint.close(endpoint.timeout)
