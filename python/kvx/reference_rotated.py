"""Plain numpy reference of the container's rotated method (the test oracle for
``kvx.codec.encode(..., method="rotated")``); docs/codec-container.md gives the format.

Per (row, token) of ``C = heads * head_size`` channels, in float32 with one rounding per
operation, in the order the C library uses:

- ``x / head_size`` (exact: a power of two), then each head's Walsh-Hadamard transform
  (unnormalised Sylvester order: butterflies ``(a + b, a - b)`` of spans 1, 2, 4, ...);
- ``scale`` = the smallest bfloat16 value >= max |coefficient| over the channels;
- ``symbol = clip(rint(c * float32(MAX / scale)), -MAX, MAX) + MAX`` with ``MAX = bins // 2 - 1``
  (``MAX`` everywhere when the scale is 0);
- decoding: ``(symbol - MAX) * float32(scale / MAX)``, each head transformed again
  (``H H = n I``), then rounded to the dtype, saturating at its largest finite value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Probability 1 in the stream models' fixed point.
MODEL_ONE = 1 << 31
#: round(2^31 * Phi(i / 64)), i = 0 .. 512: the standard normal CDF the models are built from.
MODEL_PHI = [round(MODEL_ONE * 0.5 * math.erfc(-(i / 64) / math.sqrt(2))) for i in range(513)]
#: round(65536 * 2^(j / 16)): sigma of spread code s is SIGMA_FRACTIONS[s % 16] << (s // 16),
#: in 1/2^20 of a symbol.
SIGMA_FRACTIONS = [round(65536 * 2 ** (j / 16)) for j in range(16)]


def hadamard_heads(x: np.ndarray, head_size: int) -> np.ndarray:
    """``x`` ``[..., heads * head_size]`` float32 with each head's unnormalised Walsh-Hadamard
    transform, butterfly by butterfly as the C library computes it."""
    shape = x.shape
    y = x.reshape(-1, head_size).astype(np.float32)
    span = 1
    while span < head_size:
        blocks = y.reshape(y.shape[0], head_size // (2 * span), 2, span)
        a, b = blocks[:, :, 0, :], blocks[:, :, 1, :]
        y = np.stack([a + b, a - b], axis=2).reshape(y.shape[0], head_size)
        span *= 2
    return y.reshape(shape)


def _bf16_nearest(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` (finite) rounded to bfloat16, half to even: the bfloat16 bits, as uint64."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16


def bf16_ceil(x: np.ndarray) -> np.ndarray:
    """The smallest bfloat16 value >= x (finite, >= 0), as float32."""
    nearest = _bf16_nearest(x)
    up = (nearest << 16).astype(np.uint32).view(np.float32) < x
    return ((nearest + up) << 16).astype(np.uint32).view(np.float32)


def quantize(x: np.ndarray, head_size: int, bins: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """x: ``[rows, T, C]`` float32 holding the KV dtype's values -> (symbols ``[rows, T, C]``
    uint8, scales ``[rows, T]`` float32, each a bfloat16 value)."""
    coefficients = hadamard_heads(x.astype(np.float32) * np.float32(1.0 / head_size), head_size)
    scales = bf16_ceil(np.abs(coefficients).max(axis=-1))
    maxes = np.array([b // 2 - 1 for b in bins], dtype=np.int32)[:, None, None]
    safe = np.where(scales > 0, scales, np.float32(1.0))[..., None]
    factor = maxes.astype(np.float32) / safe
    q = np.clip(np.rint(coefficients * factor), -maxes, maxes)
    symbols = np.where(scales[..., None] > 0, q + maxes, maxes)
    return symbols.astype(np.uint8), scales


def dequantize(
    symbols: np.ndarray, scales: np.ndarray, head_size: int, bins: Sequence[int]
) -> np.ndarray:
    """The inverse of :func:`quantize` before rounding to the dtype: ``[rows, T, C]`` float32."""
    maxes = np.array([b // 2 - 1 for b in bins], dtype=np.int32)[:, None, None]
    clamped = np.minimum(symbols.astype(np.int32), 2 * maxes)
    step = scales[..., None].astype(np.float32) / maxes.astype(np.float32)
    coefficients = (clamped - maxes).astype(np.float32) * step
    return hadamard_heads(coefficients, head_size)


def _model_below(diff: int, sigma: int) -> int:
    """Phi((boundary - centre) / sigma) in MODEL_ONE units, the boundary ``diff`` sixteenths of
    a symbol from the centre."""
    z = (abs(diff) << 30) // sigma
    step, part = z >> 8, z & 255
    p = MODEL_ONE
    if step < 512:
        p = MODEL_PHI[step] + (((MODEL_PHI[step + 1] - MODEL_PHI[step]) * part) >> 8)
    return p if diff >= 0 else MODEL_ONE - p


def model_cdf(center: int, spread: int, top: int, num_bins: int) -> np.ndarray:
    """The CDF table (``num_bins + 1`` uint16) of a stream's Gaussian model: centre
    ``center / 16`` symbols, deviation ``2 ** (spread / 16 - 4)`` symbols, over symbols
    ``0 .. top``; each symbol keeps the least share, as in a counted table."""
    sigma = SIGMA_FRACTIONS[spread % 16] << (spread // 16)
    cdf = np.zeros(num_bins + 1, dtype=np.uint16)
    for s in range(num_bins + 1):
        if s == 0:
            below = 0
        elif s > top:
            below = MODEL_ONE
        else:
            below = _model_below((2 * s - 1) * 8 - center, sigma)
        cdf[s] = ((0xFFFF - num_bins) * below >> 31) + s
    return cdf


def narrow_bf16(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` rounded to bfloat16 (nearest even), saturating, as float32 values."""
    largest = np.float32(3.3895313892515355e38)
    rounded = _bf16_nearest(np.clip(x, -largest, largest)) << 16
    return rounded.astype(np.uint32).view(np.float32)


def narrow_f16(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` rounded to float16 (nearest even), saturating."""
    return np.clip(x, -65504.0, 65504.0).astype(np.float16)


def default_rotated_bins(num_layers: int) -> tuple[list[int], list[int]]:
    """The rotated method's bin schedule (measured on SmolLM2's KV, docs/codec-quality.md): the
    keys decide the next token far more than the values, and the later layers' keys more than
    the first ones': K 10 bins in the first third of the layers and 12 after, V 6 bins."""
    first = num_layers // 3
    return [10 if i < first else 12 for i in range(num_layers)], [6] * num_layers
