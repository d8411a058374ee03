"""CacheGen-compatible KV codec (LMCache's CacheGen, bit-exact) in a portable container.

High level::

    blob = kvx.codec.encode(kv)            # kv: KV_2LTD [2, L, T, H*D] (or [2, L, T, H, D])
    kv2 = kvx.codec.decode(blob)           # [2, L, T, H*D], same dtype

``kv`` is a torch tensor or numpy array, float32, float16 or bfloat16 (bf16 needs torch); a
tensor on a device goes through host memory. Bins default to LMCache's schedule
(:func:`default_bins`). ``encode(kv, method="rotated")`` selects the container's second method,
which rotates each head before quantizing (fewer bits for the same next-token quality on real
models, docs/codec-quality.md; not LMCache-compatible, its own :func:`default_rotated_bins`).
The blob is kvx's own container (``docs/codec-container.md``):
little-endian, no pickle, CRC-32 checked; decoding damaged or hostile bytes raises
:class:`kvx.CorruptInputError` naming the field.

Low level, mirroring LMCache's ``lmcache.c_ops`` so an adapter is thin: :func:`calculate_cdf`,
:func:`encode_fast_new`, :func:`decode_fast_new`, :func:`decode_fast_prefsum`, plus
:func:`quantize`, :func:`dequantize`, :func:`encode_streams` and :func:`stream_bound`; quantize and
dequantize also run the rotated method (``method="rotated", head_size=...``: the symbols and
scales the container stores for it, on every backend but Ascend and CNRT). Symbols are
laid out ``[layers, tokens, channels]`` (int8 or uint8), CDF tables ``[layers, channels, Lp]``
(int16 or uint16, LMCache's layout), streams ``[layers, channels, capacity]`` uint8.
The low-level functions also take CUDA/HIP tensors (all on one device, or pinned host memory):
they run on the device's current stream without synchronising, outputs are allocated on that
device, and errors found in the data on the device (non-finite values, symbols or CDF tables out
of range, a stream longer than its slot) are raised by :func:`kvx.synchronize`. On Ascend NPUs
and Cambricon MLUs they run host-staged (copies to pinned host memory, the CPU codec, copies
back): those calls synchronise the stream and raise data errors at once.
"""

from __future__ import annotations

# The functions live in three modules: _codec_lowlevel (LMCache's names), _codec_container (the
# container) and _codec_arrays (the checks of arrays both share). Bins, BytesLike and the
# DEFAULT_* constants stay importable from here as before, though not in __all__.
from ._codec_arrays import Bins  # noqa: F401
from ._codec_container import (  # noqa: F401
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_MAX_RATIO,
    BytesLike,
    CodecInfo,
    decode,
    encode,
    inspect,
)
from ._codec_lowlevel import (
    calculate_cdf,
    decode_fast_new,
    decode_fast_prefsum,
    dequantize,
    encode_fast_new,
    encode_streams,
    quantize,
    stream_bound,
)
from .reference_codec import default_bins
from .reference_rotated import default_rotated_bins

__all__ = [
    "CodecInfo",
    "calculate_cdf",
    "decode",
    "decode_fast_new",
    "decode_fast_prefsum",
    "default_bins",
    "default_rotated_bins",
    "dequantize",
    "encode",
    "encode_fast_new",
    "encode_streams",
    "inspect",
    "quantize",
    "stream_bound",
]
