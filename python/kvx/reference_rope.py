"""Plain-torch RoPE with the same semantics as :mod:`kvx.rope`.

The test oracle (run it with ``compute_dtype=torch.float64``) and the last-resort fallback on
devices without a native RoPE kernel. It is written from the definition, with torch indexing and
slicing, not from the stride arithmetic of the C kernel: re-rotation here really rotates back
by the old angle and then forward by the new one, where the kernel combines the two rotations.

Shapes follow :mod:`kvx.rope`: ``[T, H, D]``, ``[L, T, H, D]`` (layers share the positions) or
``[T, H*D]`` with ``head_size``. Everything happens in place; the first ``rot_dim`` dims of each
head vector are rotated, where ``rot_dim = cos_sin_cache.shape[1]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._errors import InvalidArgumentError

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


def _as_torch(x: Any) -> Any:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def _heads_view(x: Any, name: str, head_size: int | None) -> Any:
    """``x`` as ``[..., T, H, D]`` sharing its memory (2-D inputs are split with ``head_size``)."""
    if x.dim() == 2:
        if not head_size or x.shape[1] % head_size:
            raise InvalidArgumentError(
                f"{name}: a 2-D [T, H*D] tensor needs head_size dividing {x.shape[1]}, "
                f"got {head_size}"
            )
        return x.unflatten(1, (x.shape[1] // head_size, head_size))
    if x.dim() in (3, 4):
        return x
    raise InvalidArgumentError(
        f"{name}: expected [T, H*D], [T, H, D] or [L, T, H, D], got shape {tuple(x.shape)}"
    )


def _angles(cos_sin_cache: Any, positions: Any, compute_dtype: Any) -> tuple[Any, Any]:
    """cos, sin of shape [T, 1, rot_dim/2] (broadcast over heads and layers)."""
    cache = _as_torch(cos_sin_cache)
    positions = _as_torch(positions).long().reshape(-1)
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= cache.shape[0]):
        raise InvalidArgumentError(
            f"positions: expected values in [0, {cache.shape[0]}) (the cache's max_position)"
        )
    rows = cache.index_select(0, positions.to(cache.device)).to(compute_dtype)
    cos, sin = rows.chunk(2, dim=-1)
    return cos.unsqueeze(-2), sin.unsqueeze(-2)


def _rotate(x: Any, cos: Any, sin: Any, is_neox: bool) -> Any:
    """The rotated copy of ``x`` ([..., rot_dim]) by angles (cos, sin) ([..., rot_dim/2])."""
    if is_neox:
        a, b = x.chunk(2, dim=-1)
        return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)


def _rotate_in_place(
    x: Any,
    name: str,
    angle_pairs: list[tuple[Any, Any]],
    rot_dim: int,
    is_neox: bool,
    head_size: int | None,
    compute_dtype: Any,
) -> None:
    heads = _heads_view(_as_torch(x), name, head_size)
    if rot_dim > heads.shape[-1]:
        raise InvalidArgumentError(
            f"rot_dim: expected <= head_size ({heads.shape[-1]}), got {rot_dim}"
        )
    part = heads[..., :rot_dim]
    value = part.to(compute_dtype)
    for cos, sin in angle_pairs:
        value = _rotate(value, cos.to(value.device), sin.to(value.device), is_neox)
    part.copy_(value.to(part.dtype))


def rerotate_keys(
    keys: Any,
    old_positions: Any,
    new_positions: Any,
    cos_sin_cache: Any,
    *,
    is_neox: bool = True,
    head_size: int | None = None,
    compute_dtype: Any = None,
) -> Any:
    """Rotates ``keys`` (rotated at ``old_positions``) to ``new_positions`` in place; returns
    ``keys``.

    Rotation by ``-old`` then by ``new``, in ``compute_dtype`` (default float32), rounded to the
    keys' dtype once at the end.
    """
    compute_dtype = compute_dtype or torch.float32
    cos_old, sin_old = _angles(cos_sin_cache, old_positions, compute_dtype)
    cos_new, sin_new = _angles(cos_sin_cache, new_positions, compute_dtype)
    rot_dim = _as_torch(cos_sin_cache).shape[1]
    _rotate_in_place(
        keys,
        "keys",
        [(cos_old, -sin_old), (cos_new, sin_new)],
        rot_dim,
        is_neox,
        head_size,
        compute_dtype,
    )
    return keys


def apply_rotary(
    positions: Any,
    query: Any,
    key: Any,
    cos_sin_cache: Any,
    *,
    is_neox: bool = True,
    head_size: int | None = None,
    compute_dtype: Any = None,
) -> tuple[Any, Any]:
    """vLLM ``rotary_embedding``: rotates ``query`` and ``key`` (unless None) in place."""
    compute_dtype = compute_dtype or torch.float32
    angles = [_angles(cos_sin_cache, positions, compute_dtype)]
    rot_dim = _as_torch(cos_sin_cache).shape[1]
    _rotate_in_place(query, "query", angles, rot_dim, is_neox, head_size, compute_dtype)
    if key is not None:
        _rotate_in_place(key, "key", angles, rot_dim, is_neox, head_size, compute_dtype)
    return query, key


__all__ = ["apply_rotary", "rerotate_keys"]
