"""LMCache's raw copies on libkvx's batched copy (:func:`kvx.copy_batch`)."""

from __future__ import annotations

from typing import Any

import torch

from .. import memory
from .._errors import InvalidArgumentError
from . import _active


def batched_memcpy(src_ptrs: list[int], dst_ptrs: list[int], sizes: list[int]) -> None:
    """Copies ``sizes[i]`` bytes from host address ``src_ptrs[i]`` to ``dst_ptrs[i]``, on
    libkvx's threads. Zero sizes are skipped; unlike LMCache's one-by-one ``memmove``, ranges
    that overlap (a destination with any source or other destination) raise
    :class:`kvx.InvalidArgumentError`, copying nothing."""
    if not len(src_ptrs) == len(dst_ptrs) == len(sizes):
        raise InvalidArgumentError(
            "sizes: batched_memcpy expects equally sized src_ptrs, dst_ptrs and sizes, got "
            f"{len(src_ptrs)}, {len(dst_ptrs)} and {len(sizes)}"
        )
    memory.copy_batch(src_ptrs, dst_ptrs, sizes)


def _pieces(nbytes: int, host_offset: int, alignment: int) -> list[tuple[int, int]]:
    """(offset, bytes) pieces of a copy that never cross a multiple of ``alignment`` of the host
    buffer (LMCache registers host memory in such units; a device copy may not span two)."""
    pieces, offset = [], 0
    while offset < nbytes:
        end = min(((offset + host_offset) // alignment + 1) * alignment - host_offset, nbytes)
        pieces.append((offset, end - offset))
        offset = end
    return pieces


def _tensor_bytes(dest: torch.Tensor, src: torch.Tensor, nbytes: int) -> tuple[int, int, Any]:
    """Addresses and device of a tensor-mode copy, after LMCache's checks."""
    if not (isinstance(dest, torch.Tensor) and isinstance(src, torch.Tensor)):
        raise TypeError(
            "Mixed types are not allowed: dest and src must both be torch.Tensor "
            "if either of them is"
        )
    if nbytes % dest.element_size():
        raise InvalidArgumentError(
            f"nbytes: expected a multiple of dest's element size ({dest.element_size()}), "
            f"got {nbytes}"
        )
    for name, t in (("dest", dest), ("src", src)):
        if not t.is_contiguous() or t.numel() * t.element_size() < nbytes:
            raise InvalidArgumentError(
                f"{name}: expected a contiguous tensor of at least nbytes ({nbytes}) bytes, got "
                f"shape {tuple(t.shape)} {t.dtype}"
                + ("" if t.is_contiguous() else " (not contiguous)")
            )
    device = dest.device if dest.device.type != "cpu" else src.device
    return dest.data_ptr(), src.data_ptr(), None if device.type == "cpu" else device


def lmcache_memcpy_async(
    dest: int | torch.Tensor,
    src: int | torch.Tensor,
    nbytes: int,
    direction: Any,
    host_buffer_offset: int,
    host_buffer_alignments: int,
) -> None:
    """Copies ``nbytes`` between host and device memory, queued on the device's current stream.

    Args:
        dest, src: both addresses (ints) or both tensors (their first ``nbytes`` bytes; they must
            be contiguous). Addresses are on the active LMCache device and in host memory.
        direction: LMCache's ``TransferDirection``: H2D (src on the host) or D2H.
        host_buffer_offset: where the copy starts within the host buffer LMCache registered.
        host_buffer_alignments: a power of two; no piece of the copy crosses a multiple of it
            of the host buffer.
    """
    if host_buffer_alignments <= 0 or host_buffer_alignments & (host_buffer_alignments - 1):
        raise InvalidArgumentError(
            f"host_buffer_alignments: expected a power of two, got {host_buffer_alignments}"
        )
    if int(direction) not in (0, 1):
        raise InvalidArgumentError(f"direction: expected H2D (0) or D2H (1), got {direction!r}")
    if isinstance(dest, torch.Tensor) or isinstance(src, torch.Tensor):
        dest_ptr, src_ptr, device = _tensor_bytes(dest, src, nbytes)
    elif isinstance(dest, int) and isinstance(src, int):
        dest_ptr, src_ptr, device = dest, src, _active.device()
    else:
        raise TypeError("dest and src must be both int (pointer mode) or both torch.Tensor")
    pieces = _pieces(nbytes, host_buffer_offset, host_buffer_alignments)
    memory.copy_batch(
        [src_ptr + offset for offset, _ in pieces],
        [dest_ptr + offset for offset, _ in pieces],
        [size for _, size in pieces],
        device=device,
    )
