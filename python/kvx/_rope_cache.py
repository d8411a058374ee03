"""vLLM's RoPE ``cos_sin_cache``: :func:`build_cos_sin_cache`, re-exported by :mod:`kvx.rope`.

The table every :mod:`kvx.rope` call reads: ``[max_position, rot_dim]``, row p holding the cos
half then the sin half of position p's angles, with the default, linear or Llama 3.1 frequency
scaling. Built with torch (imported on the first call), in float32 as vLLM builds it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import _torch
from ._errors import InvalidArgumentError, NotAvailableError


def _llama3_inv_freq(torch: Any, inv_freq: Any, params: Mapping[str, Any]) -> Any:
    """Llama 3.1 frequency scaling (vLLM ``Llama3RotaryEmbedding._compute_inv_freq``): long
    wavelengths are divided by ``factor``, short ones kept, the band between interpolated."""
    try:
        factor = float(params["factor"])
        low = float(params.get("low_freq_factor", 1.0))
        high = float(params.get("high_freq_factor", 4.0))
        original = float(params["original_max_position_embeddings"])
    except KeyError as missing:
        raise InvalidArgumentError(f"scaling: llama3 scaling needs {missing.args[0]!r}") from None
    if factor <= 0 or low <= 0 or high <= 0 or original <= 0:
        raise InvalidArgumentError(f"scaling: llama3 factors must be positive, got {dict(params)}")
    low_freq_wavelen = original / low
    high_freq_wavelen = original / high
    wave_len = 2 * math.pi / inv_freq
    smooth = (original / wave_len - low) / (high - low) if low != high else 0
    return torch.where(
        wave_len < high_freq_wavelen,
        inv_freq,
        torch.where(
            wave_len > low_freq_wavelen,
            inv_freq / factor,
            (1 - smooth) * inv_freq / factor + smooth * inv_freq,
        ),
    )


def _scaling_kind(scaling: Any) -> tuple[str, Mapping[str, Any]]:
    if scaling is None:
        return "default", {}
    if isinstance(scaling, (int, float)) and not isinstance(scaling, bool):
        return "linear", {"factor": scaling}
    if isinstance(scaling, Mapping):
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind in ("default", "linear", "llama3"):
            return kind, scaling
        raise InvalidArgumentError(
            f"scaling: expected rope_type 'default', 'linear' or 'llama3', got {kind!r}"
        )
    raise InvalidArgumentError(
        f"scaling: expected None, a linear factor or a mapping with 'rope_type', got {scaling!r}"
    )


def build_cos_sin_cache(
    rot_dim: int,
    max_position: int,
    base: float = 10000.0,
    *,
    scaling: float | Mapping[str, Any] | None = None,
    dtype: Any = None,
    device: Any = None,
) -> Any:
    """vLLM's ``cos_sin_cache``: ``[max_position, rot_dim]``, cos half then sin half.

    Row p holds ``cos(t_p * f_r)`` for ``r < rot_dim/2``, then ``sin(t_p * f_r)``, with
    ``f_r = base ** (-2r / rot_dim)``, computed in float32 as vLLM does, then cast to ``dtype``.

    Args:
        rot_dim: even number of rotated dims per head.
        max_position: number of rows (positions 0 .. max_position - 1).
        base: the model's ``rope_theta``.
        scaling: None; a number (linear scaling: ``t_p = p / factor``; vLLM builds
            ``max_position_embeddings * factor`` rows, so pass that as ``max_position`` to match);
            or a Hugging Face style ``rope_scaling`` mapping with ``rope_type`` (or ``type``)
            ``"linear"`` (``factor``) or ``"llama3"`` (``factor``, ``low_freq_factor``,
            ``high_freq_factor``, ``original_max_position_embeddings``).
        dtype: torch dtype of the result (default float32).
        device: torch device of the result (default CPU).
    """
    torch = _torch.load()
    if torch is None:  # pragma: no cover - numpy-only installs
        raise NotAvailableError("build_cos_sin_cache: needs torch (pip install torch)")
    if isinstance(rot_dim, bool) or not isinstance(rot_dim, int) or rot_dim < 2 or rot_dim % 2:
        raise InvalidArgumentError(f"rot_dim: expected an even integer >= 2, got {rot_dim!r}")
    if isinstance(max_position, bool) or not isinstance(max_position, int) or max_position < 1:
        raise InvalidArgumentError(f"max_position: expected an integer >= 1, got {max_position!r}")
    if not base > 0:
        raise InvalidArgumentError(f"base: expected a positive number, got {base!r}")
    kind, params = _scaling_kind(scaling)
    inv_freq = 1.0 / (base ** (torch.arange(0, rot_dim, 2, dtype=torch.float) / rot_dim))
    t = torch.arange(max_position, dtype=torch.float)
    if kind == "linear":
        factor = float(params.get("factor", 0))
        if not factor > 0:
            raise InvalidArgumentError(
                f"scaling: expected a positive linear factor, got {params.get('factor')!r}"
            )
        t = t / factor
    elif kind == "llama3":
        inv_freq = _llama3_inv_freq(torch, inv_freq, params)
    freqs = torch.einsum("i,j -> ij", t, inv_freq)
    cache = torch.cat((freqs.cos(), freqs.sin()), dim=-1)
    return cache.to(dtype=dtype or torch.float32, device=device)
