"""LMCache's own calls with kvx as its device backend vs with LMCache's torch ops
(``python -m kvx bench lmcache``).

Each call is LMCache's, made the way LMCache makes it, and is timed in two processes: one with
``LMCACHE_DEVICE_BACKEND=kvx_cpu`` (kvx's ops) and one without (LMCache's own torch ops on the
CPU). LMCache picks its ops when it is imported, hence a process each. Llama-3-8B shape (32
layers, 8 KV heads, head 128, bf16, vLLM block 16), 1024 and 4096 tokens:

- transfer: ``device_ops.multi_layer_kv_transfer`` with the arguments LMCache's vLLM connector
  passes, between a paged cache (NHD, the request's blocks at random places in a pool twice its
  size) and LMCache's ``[2, L, T, H*D]`` chunk buffer: store (paged to buffer) and load;
- codec: LMCache's CacheGen serializer and deserializer, one call per 256-token chunk (LMCache's
  chunk size) of Gaussian bf16 KV; each row is the median per chunk times the request's chunks.
  "serde call" times the whole call, "device ops" the part of it inside the device ops it makes
  (``calculate_cdf`` and ``encode_fast_new``; ``decode_fast_prefsum``): the rest is LMCache's own
  torch code (quantization, byte packing), the same with either ops. LMCache's torch codec takes
  seconds per chunk, so it encodes and decodes one chunk per block;
- RoPE: ``device_ops.rotary_embedding_k_fused`` as LMCache's fused positional encoding calls it:
  keys ``[T, H*D]`` viewed ``[T, H, D]``, NeoX pairing, vLLM's bf16 cos/sin cache, positions
  moved by T/2 (a reused chunk placed further on).

Both processes stay up and take turns, block by block (``--blocks``; a few calls of one case per
block), so that load from other processes on the machine falls on both alike; each row is the
median over all blocks' calls, and "kvx speed-up" is LMCache-torch's median over kvx's. Needs
LMCache 0.5.6
importable by this Python: ``pip install 'kvx[lmcache]'``, or LMCache's wheel and the modules it
imports in a folder of their own (``pip install --target DIR``) named with ``--lmcache-site DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import os
import site
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

try:
    from . import common
except ImportError:  # run from the repository as `python -m bench.lmcache`
    import common  # type: ignore[no-redef]

BACKEND_ENV_VAR = "LMCACHE_DEVICE_BACKEND"
BACKENDS = {"torch": None, "kvx": "kvx_cpu"}  # table column -> LMCACHE_DEVICE_BACKEND
# The bars kvx is held to, as speed-ups over LMCache's torch ops.
BARS = {"transfer": 5.0, "codec": 15.0, "RoPE": 3.0}
CHUNK = 256  # LMCache's default chunk size: the serializer's unit of work
MODEL = "meta-llama/Llama-3.1-8B-Instruct"  # picks LMCache's CacheGen bins for Llama 3 8B
ROPE_BASE = 500000.0  # Llama 3's


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvx bench lmcache", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument(
        "--layers", type=int, default=32, help="32: LMCache's CacheGen bins for Llama 3 8B need it"
    )
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-size", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=3, help="turns each process takes per case")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed calls per block (RoPE: 4x as many; LMCache's torch codec: 1)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch's and kvx's CPU threads (0: their defaults)"
    )
    parser.add_argument(
        "--lmcache-site",
        metavar="DIR",
        help="a folder holding LMCache and the modules it imports (pip install --target DIR), "
        "added after this Python's own packages",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the worker: one process, with the ops LMCache chose at import ----------------------------


def _transfer(torch: Any, args: argparse.Namespace, tokens: int) -> dict[str, Callable]:
    """Store and load of one request through ``device_ops.multi_layer_kv_transfer``, with the
    arguments LMCache's vLLM connector derives from the paged cache."""
    import lmcache.lmcache_native as native
    from lmcache import device_ops
    from lmcache.utils import EngineType
    from lmcache.v1.gpu_connector import utils

    L, H, D, BS = args.layers, args.heads, args.head_size, args.block_size
    num_blocks = -(-2 * tokens // BS)
    caches = [torch.randn(2, num_blocks, BS, H, D).to(torch.bfloat16) for _ in range(L)]
    fmt, caches = utils.normalize_kv_and_discover_format(
        caches, EngineType.VLLM, layout_hints={"kv_layout": "NHD"}
    )
    pointers = torch.tensor([c.data_ptr() for c in caches], dtype=torch.int64)
    blocks = torch.randperm(num_blocks)[: -(-tokens // BS)]
    slots = (blocks[:, None] * BS + torch.arange(BS)).flatten()[:tokens].contiguous()
    buffer = torch.empty(2, L, tokens, H * D, dtype=torch.bfloat16)
    stride = utils.resolve_block_stride_and_log_layout(caches, fmt, 0, 0) or 0

    def call(direction: Any) -> Callable[[], None]:
        # The op sees the caches through raw pointers only: the closure keeps them alive.
        return lambda caches=caches: device_ops.multi_layer_kv_transfer(
            buffer,
            pointers,
            slots,
            torch.device("cpu"),
            num_blocks * BS,
            direction,
            fmt,
            block_size=BS,
            head_size=D,
            block_stride_elems=stride,
        )

    return {
        "transfer store": call(native.TransferDirection.D2H),
        "transfer load": call(native.TransferDirection.H2D),
    }


def _memory_obj(torch: Any, kv: Any) -> Any:
    """An LMCache memory object over ``kv`` ([2, L, T, H*D]), as the engine hands to serde."""
    from lmcache.v1.memory_management import (
        MemoryFormat,
        MemoryObjMetadata,
        TensorMemoryObj,
    )

    meta = MemoryObjMetadata(
        shape=kv.shape,
        dtype=kv.dtype,
        address=-1,
        phy_size=kv.numel() * kv.element_size(),
        ref_count=-1,
        fmt=MemoryFormat.KV_2LTD,
    )
    return TensorMemoryObj(raw_data=kv, metadata=meta, parent_allocator=None)


# The device ops LMCache's CacheGen serializer and deserializer call.
CODEC_OPS = {
    "codec encode": ("calculate_cdf", "encode_fast_new"),
    "codec decode": ("decode_fast_prefsum",),
}


class _OpClock:
    """Seconds spent inside some of ``lmcache.device_ops``'s ops since the last :meth:`lap`: the
    ops are wrapped on the ops instance while the clock is in use."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names, self.seconds = names, 0.0

    def __enter__(self) -> _OpClock:
        from lmcache import device_ops

        for name in self.names:
            setattr(device_ops, name, self._timed(getattr(device_ops, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        from lmcache import device_ops

        for name in self.names:
            delattr(device_ops, name)  # the class's op shows through again

    def _timed(self, op: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return op(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed

    def lap(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def _serde(torch: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """LMCache's CacheGen serializer and deserializer for the benchmark's model shape."""
    from lmcache.v1.config import LMCacheEngineConfig
    from lmcache.v1.metadata import LMCacheMetadata
    from lmcache.v1.storage_backend.naive_serde.cachegen_decoder import CacheGenDeserializer
    from lmcache.v1.storage_backend.naive_serde.cachegen_encoder import CacheGenSerializer

    metadata = LMCacheMetadata(
        model_name=MODEL,
        world_size=1,
        local_world_size=1,
        worker_id=0,
        local_worker_id=0,
        kv_dtype=torch.bfloat16,
        kv_shape=(args.layers, 2, CHUNK, args.heads, args.head_size),
    )
    config = LMCacheEngineConfig.from_legacy(chunk_size=CHUNK)
    return CacheGenSerializer(config, metadata), CacheGenDeserializer(config, metadata)


def _timed_block(
    name: str, fn: Callable[[], object], calls: int, warmup: int
) -> Callable[[], dict[str, list[float]]]:
    """One block of a case: ``warmup`` untimed calls of ``fn``, then ``calls`` timed ones."""

    def block() -> dict[str, list[float]]:
        common.settle()
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return {name: times}

    return block


def _chunk_block(
    name: str, call: Callable[[int], object], chunks: int, calls: int
) -> Callable[[], dict[str, list[float]]]:
    """One block of a codec case: ``calls`` calls of ``call(i)``, i counting on from block to
    block; each in seconds per request (times the request's ``chunks``), for the whole call
    and for the part inside LMCache's device ops."""
    turn = itertools.count()

    def block() -> dict[str, list[float]]:
        whole, inside = [], []
        common.settle()
        with _OpClock(CODEC_OPS[name]) as clock:
            for _ in range(calls):
                start = time.perf_counter()
                call(next(turn))
                whole.append((time.perf_counter() - start) * chunks)
                inside.append(clock.lap() * chunks)
        return {f"{name}: serde call": whole, f"{name}: device ops": inside}

    return block


def _codec(
    torch: Any, args: argparse.Namespace, tokens: int, calls: int
) -> dict[str, Callable[[], dict[str, list[float]]]]:
    """LMCache's CacheGen serializer on a request's chunks in turn, and its deserializer on what
    the serializer wrote."""
    serializer, deserializer = _serde(torch, args)
    shape = (2, args.layers, CHUNK, args.heads * args.head_size)
    chunks = [
        _memory_obj(torch, torch.randn(shape)[:, :, : tokens - start].bfloat16())
        for start in range(0, tokens, CHUNK)
    ]
    # The first call compiles LMCache's numba kernels (torch) or starts kvx's pool: untimed.
    deserializer.deserialize(serializer.serialize(_memory_obj(torch, chunks[0].tensor[:, :, :16])))
    encoded: list[Any] = []

    def encode(i: int) -> None:
        encoded.append(serializer.serialize(chunks[i % len(chunks)]))

    def decode(i: int) -> None:
        deserializer.deserialize(encoded[i % len(encoded)])

    return {
        "codec encode": _chunk_block("codec encode", encode, len(chunks), calls),
        "codec decode": _chunk_block("codec decode", decode, len(chunks), calls),
    }


def _rope(torch: Any, args: argparse.Namespace, tokens: int) -> Callable[[], None]:
    """``device_ops.rotary_embedding_k_fused`` on one request's keys, in place."""
    from lmcache import device_ops

    D = args.head_size
    positions = 2 * tokens
    inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, D, 2, dtype=torch.float32) / D)
    freqs = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
    cos_sin_cache = torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(torch.bfloat16)
    keys = torch.randn(tokens, args.heads * D).to(torch.bfloat16)
    old = torch.arange(tokens)
    new = old + tokens // 2
    return lambda: device_ops.rotary_embedding_k_fused(
        old, new, keys.view(tokens, -1, D), D, cos_sin_cache, True
    )


# The cases, in the order each block runs them (a decode needs an encode before it).
CASES = ("RoPE", "transfer store", "transfer load", "codec encode", "codec decode")


def _cases(
    torch: Any, args: argparse.Namespace, tokens: int, kvx_backend: bool
) -> dict[str, Callable[[], dict[str, list[float]]]]:
    """Every case for a request of ``tokens``, set up once; each call of one runs a block."""
    cases = {"RoPE": _timed_block("RoPE", _rope(torch, args, tokens), 4 * args.repeats, 3)}
    for name, fn in _transfer(torch, args, tokens).items():
        cases[name] = _timed_block(name, fn, args.repeats, 1)
    cases.update(_codec(torch, args, tokens, args.repeats if kvx_backend else 1))
    return cases


def _serve(args: argparse.Namespace) -> None:
    """The worker: runs the blocks the parent asks for, one JSON line per request on stdin and
    per reply on the original stdout (whatever else writes to stdout goes to stderr)."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    import lmcache
    import torch

    torch.manual_seed(0)  # both processes build the same inputs
    if args.threads:
        import kvx

        torch.set_num_threads(args.threads)
        kvx.set_num_threads(args.threads)
    ops = type(lmcache.device_ops)
    kvx_backend = ops.__module__.startswith("kvx.")
    reply({"device_ops": f"{ops.__module__}.{ops.__qualname__}"})
    cases, tokens = {}, None
    for line in sys.stdin:
        request = json.loads(line)
        if request["tokens"] != tokens:
            cases = {}  # the last request's buffers go before the next one's are made
            tokens = request["tokens"]
            cases = _cases(torch, args, tokens, kvx_backend)
        reply(cases[request["case"]]())
    fallbacks = []
    if kvx_backend:
        from kvx.lmcache import _fallback

        fallbacks = [list(pair) for pair in _fallback.announced()]
    reply({"fallbacks": fallbacks})


# --- the parent: one worker per backend, taking turns --------------------------------------


class _WorkerFailed(Exception):
    pass


class _Worker:
    """A worker process, with the ops LMCache picks under ``backend`` (None: its torch ops)."""

    def __init__(self, argv: list[str], backend: str | None) -> None:
        env = dict(os.environ, LMCACHE_LOG_LEVEL="WARNING")
        env.pop(BACKEND_ENV_VAR, None)
        if backend is not None:
            env[BACKEND_ENV_VAR] = backend
        self.who = backend or "LMCache's torch ops"
        # The worker's stderr for its whole life (closed in close()); shown if it dies.
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115
        spec = globals().get("__spec__")
        module = ["-m", spec.name] if spec is not None else [__file__]
        self.proc = subprocess.Popen(
            [sys.executable, *module, *argv, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        self.device_ops: str = self._read()["device_ops"]

    def ask(self, tokens: int, case: str) -> dict[str, list[float]]:
        """One block of ``case``: seconds per call, by table row."""
        with contextlib.suppress(BrokenPipeError):  # a dead worker: _read says why
            self.proc.stdin.write(json.dumps({"tokens": tokens, "case": case}) + "\n")
            self.proc.stdin.flush()
        return self._read()

    def finish(self) -> list[list[str]]:
        """Ends the worker; the ops that fell back to LMCache's torch ops through kvx."""
        self.proc.stdin.close()
        fallbacks = self._read()["fallbacks"]
        self.proc.wait()
        return fallbacks

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            raise _WorkerFailed(
                f"the worker on {self.who} failed (exit {self.proc.returncode}):\n"
                + self.log.read()[-3000:]
            )
        return json.loads(line)


def _measure(
    args: argparse.Namespace, workers: dict[str, _Worker]
) -> dict[str, dict[tuple[str, int], list[float]]]:
    """Seconds per call by backend and (row, tokens), the workers taking turns block by block
    (which goes first alternates)."""
    times: dict[str, dict[tuple[str, int], list[float]]] = {c: {} for c in workers}
    progress = common.Progress(len(args.tokens) * args.blocks * len(CASES), "bench lmcache")
    for tokens in args.tokens:
        for block in range(args.blocks):
            for case in CASES:
                turns = list(workers.items())
                for column, worker in turns[:: -1 if block % 2 else 1]:
                    for row, seconds in worker.ask(tokens, case).items():
                        times[column].setdefault((row, tokens), []).extend(seconds)
                progress.step(f"{tokens} tokens: {case}")
    return times


def _table(times: dict[str, dict[tuple[str, int], list[float]]]) -> str:
    rows = []
    for (name, tokens), torch_times in times["torch"].items():
        torch_s = statistics.median(torch_times)
        kvx_s = statistics.median(times["kvx"][name, tokens])
        bar = next(v for k, v in BARS.items() if name.startswith(k))
        ratio = torch_s / kvx_s
        rows.append(
            [
                name,
                str(tokens),
                f"{torch_s * 1e3:.2f}",
                f"{kvx_s * 1e3:.2f}",
                f"{ratio:.1f}x",
                f">= {bar:g}x {'met' if ratio >= bar else 'MISSED'}",
            ]
        )
    headers = ["call", "tokens", "LMCache torch ms", "kvx ms", "kvx speed-up", "bar"]
    return common.format_table(headers, rows)


def run(argv: list[str]) -> int:
    """Runs the benchmark and prints the table; returns a process exit code."""
    args = _parse(argv)
    if args.lmcache_site:
        site.addsitedir(args.lmcache_site)
    if args.worker:
        _serve(args)
        return 0
    if importlib.util.find_spec("lmcache") is None:
        print(
            "the lmcache benchmark needs LMCache 0.5.6 importable: pip install 'kvx[lmcache]', "
            "or pip install --target DIR the LMCache wheel and its imports and pass "
            "--lmcache-site DIR"
        )
        return 2
    import kvx.lmcache

    workers: dict[str, _Worker] = {}
    try:
        for column, backend in BACKENDS.items():
            workers[column] = _Worker(argv, backend)
        times = _measure(args, workers)
        fallbacks = workers["kvx"].finish()
        workers["torch"].finish()
    except _WorkerFailed as failed:
        print(failed, file=sys.stderr)
        return 1
    finally:
        for worker in workers.values():
            worker.close()
    if args.threads:  # the CPU line then gives the workers' thread count
        kvx.set_num_threads(args.threads)
    common.print_machine()
    print(f"LMCache plugin: {kvx.lmcache.plugin_status()}")
    print(
        f"Llama-3-8B shape: {args.layers} layers, {args.heads} KV heads, head {args.head_size}, "
        f"bf16, block {args.block_size}; ops: torch = {workers['torch'].device_ops}, "
        f"kvx = {workers['kvx'].device_ops}"
    )
    print(_table(times))
    print(
        "kvx fell back to LMCache's torch ops for: "
        + ("; ".join(f"{op} ({why})" for op, why in fallbacks) or "nothing")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
