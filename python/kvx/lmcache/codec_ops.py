"""LMCache's CacheGen coder ops on libkvx: bit-identical streams, LMCache's argument names.

Each op runs on the device of its tensors, ordered on that device's current stream.
"""

from __future__ import annotations

from typing import Any

from .. import _codec_lowlevel as codec


def calculate_cdf(input_tensor: Any, num_bins: int) -> Any:
    """Per (layer, channel) cumulative symbol frequencies, scaled to 16 bits.

    Args:
        input_tensor: symbols ``[layers, tokens, channels]``, int8 or uint8, each below
            ``num_bins`` (kvx raises where LMCache's torch version clamps).
        num_bins: 1 to 256.

    Returns:
        int16 ``[layers, channels, num_bins + 1]`` (uint16 values).
    """
    return codec.calculate_cdf(input_tensor, num_bins)


def encode_fast_new(cdf: Any, input_sym: Any, output_buffer: Any, output_lengths: Any) -> None:
    """Arithmetic-codes each (layer, channel) column of ``input_sym``.

    Args:
        cdf: int16 ``[layers, channels, num_bins + 1]`` from :func:`calculate_cdf`.
        input_sym: ``[layers, tokens, channels]`` int8/uint8.
        output_buffer: uint8 ``[layers, channels, capacity]``, receives the streams.
        output_lengths: int32 ``[layers, channels]``, receives their byte lengths.

    Raises:
        kvx.BufferTooSmallError: a stream longer than ``capacity`` (LMCache's torch version
            silently cuts it short, which loses data). ``output_lengths`` is then left as it
            was and ``output_buffer``'s bytes are unspecified (never written past). On a GPU
            the error comes from :func:`kvx.synchronize` instead, and a cut stream reports its
            capacity as its length.
    """
    codec.encode_fast_new(cdf, input_sym, output_buffer, output_lengths)


def decode_fast_new(cdf: Any, bytestreams: Any, lengths: Any, output: Any) -> None:
    """Decodes stream (l, c), ``bytestreams[l, c, :lengths[l, c]]``, into ``output[l, :, c]``.

    Args:
        cdf: int16 ``[layers, channels, num_bins + 1]``.
        bytestreams: uint8 ``[layers, channels, capacity]``.
        lengths: int32 ``[layers, channels]``.
        output: int8/uint8 ``[layers, tokens, channels]``, overwritten.
    """
    codec.decode_fast_new(cdf, bytestreams, lengths, output)


def decode_fast_prefsum(cdf: Any, bytestreams: Any, lengths_prefsum: Any, output: Any) -> None:
    """Decodes streams stored back to back: stream ``l * channels + c`` ends at
    ``lengths_prefsum[l, c]`` and starts where the previous one ends.

    Args:
        cdf: int16 ``[layers, channels, num_bins + 1]``.
        bytestreams: uint8 ``[total_bytes]``.
        lengths_prefsum: int32/int64 ``[layers, channels]``, inclusive prefix sums of the lengths.
        output: int8/uint8 ``[layers, tokens, channels]``, overwritten.
    """
    codec.decode_fast_prefsum(cdf, bytestreams, lengths_prefsum, output)
