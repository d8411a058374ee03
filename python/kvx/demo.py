"""``python -m kvx demo``: the main job, end to end on the CPU backend (numpy only).

One request's K/V (Llama-3-8B's shape, LLM-like values) sits in scattered blocks of a vLLM-style
paged cache. kvx offloads it to a dense LMCache-style buffer, compresses that buffer with the
CacheGen codec and decodes it, loads the exact buffer back into different blocks of a fresh
cache, and re-rotates the keys to new positions as CacheBlend does when a cached chunk is reused
elsewhere in a prompt. Every step is checked: transfers bit for bit, the codec against the
plain-numpy reference quantizer (bit for bit: the range coding is lossless), RoPE against a
float64 computation.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from . import _info, codec, reference_codec, rope
from .transfer import load, store

LAYERS, KV_HEADS, HEAD_SIZE, BLOCK_SIZE = 32, 8, 128, 16
ROPE_BASE = 500000.0  # Llama 3's rope_theta


def _scattered_slots(rng: np.random.Generator, tokens: int, num_blocks: int) -> np.ndarray:
    """A request's slots as vLLM assigns them: whole blocks, picked anywhere in the pool."""
    blocks = rng.permutation(num_blocks)[: -(-tokens // BLOCK_SIZE)]
    slots = blocks[:, None] * BLOCK_SIZE + np.arange(BLOCK_SIZE)[None, :]
    return np.ascontiguousarray(slots.reshape(-1)[:tokens], dtype=np.int64)


def _llm_like_kv(rng: np.random.Generator, tokens: int) -> np.ndarray:
    """``[2, L, T, H*D]`` float16: per-channel scales and offsets, a few outlier key channels,
    values correlated from token to token (what makes CacheGen's per-channel coding pay off)."""
    shape = (2, LAYERS, 1, KV_HEADS * HEAD_SIZE)
    scale = np.exp(0.4 * rng.standard_normal(shape, dtype=np.float32))
    scale[0] *= np.where(rng.random(shape[1:], dtype=np.float32) < 0.01, 8.0, 1.0).astype(
        np.float32
    )
    offset = 0.5 * rng.standard_normal(shape, dtype=np.float32) * scale
    kv = np.empty((2, LAYERS, tokens, KV_HEADS * HEAD_SIZE), dtype=np.float16)
    state = rng.standard_normal(shape, dtype=np.float32)
    for t in range(tokens):
        state = 0.9 * state + 0.436 * rng.standard_normal(
            shape, dtype=np.float32
        )  # 0.436^2 = 1 - 0.9^2
        kv[:, :, t : t + 1] = offset + scale * state
    return kv


def _paged_cache(num_blocks: int) -> list[np.ndarray]:
    # np.full writes every page now, so page faults stay out of the timings.
    return [
        np.full((2, num_blocks, BLOCK_SIZE, KV_HEADS, HEAD_SIZE), 0, dtype=np.float16)
        for _ in range(LAYERS)
    ]


def _slot_view(cache: np.ndarray) -> np.ndarray:
    """``[2, slots, H*D]`` bits of one layer's ``[2, NB, BS, H, D]`` cache."""
    return cache.view(np.uint16).reshape(2, -1, KV_HEADS * HEAD_SIZE)


def _step(label: str, fn: Callable[[], object]) -> float:
    print(f"  {label} ...", end="", flush=True)
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f" {seconds * 1e3:.1f} ms")
    return seconds


def _transfer_mismatches(request: np.ndarray, target: list[np.ndarray], slots: np.ndarray) -> int:
    """Elements that differ: the request's tokens must be identical bits at `slots`, every other
    slot of `target` still zero."""
    untouched = np.ones(_slot_view(target[0]).shape[1], dtype=bool)
    untouched[slots] = False
    bad = 0
    for layer, cache in enumerate(target):
        view = _slot_view(cache)
        bad += int(np.count_nonzero(view[:, slots] != request[:, layer].view(np.uint16)))
        bad += int(np.count_nonzero(view[:, untouched]))
    return bad


def _cos_sin_cache(max_position: int) -> np.ndarray:
    """vLLM's ``[max_position, rot_dim]`` table (cos half, sin half), in float32."""
    inv_freq = ROPE_BASE ** (-np.arange(0, HEAD_SIZE, 2, dtype=np.float32) / HEAD_SIZE)
    angles = np.arange(max_position, dtype=np.float32)[:, None] * inv_freq[None, :]
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def _rerotated64(
    keys: np.ndarray, old: np.ndarray, new: np.ndarray, cache: np.ndarray
) -> np.ndarray:
    """float64 NeoX re-rotation of ``[T, H, D]`` keys: the oracle for the RoPE step."""
    half = HEAD_SIZE // 2
    cos = lambda p: cache[p, :half].astype(np.float64)[:, None, :]  # noqa: E731
    sin = lambda p: cache[p, half:].astype(np.float64)[:, None, :]  # noqa: E731
    c = cos(new) * cos(old) + sin(new) * sin(old)
    s = sin(new) * cos(old) - cos(new) * sin(old)
    a, b = keys[..., :half].astype(np.float64), keys[..., half:].astype(np.float64)
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def _lossy_reference(dense: np.ndarray, layer: int) -> np.ndarray:
    """``[2, T, H*D]`` float16: what CacheGen must give back for one layer's K and V, by the
    plain-numpy reference quantizer (the coding itself is lossless)."""
    key_bins, value_bins = reference_codec.default_bins(LAYERS)
    bins = [key_bins[layer], value_bins[layer]]
    rows = dense[:, layer].astype(np.float32)
    symbols, scales = reference_codec.quantize(rows, bins)
    return reference_codec.dequantize(symbols, scales, bins).astype(np.float16)


def _codec_step(dense: np.ndarray) -> bool:
    holder: dict[str, object] = {}
    t_enc = _step(
        "compress (CacheGen, LMCache's bins)", lambda: holder.update(blob=codec.encode(dense))
    )
    blob = holder["blob"]
    t_dec = _step("decompress", lambda: holder.update(out=codec.decode(blob, as_numpy=True)))
    decoded = holder["out"]
    exact = decoded.shape == dense.shape and all(
        np.array_equal(
            decoded[:, layer].view(np.uint16), _lossy_reference(dense, layer).view(np.uint16)
        )
        for layer in (0, LAYERS - 1)
    )  # 32 bins for K and V, then 16
    if dense.size == 0:  # every token was already cached: a header-only container
        print(f"codec: empty request, a {len(blob)}-byte container that decodes to an empty buffer")
        return exact
    x, y = dense.astype(np.float32), decoded.astype(np.float32)
    rel_l2 = float(np.linalg.norm(y - x) / np.linalg.norm(x))
    ratio = dense.nbytes / len(blob)
    print(
        f"codec: {len(blob) / 2**20:.1f} MiB, {8 * len(blob) / dense.size:.2f} bits/element, "
        f"{ratio:.2f}x smaller than fp16; encode {dense.size / t_enc / 1e6:.0f} M symbols/s, "
        f"decode {dense.size / t_dec / 1e6:.0f} M symbols/s; relative L2 error {rel_l2:.3f}; "
        f"first and last layer "
        f"{'equal' if exact else 'DIFFER from'} the reference quantizer's round trip"
    )
    return exact


def _rope_step(dense: np.ndarray, tokens: int) -> bool:
    """CacheBlend: the chunk, cached at positions 0..T-1, is reused at offset 10000."""
    cache = _cos_sin_cache(tokens + 10000)
    old = np.arange(tokens, dtype=np.int64)
    new = old + 10000
    keys = dense[0].reshape(LAYERS, tokens, KV_HEADS, HEAD_SIZE)  # the K plane, every layer at once
    before = keys[0].copy()
    _step(
        "re-rotate keys of all layers to positions +10000",
        lambda: rope.rerotate_keys(keys, old, new, cache),
    )
    expected = _rerotated64(before, old, new, cache)
    worst = float(
        np.max(
            np.abs(keys[0].astype(np.float64) - expected) / (np.abs(expected) + 1e-2), initial=0.0
        )
    )
    print(
        f"rope: layer 0 matches a float64 re-rotation within {worst:.1e} (fp16 rounding: 4.9e-04)"
    )
    return worst < 2.0**-10


def run_demo(tokens: int = 1024) -> int:
    """Runs the demo and prints what it did; returns 0 when every step verified."""
    rng = np.random.default_rng(0)
    num_blocks = 2 * -(-tokens // BLOCK_SIZE) + 8
    nbytes = 2 * LAYERS * tokens * KV_HEADS * HEAD_SIZE * 2
    print(f"kvx {_info.version()} demo: CPU backend, {_info.get_num_threads()} threads")
    print(
        f"model shape: Llama-3-8B ({LAYERS} layers, {KV_HEADS} KV heads, head {HEAD_SIZE}, fp16), "
        f"vLLM flash-attn NHD pool of {num_blocks} blocks x {BLOCK_SIZE} tokens"
    )
    print(f"request: {tokens} tokens in scattered blocks = {nbytes / 2**20:.1f} MiB of K/V")

    request = _llm_like_kv(rng, tokens)
    engine, fresh = _paged_cache(num_blocks), _paged_cache(num_blocks)
    old_slots, new_slots = (
        _scattered_slots(rng, tokens, num_blocks),
        _scattered_slots(rng, tokens, num_blocks),
    )
    for layer, cache in enumerate(engine):  # the engine wrote the request there while serving it
        _slot_view(cache)[:, old_slots] = request[:, layer].view(np.uint16)
    dense = np.full(request.shape, 0, dtype=np.float16)

    t_store = _step("offload (paged -> dense KV_2LTD)", lambda: store(engine, dense, old_slots))
    offloaded = bool(np.array_equal(dense.view(np.uint16), request.view(np.uint16)))
    t_load = _step(
        "load into different blocks of a fresh cache", lambda: load(fresh, dense, new_slots)
    )
    loaded = _transfer_mismatches(request, fresh, new_slots) == 0
    print(
        f"transfer: offload {nbytes / t_store / 1e9:.2f} GB/s, "
        f"load {nbytes / t_load / 1e9:.2f} GB/s; "
        f"{'bit-identical, no other slot touched' if offloaded and loaded else 'MISMATCH'}"
    )
    checks = {
        "transfer": offloaded and loaded,
        "codec": _codec_step(dense),
        "rope": _rope_step(dense, tokens),
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print(
        "verified: transfers bit-identical, codec equal to the reference quantizer, "
        "RoPE within fp16 rounding"
    )
    return 0
