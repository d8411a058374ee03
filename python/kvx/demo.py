"""``python -m kvx demo``: the main job, end to end on the CPU backend (numpy only).

A vLLM-style paged KV cache of Llama-3-8B's shape holds one request's tokens in scattered
blocks; kvx offloads them to a dense LMCache-style buffer, loads them back into different blocks
of a fresh cache, and the result is verified bit for bit.
"""

from __future__ import annotations

import time

import numpy as np

from . import _info
from .transfer import load, store

LAYERS, KV_HEADS, HEAD_SIZE, BLOCK_SIZE = 32, 8, 128, 16


def _scattered_slots(rng: np.random.Generator, tokens: int, num_blocks: int) -> np.ndarray:
    """A request's slots as vLLM assigns them: whole blocks, picked anywhere in the pool."""
    blocks = rng.permutation(num_blocks)[: -(-tokens // BLOCK_SIZE)]
    slots = blocks[:, None] * BLOCK_SIZE + np.arange(BLOCK_SIZE)[None, :]
    return np.ascontiguousarray(slots.reshape(-1)[:tokens], dtype=np.int64)


def _random_cache(rng: np.random.Generator, num_blocks: int) -> list[np.ndarray]:
    shape = (2, num_blocks, BLOCK_SIZE, KV_HEADS, HEAD_SIZE)
    return [rng.integers(0, 2**16, size=shape, dtype=np.uint16).view(np.float16) for _ in range(LAYERS)]


def _step(label: str, fn) -> float:
    print(f"  {label} ...", end="", flush=True)
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(f" {seconds * 1e3:.1f} ms")
    return seconds


def _verify(source: list[np.ndarray], old: np.ndarray, target: list[np.ndarray], new: np.ndarray) -> int:
    """Counts mismatches: moved tokens must be identical bits, every other slot still zero."""
    flat = lambda c: c.view(np.uint16).reshape(2, -1, KV_HEADS * HEAD_SIZE)  # noqa: E731
    untouched = np.ones(flat(target[0]).shape[1], dtype=bool)
    untouched[new] = False
    bad = 0
    for src, dst in zip(source, target):
        bad += int(np.count_nonzero(flat(src)[:, old] != flat(dst)[:, new]))
        bad += int(np.count_nonzero(flat(dst)[:, untouched]))
    return bad


def run_demo(tokens: int = 2000) -> int:
    """Runs the demo and prints what it did; returns 0 when the round trip verified."""
    rng = np.random.default_rng(0)
    num_blocks = 2 * -(-tokens // BLOCK_SIZE) + 8
    nbytes = 2 * LAYERS * tokens * KV_HEADS * HEAD_SIZE * 2
    print(f"kvx {_info.version()} demo: CPU backend, {_info.get_num_threads()} threads")
    print(f"model shape: Llama-3-8B ({LAYERS} layers, {KV_HEADS} KV heads, head {HEAD_SIZE}, fp16), "
          f"vLLM flash-attn NHD pool of {num_blocks} blocks x {BLOCK_SIZE} tokens")
    print(f"request: {tokens} tokens in scattered blocks = {nbytes / 2**20:.1f} MiB of K/V")

    engine = _random_cache(rng, num_blocks)
    old_slots = _scattered_slots(rng, tokens, num_blocks)
    # np.full writes every page now, so page faults stay out of the timings.
    dense = np.full((2, LAYERS, tokens, KV_HEADS * HEAD_SIZE), 0, dtype=np.float16)
    fresh = [np.full(c.shape, 0, dtype=c.dtype) for c in engine]
    new_slots = _scattered_slots(rng, tokens, num_blocks)

    t_store = _step("offload (paged -> dense KV_2LTD)", lambda: store(engine, dense, old_slots))
    t_load = _step("load into different blocks of a fresh cache", lambda: load(fresh, dense, new_slots))
    bad = _verify(engine, old_slots, fresh, new_slots)
    print(f"offload {nbytes / t_store / 1e9:.2f} GB/s, load {nbytes / t_load / 1e9:.2f} GB/s")
    if bad:
        print(f"FAILED: {bad} elements differ")
        return 1
    print("verified: every token's K/V is bit-identical at its new slot; no other slot was touched")
    return 0
