"""One request's KV cache through LMCache's own cache engine, with whichever device ops LMCache
chose when it was imported (``LMCACHE_DEVICE_BACKEND``), printed as JSON digests for
tests/test_lmcache_engine.py to compare between backends. Each backend needs a process of its
own, since LMCache reads the variable once, at import.

    python -m lmcache_engine_driver engine OUT [--decode DIR]
        stores a request from a vLLM-shaped paged cache through an engine with a local CPU
        backend and retrieves it into a fresh cache; encodes the chunks the engine holds with
        LMCache's CacheGen serializer (the bytes go to OUT), decodes them with its deserializer
        and loads them into another fresh cache through the connector; with --decode, also
        decodes the chunks another backend's run left in DIR;
    python -m lmcache_engine_driver decode DIR
        only decodes DIR's chunks.

LMCache must be importable (lmcache_env.python_command runs this module so).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import torch

# Small enough for LMCache's torch ops to run it in seconds, large enough for two full chunks and
# a partial one. 32 layers: CacheGen's bin schedule for LMCache's test model is for 32.
LAYERS, HEADS, HEAD_SIZE, BLOCK_SIZE, NUM_BLOCKS = 32, 2, 64, 16, 64
TOKENS, CHUNK = 600, 256
MODEL = "test_model"
# vLLM's NHD layout: [2, num_blocks, block_size, heads, head_size] per layer. A CPU build of
# LMCache assumes vLLM's CPU attention layout (HND) unless the engine says otherwise.
LAYOUT_HINTS = {"kv_layout": "NHD"}
STORE_DEADLINE_S = 120.0


def _vllm_connector() -> Any:
    """LMCache's vLLM paged connector (V2) for caches in host memory.

    LMCache builds it for CUDA only: its constructor makes torch.cuda streams (:func:`main` swaps
    in LMCache's own CPU stand-ins) and its pointer table setup insists on a CUDA device and
    copies the table there. This subclass keeps the table on the host and changes nothing else:
    ``from_gpu``/``to_gpu`` and their ``device_ops.multi_layer_kv_transfer`` calls are LMCache's.
    """
    from lmcache.utils import EngineType
    from lmcache.v1.gpu_connector import utils
    from lmcache.v1.gpu_connector.gpu_connectors import VLLMPagedMemGPUConnectorV2

    class HostPagedConnector(VLLMPagedMemGPUConnectorV2):
        def _initialize_pointers(self, kv_caches: list[torch.Tensor]) -> torch.Tensor:
            if None in self.kv_cache_pointers_on_gpu:  # set up for these caches already
                return self.kv_cache_pointers_on_gpu[None]
            self.device = kv_caches[0].device
            fmt, kv_caches = utils.normalize_kv_and_discover_format(
                kv_caches, EngineType.VLLM, layout_hints=self.layout_hints
            )
            self.engine_kv_format = fmt
            self.num_blocks = utils.get_num_blocks(kv_caches, fmt)
            self.block_size = utils.get_block_size(kv_caches, fmt)
            self.page_buffer_size = self.num_blocks * self.block_size
            self.head_size = utils.get_head_size(kv_caches, fmt)
            stride = utils.resolve_block_stride_and_log_layout(kv_caches, fmt, 0, 0)
            self.block_stride_elems = stride or 0
            self.kv_cache_pointers.numpy()[:] = [t.data_ptr() for t in kv_caches]
            self.kv_cache_pointers_on_gpu[None] = self.kv_cache_pointers
            return self.kv_cache_pointers

    return HostPagedConnector(HEADS * HEAD_SIZE, LAYERS, layout_hints=LAYOUT_HINTS)


def _metadata() -> Any:
    from lmcache.v1.metadata import LMCacheMetadata

    return LMCacheMetadata(
        model_name=MODEL,
        world_size=1,
        local_world_size=1,
        worker_id=0,
        local_worker_id=0,
        kv_dtype=torch.bfloat16,
        kv_shape=(LAYERS, 2, CHUNK, HEADS, HEAD_SIZE),
    )


def _config(**legacy: Any) -> Any:
    from lmcache.v1.config import LMCacheEngineConfig

    return LMCacheEngineConfig.from_legacy(chunk_size=CHUNK, save_unfull_chunk=True, **legacy)


def _paged_caches(seed: int) -> list[torch.Tensor]:
    """Per-layer vLLM caches [2, num_blocks, block_size, heads, head_size] of random bf16."""
    gen = torch.Generator().manual_seed(seed)
    shape = (2, NUM_BLOCKS, BLOCK_SIZE, HEADS, HEAD_SIZE)
    return [torch.randn(shape, generator=gen).to(torch.bfloat16) for _ in range(LAYERS)]


def _request() -> tuple[torch.Tensor, torch.Tensor]:
    """The request's tokens and its slot mapping: slots scattered over the whole pool."""
    gen = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, 32000, (TOKENS,), generator=gen)
    slots = torch.randperm(NUM_BLOCKS * BLOCK_SIZE, generator=gen)[:TOKENS]
    return tokens, slots


def _at_slots(caches: Sequence[torch.Tensor], slots: torch.Tensor) -> torch.Tensor:
    """[layers, 2, tokens, heads, head_size]: the caches' entries at ``slots``."""
    flat = [c.view(2, NUM_BLOCKS * BLOCK_SIZE, HEADS, HEAD_SIZE) for c in caches]
    return torch.stack([f[:, slots] for f in flat])


def _digest(tensors: Sequence[torch.Tensor]) -> str:
    """SHA-256 of the tensors' bytes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class _Engine:
    """An LMCache engine built the way LMCache's tests build one, destroyed on exit."""

    def __init__(self, name: str, config: Any) -> None:
        from lmcache.utils import mock_up_broadcast_fn, mock_up_broadcast_object_fn
        from lmcache.v1.cache_engine import LMCacheEngineBuilder

        self.name, self.connector = name, _vllm_connector()
        self.engine = LMCacheEngineBuilder.get_or_create(
            name,
            config,
            _metadata(),
            self.connector,
            mock_up_broadcast_fn,
            mock_up_broadcast_object_fn,
        )
        self.engine.post_init()

    def __enter__(self) -> _Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        from lmcache.v1.cache_engine import LMCacheEngineBuilder

        LMCacheEngineBuilder.destroy(self.name)

    def _forget_caches(self) -> None:
        # The connector keeps the caches' pointer table between calls (vLLM's caches never
        # move); these calls pass different caches, so it starts over, as LMCache's tests do.
        self.connector.kv_cache_pointers_on_gpu = {}

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._forget_caches()
        return getattr(self.engine, method)(*args, **kwargs)

    def store(self, tokens: torch.Tensor, caches: list[torch.Tensor], slots: torch.Tensor) -> None:
        """Stores and waits until every token is found (LMCache stores asynchronously)."""
        self._call("store", tokens=tokens, kvcaches=caches, slot_mapping=slots)
        deadline = time.monotonic() + STORE_DEADLINE_S
        while self.engine.lookup(tokens) < len(tokens):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: the store did not finish")
            time.sleep(0.01)

    def retrieve(self, tokens: torch.Tensor, slots: torch.Tensor) -> list[torch.Tensor]:
        """A fresh cache (random, not zero) with the request retrieved into it."""
        caches = _paged_caches(seed=2)
        mask = self._call("retrieve", tokens, kvcaches=caches, slot_mapping=slots)
        if int(mask.sum()) != len(tokens):
            raise AssertionError(f"{self.name}: retrieved {int(mask.sum())} of {len(tokens)}")
        return caches

    def chunks(self, tokens: torch.Tensor) -> Iterator[tuple[int, int, Any]]:
        """The memory objects the engine holds for the request, with their token ranges."""
        for start, end, key in self.engine.token_database.process_tokens(tokens):
            yield start, end, self.engine.storage_manager.get(key)

    def load(
        self, chunk: Any, start: int, end: int, caches: list[torch.Tensor], slots: torch.Tensor
    ) -> None:
        """One chunk into ``caches`` through the engine's connector."""
        self._forget_caches()
        self.connector.to_gpu(chunk, start, end, kvcaches=caches, slot_mapping=slots)


def _unchanged_elsewhere(caches: list[torch.Tensor], slots: torch.Tensor) -> bool:
    """Whether the caches equal a fresh cache everywhere but at ``slots``."""
    others = torch.ones(NUM_BLOCKS * BLOCK_SIZE, dtype=torch.bool)
    others[slots] = False
    fresh = _paged_caches(seed=2)
    shape = (2, NUM_BLOCKS * BLOCK_SIZE, HEADS, HEAD_SIZE)
    return all(
        torch.equal(c.view(shape)[:, others], f.view(shape)[:, others])
        for c, f in zip(caches, fresh, strict=True)
    )


def _encoded_digest(data: bytes) -> str:
    """Digest of what a CacheGen blob holds: its streams, lengths, tables and scales. (The blob is
    a pickle, whose tensor records carry storage addresses, so its own bytes differ between
    processes even for equal content.)"""
    from lmcache.storage_backend.serde.cachegen_basics import CacheGenGPUEncoderOutput

    blob = CacheGenGPUEncoderOutput.from_bytes(data)
    streams = [t for c in blob.data_chunks for t in (c.bytestream, c.bytestream_lengths)]
    sizes = [c.ntokens for c in blob.data_chunks] + [blob.num_heads, blob.head_size]
    tables = [blob.cdf, blob.max_tensors_key, blob.max_tensors_value]
    return _digest([*streams, *tables, torch.tensor(sizes)])


def _serde() -> tuple[Any, Any]:
    from lmcache.v1.storage_backend.naive_serde.cachegen_decoder import CacheGenDeserializer
    from lmcache.v1.storage_backend.naive_serde.cachegen_encoder import CacheGenSerializer

    config, metadata = _config(), _metadata()
    return CacheGenSerializer(config, metadata), CacheGenDeserializer(config, metadata)


def _decode_dir(folder: Path) -> list[str]:
    """Digests of the decoded chunks another run encoded into ``folder``."""
    from lmcache.v1.memory_management import BytesBufferMemoryObj

    _, deserializer = _serde()
    files = sorted(folder.glob("chunk*.bin"))
    if not files:
        raise FileNotFoundError(f"no encoded chunks in {folder}")
    return [
        _digest([deserializer.deserialize(BytesBufferMemoryObj(f.read_bytes())).tensor])
        for f in files
    ]


def _cpu_backend(tokens: torch.Tensor, slots: torch.Tensor, out: Path) -> dict[str, Any]:
    """Store and retrieve through a local CPU backend; then the chunks the engine holds through
    LMCache's CacheGen serializer (the bytes go to ``out``) and deserializer, and the decoded
    chunks into a fresh cache through the connector, as a remote backend would."""
    from lmcache.v1.memory_management import BytesBufferMemoryObj

    original = _paged_caches(seed=1)
    serializer, deserializer = _serde()
    encoded, decoded, through_cachegen = [], [], _paged_caches(seed=2)
    with _Engine("kvx-e2e", _config(backend="cpu")) as engine:
        engine.store(tokens, original, slots)
        retrieved = engine.retrieve(tokens, slots)
        for i, (start, end, chunk) in enumerate(engine.chunks(tokens)):
            data = serializer.serialize(chunk).byte_array
            (out / f"chunk{i}.bin").write_bytes(data)
            encoded.append(_encoded_digest(data))
            back = deserializer.deserialize(BytesBufferMemoryObj(data))
            decoded.append(_digest([back.tensor]))
            engine.load(back, start, end, through_cachegen, slots)
    got, want = (_at_slots(c, slots).float() for c in (through_cachegen, original))
    return {
        "engine": {
            "digest": _digest(retrieved),
            "equals_original": torch.equal(_at_slots(retrieved, slots), _at_slots(original, slots)),
            "unchanged_elsewhere": _unchanged_elsewhere(retrieved, slots),
        },
        "cachegen": {
            "encoded": encoded,
            "decoded": decoded,
            "digest": _digest(through_cachegen),
            "relative_error": float((got - want).norm() / want.norm()),
            "unchanged_elsewhere": _unchanged_elsewhere(through_cachegen, slots),
        },
    }


def _selected() -> dict[str, Any]:
    """Which ops LMCache runs, and what kvx's ops (if they are the ones) left to LMCache's."""
    import lmcache

    ops = type(lmcache.device_ops)
    found: dict[str, Any] = {"device_ops": f"{ops.__module__}.{ops.__qualname__}"}
    if ops.__module__.startswith("kvx."):
        from kvx.lmcache import _fallback, device_ops

        found["fallbacks"] = [list(pair) for pair in _fallback.announced()]
        found["kvx_fallback_ops"] = sorted(device_ops.FALLBACK_OPS)
    return found


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lmcache_engine_driver", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    engine = sub.add_parser("engine")
    engine.add_argument("out", type=Path)
    engine.add_argument("--decode", type=Path)
    decode = sub.add_parser("decode")
    decode.add_argument("folder", type=Path)
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.command == "decode":
        return {"decoded": _decode_dir(args.folder), **_selected()}
    tokens, slots = _request()
    args.out.mkdir(parents=True, exist_ok=True)
    result = _cpu_backend(tokens, slots, args.out)
    if args.decode is not None:
        result["decoded_other"] = _decode_dir(args.decode)
    return {**result, **_selected()}


def main(argv: list[str]) -> None:
    """Prints the run's JSON as the last line of stdout (LMCache logs to stderr)."""
    args = _parse(argv)
    from lmcache.v1.platform.devices.cpu.stub_cpu_device import StubCPUDevice, StubStream

    try:
        with ExitStack() as stack:
            # LMCache's vLLM connector asks torch.cuda for streams; on a CPU build of torch they
            # are LMCache's own CPU stand-ins.
            stack.enter_context(mock.patch.object(torch.cuda, "Stream", StubStream))
            stack.enter_context(mock.patch.object(torch.cuda, "stream", StubCPUDevice().stream))
            print(json.dumps(_run(args)), flush=True)
    except BaseException:
        # An engine that failed halfway keeps threads that would hold the process open.
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
