"""LMCache's fused key re-rotation (CacheBlend) on libkvx."""

from __future__ import annotations

from typing import Any

from .. import rope
from .._errors import InvalidArgumentError


def rotary_embedding_k_fused(
    old_positions: Any,
    new_positions: Any,
    key: Any,
    head_size: int,
    cos_sin_cache: Any,
    is_neox: bool,
) -> None:
    """Moves keys rotated at ``old_positions`` to ``new_positions``, in place, in one rotation.

    Args:
        old_positions, new_positions: int64/int32 ``[T]``.
        key: ``[T, H, head_size]`` (as LMCache's positional encoding passes it) or
            ``[T, H * head_size]``; float32/float16/bfloat16.
        head_size: D.
        cos_sin_cache: ``[max_position, rot_dim]``, cos then sin halves.
        is_neox: NeoX pairing (r, r + rot_dim/2) if True, else GPT-J (2r, 2r + 1).
    """
    rope.rotary_embedding_k_fused(
        old_positions, new_positions, key, head_size, cos_sin_cache, is_neox
    )


def rotary_embedding_k_fused_strided(
    old_positions: Any,
    new_positions: Any,
    key: Any,
    head_size: int,
    head_stride: int,
    cos_sin_cache: Any,
    is_neox: bool,
) -> None:
    """:func:`rotary_embedding_k_fused` of the first ``head_size`` elements of each head of
    ``key``, whose heads are ``head_stride`` apart (K followed by V in one row, as fused caches
    keep them); the rest of each head is left alone.

    Args:
        key: ``[T, H, head_stride]`` or ``[T, H * head_stride]``.
        head_stride: at least ``head_size``.
    """
    if head_stride < head_size or head_size < 1:
        raise InvalidArgumentError(
            f"head_stride: expected at least head_size ({head_size}), got {head_stride}"
        )
    heads = key.unflatten(-1, (-1, head_stride)) if key.dim() == 2 else key
    if heads.shape[-1] != head_stride:
        raise InvalidArgumentError(
            f"key: expected heads of head_stride ({head_stride}) elements, "
            f"got shape {tuple(key.shape)}"
        )
    rotary_embedding_k_fused(
        old_positions, new_positions, heads[..., :head_size], head_size, cos_sin_cache, is_neox
    )
