"""Moving a request's KV cache between processes (and machines) over existing transfer engines.

A :class:`Sender` gathers the request from its engine's paged cache (any kvx layout) into a
staging buffer with ``kvx.transfer``, optionally compresses it with ``kvx.codec`` (lossy), and
sends it with a 256-byte header (``wire.py``) over a transport chosen by name: ``"torch"``
(torch.distributed point-to-point: gloo, NCCL, HCCL, CNCL) or ``"mooncake"`` (Mooncake
Transfer Engine). A :class:`Receiver` lands each request in its own paged cache (its own layout
and block size) only after the whole payload arrived and passed its checks. Both return handles
(``wait(timeout)``, ``done()``). docs/channel.md has the details.
"""

from __future__ import annotations

from .base import Frame, Transport, register
from .errors import (
    ChannelClosedError,
    ChannelError,
    PeerLostError,
    RejectedError,
    StalledError,
    WireFormatError,
)
from .handles import Handle
from .receiver import Receiver
from .sender import Sender

__all__ = [
    "ChannelClosedError",
    "ChannelError",
    "Frame",
    "Handle",
    "PeerLostError",
    "Receiver",
    "RejectedError",
    "Sender",
    "StalledError",
    "Transport",
    "WireFormatError",
    "register",
]
