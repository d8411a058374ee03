"""Between a paged cache and a payload: gather (sender), check and land (receiver), with
kvx.transfer.

A raw payload holds ``[layers, kv, tokens, heads, head_size]`` elements, row-major. kvx.transfer
fills or reads it through a ``[kv, layers, tokens, heads, head_size]`` view (its ``KV_2LTD``
format with the heads split), so any paged layout on either side maps to the same bytes. Layers
are contiguous in it: the sender gathers a few layers at a time, so that the first segments can
go while it gathers the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import checksum, codec, layouts
from .._errors import KvxError
from ..transfer import PagedCache, _slot_mapping, load, resolve_paged, store
from . import wire
from .errors import ChannelError, RejectedError, WireFormatError
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

    @property
    def layer_bytes(self) -> int:
        """Bytes of one layer's K and V in the payload."""
        return self.raw_bytes // self.cache.num_layers

    def layers(self, first: int, count: int) -> Any:
        """The paged cache restricted to layers ``[first, first + count)`` (same container,
        views of the same tensors)."""
        layout, paged, end = self.cache.layout, self.paged, first + count
        if layout.container == layouts.SINGLE:
            axis = layout.axes.index("layer")
            return paged[(slice(None),) * axis + (slice(first, end),)]
        if layout.container == layouts.KV_LISTS:
            return (paged[0][first:end], paged[1][first:end])
        return paged[first:end]  # a list (or stacked tensor) per layer, or of (K, V) pairs


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


def gather(side: Side, buffer: Any, first: int = 0, count: int | None = None) -> Any:
    """Copies layers ``[first, first + count)`` (default: all) of the request's KV from the paged
    cache into their place in ``buffer`` (see :func:`dense_view`); tokens whose slot is negative
    are sent as zeros. Returns the view of the whole buffer."""
    import torch

    dense = dense_view(side, buffer)
    count = side.cache.num_layers - first if count is None else count
    part = dense[:, first : first + count]
    whole = count == side.cache.num_layers
    store(side.paged if whole else side.layers(first, count), part, side.slots, layout=side.layout)
    skipped = torch.as_tensor(side.slots) < 0
    if bool(skipped.any()):
        part[:, :, skipped] = 0
    return dense


def compress(dense: Any) -> bytes:
    """The kvx.codec container of ``dense`` ``[kv, L, T, H, D]`` (lossy: CacheGen quantization)."""
    return codec.encode(dense)


def crc32(buffer: Any) -> int:
    """zlib's CRC-32 of a 1-D uint8 tensor's bytes (a device tensor via host memory)."""
    return checksum.crc32(buffer if buffer.device.type == "cpu" else buffer.cpu())


class SegmentCheck:
    """Checks a payload's segments against their trailers as they arrive (call it with each
    segment's index, bytes and trailer, in order). ``error`` is the first failure; the segments
    after it are not checksummed, since the request has failed."""

    def __init__(self, header: Header) -> None:
        self.header = header
        self.error: ChannelError | None = None

    def __call__(self, index: int, data: Any, trailer: bytes) -> None:
        if self.error is not None:
            return
        h, rid = self.header, self.header.request_id
        try:
            sealed = wire.parse_trailer(trailer, index, rid)
            start, end = h.segment(index)
            where = f"segment {index} of {h.num_segments} (payload bytes {start}..{end})"
            if sealed.abandoned:
                raise ChannelError(f"the sender could not gather {where} and abandoned it", rid)
            if crc32(data) != sealed.crc:
                raise WireFormatError(f"payload CRC-32 mismatch in {where} (damaged)", rid)
        except ChannelError as exc:
            self.error = exc


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
