"""Between a paged cache and a payload: gather (sender), land (receiver), both with kvx.transfer.

A raw payload holds ``[layers, kv, tokens, heads, head_size]`` elements, row-major. kvx.transfer
fills or reads it through a ``[kv, layers, tokens, heads, head_size]`` view (its ``KV_2LTD``
format with the heads split), so any paged layout on either side maps to the same bytes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import codec
from .._errors import KvxError
from ..transfer import PagedCache, _slot_mapping, load, resolve_paged, store
from .errors import RejectedError, WireFormatError
from .wire import Header


@dataclass(frozen=True)
class Side:
    """One side's paged cache, layout and slot mapping, checked."""

    paged: Any
    layout: str
    cache: PagedCache
    slots: Any  # int64 [T], torch tensor or numpy array
    torch_dtype: Any

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``[layers, kv, tokens, heads, head_size]`` of the request."""
        c = self.cache
        return (c.num_layers, c.num_kv, len(self.slots), c.num_heads, c.head_size)

    @property
    def itemsize(self) -> int:
        return self.cache.infos[0].itemsize

    @property
    def raw_bytes(self) -> int:
        return int(np.prod(self.shape)) * self.itemsize


class Scratch:
    """One reusable host buffer for a single thread's temporary copies (the compressed path's
    gathered or decoded KV): fresh pages cost about as much to touch as the copy itself."""

    def __init__(self) -> None:
        self._buffer: Any = None

    def get(self, nbytes: int) -> Any:
        """A 1-D uint8 tensor of ``nbytes``, valid until the next call."""
        import torch

        if self._buffer is None or self._buffer.numel() < nbytes:
            self._buffer = torch.empty(nbytes, dtype=torch.uint8)
        return self._buffer[:nbytes]


def _torch_dtype(obj: Any) -> Any:
    import torch

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.empty(0, dtype=obj.dtype)).dtype
    return obj.dtype


def resolve(paged: Any, slot_mapping: Any, layout: str) -> Side:
    """Checks the cache against ``layout`` and the slot mapping against the cache (raising
    :class:`kvx.InvalidArgumentError` now, in the caller's thread, rather than later)."""
    cache = resolve_paged(paged, layout)
    _slot_mapping(slot_mapping, cache.device)
    if len(slot_mapping) == 0:
        raise ValueError("slot_mapping: a request moves at least one token")
    return Side(paged, layout, cache, slot_mapping, _torch_dtype(cache.infos[0].obj))


def dense_view(side: Side, buffer: Any) -> Any:
    """``buffer`` (1-D uint8 torch tensor of ``side.raw_bytes``) as the ``[kv, L, T, H, D]``
    view of its ``[L, kv, T, H, D]`` elements."""
    return buffer.view(side.torch_dtype).view(side.shape).permute(1, 0, 2, 3, 4)


def gather(side: Side, buffer: Any) -> Any:
    """Copies the request's KV from the paged cache into ``buffer`` (see :func:`dense_view`);
    tokens whose slot is negative are sent as zeros. Returns the view."""
    import torch

    dense = dense_view(side, buffer)
    store(side.paged, dense, side.slots, layout=side.layout)
    skipped = torch.as_tensor(side.slots) < 0
    if bool(skipped.any()):
        dense[:, :, skipped] = 0
    return dense


def compress(dense: Any) -> bytes:
    """The kvx.codec container of ``dense`` ``[kv, L, T, H, D]`` (lossy: CacheGen quantization)."""
    return codec.encode(dense)


def crc32(buffer: Any) -> int:
    """zlib's CRC-32 of a 1-D uint8 tensor's bytes (a device tensor via host memory)."""
    return zlib.crc32((buffer if buffer.device.type == "cpu" else buffer.cpu()).numpy())


def fill(buffer: Any, blob: bytes) -> None:
    """Copies ``blob`` into ``buffer`` (a 1-D uint8 tensor of its length)."""
    data = np.frombuffer(blob, dtype=np.uint8)
    if buffer.device.type == "cpu":
        buffer.numpy()[:] = data
    else:
        import torch

        buffer.copy_(torch.from_numpy(data.copy()))


def check_matches(side: Side, header: Header) -> None:
    """Raises :class:`RejectedError` when the request in ``header`` cannot land in ``side``."""
    rid = header.request_id
    if header.dtype != side.cache.dtype or header.itemsize != side.itemsize:
        raise RejectedError(
            f"dtype code {header.dtype} ({header.itemsize}-byte elements) sent, the receiver's "
            f"cache holds code {side.cache.dtype} ({side.itemsize}-byte elements)",
            rid,
        )
    if header.shape != side.shape:
        raise RejectedError(
            f"shape [layers, kv, tokens, heads, head_size] {list(header.shape)} sent, the "
            f"receiver expects {list(side.shape)} (its cache, layout {side.layout}, and "
            "len(slot_mapping))",
            rid,
        )


def land(side: Side, header: Header, payload: Any, scratch: Scratch) -> None:
    """Writes a checked payload (1-D uint8 torch tensor) into the receiver's paged cache: raw
    elements as they are, a compressed payload after decoding all of it (into ``scratch``).
    Nothing is written if decoding fails."""
    check_matches(side, header)
    if header.compressed:
        dense = dense_view(side, scratch.get(side.raw_bytes))
        try:
            codec.decode(payload, out=dense, max_bytes=side.raw_bytes)
        except (KvxError, ValueError) as exc:
            raise WireFormatError(
                f"compressed payload does not decode: {exc}", header.request_id
            ) from exc
    else:
        dense = dense_view(side, payload)
    load(side.paged, dense, side.slots, layout=side.layout)
