"""Channel benchmark: a request's KV cache from one process's paged cache to another's over
kvx.channel (``python -m kvx bench channel``), on 127.0.0.1.

Llama-3-8B shape (32 layers, 8 KV heads, head 128, bf16), vLLM NHD with block 16 on both sides,
4096 tokens in random blocks of pools twice that size, LLM-like values (as ``bench codec``).
For each transport, in the same pair of processes:

* **raw write**: the transport alone moving a buffer of the request's size (header, the payload
  as one segment in the transport's chunks, the receiver's reply), no gather, no checksum, no
  scatter: the baseline;
* **channel**: ``Sender.send`` to ``handle.wait()`` (gather, CRC-32 and send segment by segment,
  each segment's CRC-32 checked as the next arrives, scatter, reply), one request at a time, and
  four in flight;
* **channel, codec**: the same with ``compress=True`` (kvx.codec, lossy): its rate counts the
  raw KV bytes moved per second, and the table gives the compression ratio.

The "CPU ms" column is the CPU time both processes spent per request (user and system, all
threads, from Linux's /proc): where the transport itself keeps the cores busy, as on loopback,
it bounds the channel's speed (with N cores, a request takes at least CPU ms / N).

The receiver checks that what landed is the sender's data (raw) before timings are reported.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import socket
import statistics
import subprocess
import time
import traceback
import zlib
from typing import Any

try:
    from . import codec as codec_bench
    from . import common
except ImportError:  # run from the repository as `python -m bench.channel`
    import codec as codec_bench  # type: ignore[no-redef]
    import common  # type: ignore[no-redef]

TRANSPORTS = ("torch", "mooncake")
IN_FLIGHT = 4


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvx bench channel", description=__doc__.splitlines()[0]
    )
    common.add_kv_shape_args(parser, repeats=3)
    parser.add_argument("--transport", choices=(*TRANSPORTS, "all"), default="all")
    parser.add_argument("--codec-repeats", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="channel timeout, seconds")
    parser.add_argument(
        "--segment-kib", type=int, default=None, help="the sender's segment_bytes / 1024"
    )
    return parser.parse_args(argv)


def _pool(torch: Any, args: argparse.Namespace, seed: int) -> tuple[list[Any], Any]:
    """An NHD pool ``[2, NB, BS, H, D]`` per layer, and the request's slots in it."""
    blocks = -(-args.tokens * args.pool_factor // args.block_size)
    caches = [
        torch.zeros(2, blocks, args.block_size, args.heads, args.head_size, dtype=torch.bfloat16)
        for _ in range(args.layers)
    ]
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(blocks, generator=g)[: -(-args.tokens // args.block_size)]
    slots = (chosen[:, None] * args.block_size + torch.arange(args.block_size)).flatten()
    return caches, slots[: args.tokens].contiguous()


def _checksum(kvx: Any, torch: Any, caches: list[Any], slots: Any, args: argparse.Namespace) -> int:
    """CRC-32 of the request's KV as gathered from ``caches`` (to compare the two sides)."""
    dense = torch.empty(
        2, args.layers, args.tokens, args.heads * args.head_size, dtype=torch.bfloat16
    )
    kvx.store(caches, dense, slots)
    return zlib.crc32(dense.view(torch.uint8).numpy())


def _options(nbytes: int, args: argparse.Namespace) -> dict[str, Any]:
    # The receiver may hold IN_FLIGHT payloads at once; a mooncake sender grows its pool as
    # needed.
    return {"timeout": args.timeout, "staging_bytes": (IN_FLIGHT + 1) * nbytes}


class _Unchecked:
    """The raw write's receiver looks at no segment."""

    error = None

    def __init__(self, header: Any) -> None:
        pass

    def __call__(self, index: int, data: Any, trailer: bytes) -> None:
        pass


def _publish(out: Any, kind: str, value: Any) -> None:
    out.put((kind, value))


def _receiver(transport: str, addresses: list[str], args: argparse.Namespace, out: Any) -> None:
    try:
        import kvx
        import torch
        from kvx.channel import base, receiver, sender, wire

        torch.set_num_threads(1)
        caches, slots = _pool(torch, args, seed=2)
        nbytes = 2 * args.layers * args.tokens * args.heads * args.head_size * 2
        options = _options(nbytes, args)
        # 1. The transport alone.
        if transport == "torch":
            _publish(out, "address", addresses[0])
        link = base.create(transport, base.RECEIVER, addresses[0], **options)
        if transport != "torch":
            _publish(out, "address", link.address)
        for _ in range(args.repeats + 1):
            frame = link.next_frame(receiver.check_header, _Unchecked)
            link.reply(wire.pack_reply(frame.header.request_id, wire.LANDED))
            frame.release()
        if transport == "torch":
            assert link.next_frame(receiver.check_header, _Unchecked) is None  # the END
        link.drain(args.timeout)  # mooncake: the sender's END, before closing
        link.close()
        # 2. The channel.
        if transport == "torch":
            _publish(out, "address", addresses[1])
        rx = kvx.channel.Receiver(transport, addresses[1], **options)
        if transport != "torch":
            _publish(out, "address", rx.address)
        names = [f"raw{i}" for i in range(sender.DEPTH + args.repeats)]
        names += [f"{kind}{i}" for kind in ("warm", "burst") for i in range(IN_FLIGHT)]
        names += [f"codec{i}" for i in range(args.codec_repeats + 1)]
        handles = {}
        for name in names:
            handles[name] = rx.expect(name, caches, slots)
            if name == "raw0":
                handles[name].wait(args.timeout)
                _publish(out, "landed", _checksum(kvx, torch, caches, slots, args))
        for handle in handles.values():
            handle.wait(args.timeout)
        rx.close()
        _publish(out, "done", None)
    except BaseException:
        _publish(out, "error", traceback.format_exc())


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _cpu_seconds(pids: tuple[int, ...]) -> float:
    """User and system CPU time of processes ``pids`` so far, all their threads (Linux's
    /proc; NaN elsewhere)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class _CpuMeter:
    """CPU time both processes spend from ``start()`` to ``stop(n)``, per each of ``n`` requests.
    The receiver is idle outside the sender's timed calls (it waits for frames), so what it
    spends in between is the work of those requests."""

    def __init__(self, receiver_pid: int) -> None:
        self.pids = (os.getpid(), receiver_pid)
        self._start = 0.0

    def start(self) -> None:
        self._start = _cpu_seconds(self.pids)

    def stop(self, requests: int) -> float:
        return (_cpu_seconds(self.pids) - self._start) / requests


def _sender(transport: str, inbox: Any, args: argparse.Namespace, out: Any) -> None:
    try:
        import kvx
        import torch
        from kvx.channel import base, sender, wire

        torch.set_num_threads(1)
        caches, slots = _pool(torch, args, seed=1)
        channels = args.heads * args.head_size
        dense = codec_bench.llm_like_kv(args.layers, args.tokens, channels, torch.bfloat16, 3)
        kvx.load(caches, dense, slots)
        _publish(out, "progress", "data ready")
        nbytes = dense.numel() * 2
        options = _options(nbytes, args)
        cpu = _CpuMeter(inbox.get(timeout=args.timeout))
        # 1. The transport alone: a buffer of the request's size, as a frame of one segment.
        link = base.create(transport, base.SENDER, inbox.get(timeout=args.timeout), **options)
        buffer = link.staging(nbytes)
        buffer.copy_(dense.view(-1).view(torch.uint8))
        shape = (args.layers, 2, args.tokens, args.heads, args.head_size)
        one = max(wire.MIN_SEGMENT, min(nbytes, wire.MAX_SEGMENT))
        raw_times = []

        def unchecked(index: int) -> bytes:
            return wire.pack_trailer(wire.Trailer(index, 0))

        for i in range(args.repeats + 1):
            header = wire.Header(f"raw{i}", 3, 2, *shape, nbytes, one)

            def write(h: wire.Header = header) -> None:
                link.send_frame(h, wire.pack_header(h), buffer, unchecked)
                wire.parse_reply(link.next_reply())

            if i == 1:  # after the warm-up
                cpu.start()
            raw_times.append(_timed(write))
        raw_cpu = cpu.stop(args.repeats)
        link.end()
        wire.parse_reply(link.next_reply())  # GOODBYE
        link.release_staging(buffer)
        link.close()
        _publish(out, "progress", "raw writes done")
        # 2. The channel.
        if args.segment_kib:
            options["segment_bytes"] = args.segment_kib << 10
        tx = kvx.channel.Sender(transport, inbox.get(timeout=args.timeout), **options)
        # One request per staging buffer first: their pages are touched then.
        channel_times, warm_up = [], sender.DEPTH
        for i in range(warm_up + args.repeats):
            if i == warm_up:
                cpu.start()
            channel_times.append(
                _timed(lambda i=i: tx.send(f"raw{i}", caches, slots).wait(args.timeout))
            )
        channel_cpu = cpu.stop(args.repeats)
        _publish(out, "sent", _checksum(kvx, torch, caches, slots, args))

        def burst(kind: str) -> None:
            handles = [tx.send(f"{kind}{i}", caches, slots) for i in range(IN_FLIGHT)]
            for handle in handles:
                handle.wait(args.timeout)

        burst("warm")  # the receiver's staging for four payloads at once, touched once
        cpu.start()
        burst_time = _timed(lambda: burst("burst"))
        burst_cpu = cpu.stop(IN_FLIGHT)
        _publish(out, "progress", "raw channel done")
        codec_times = [
            _timed(
                lambda i=i: tx.send(f"codec{i}", caches, slots, compress=True).wait(args.timeout)
            )
            for i in range(args.codec_repeats + 1)
        ]
        tx.close()
        compressed = len(kvx.codec.encode(dense))
        _publish(
            out,
            "result",
            {
                "bytes": nbytes,
                "raw": statistics.median(raw_times[1:]),
                "channel": statistics.median(channel_times[warm_up:]),
                "burst": burst_time / IN_FLIGHT,
                "codec": statistics.median(codec_times[1:]),
                "compressed": compressed,
                "cpu": {"raw": raw_cpu, "channel": channel_cpu, "burst": burst_cpu},
            },
        )
    except BaseException:
        _publish(out, "error", traceback.format_exc())


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _one_transport(transport: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs both processes for ``transport``; returns the sender's figures."""
    ctx = multiprocessing.get_context("spawn")
    rx_out, tx_out, inbox = ctx.Queue(), ctx.Queue(), ctx.Queue()
    addresses = [_free_address(), _free_address()] if transport == "torch" else ["127.0.0.1:0"] * 2
    processes = {
        "receiver": ctx.Process(target=_receiver, args=(transport, addresses, args, rx_out)),
        "sender": ctx.Process(target=_sender, args=(transport, inbox, args, tx_out)),
    }
    for process in processes.values():
        process.daemon = True
        process.start()
    inbox.put(processes["receiver"].pid)  # the sender counts its CPU time too
    try:
        result = _drive(transport, args, rx_out, tx_out, inbox)
    finally:
        for process in processes.values():
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    # All was done and checked; a process that then fails to exit cleanly is still a bug.
    for role, process in processes.items():
        if process.exitcode != 0:
            raise RuntimeError(f"the {role} process exited with status {process.exitcode}")
    return result


def _drive(transport: str, args: argparse.Namespace, rx_out: Any, tx_out: Any, inbox: Any) -> dict:
    """Relays the receiver's addresses to the sender, prints progress, checks the landing."""
    landed = sent = result = None
    deadline = time.monotonic() + 20 * args.timeout
    while result is None or landed is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{transport}: the benchmark processes did not finish")
        for source in (rx_out, tx_out):
            try:
                kind, value = source.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "error":
                raise RuntimeError(f"{transport} process failed:\n{value}")
            if kind == "address":
                inbox.put(value)
            elif kind == "progress":
                print(f"  {transport}: {value}", flush=True)
            elif kind == "landed":
                landed = value
            elif kind == "sent":
                sent = value
            elif kind == "result":
                result = value
    if landed != sent:
        raise RuntimeError(f"{transport}: the receiver's KV differs from the sender's")
    print(f"  {transport}: verified: the receiver's KV equals the sender's", flush=True)
    return result


def _rows(transport: str, r: dict[str, Any]) -> list[list[str]]:
    def row(method: str, seconds: float, cpu: float | None = None, extra: str = "") -> list[str]:
        gbps = r["bytes"] / seconds / 1e9
        cpu_ms = "" if cpu is None else f"{cpu * 1e3:.0f}"
        return [transport, method, f"{seconds * 1e3:.0f}", f"{gbps:.2f}",
                f"{r['raw'] / seconds * 100:.0f}%", cpu_ms, extra]  # fmt: skip

    ratio = f"{r['bytes'] / r['compressed']:.2f}x smaller"
    cpu = r["cpu"]
    return [
        row("raw write (baseline)", r["raw"], cpu["raw"]),
        row("channel, 1 request", r["channel"], cpu["channel"]),
        row(f"channel, {IN_FLIGHT} in flight (per request)", r["burst"], cpu["burst"]),
        row("channel, codec (raw KV bytes/s)", r["codec"], extra=ratio),
    ]


def _loopback() -> str:
    """127.0.0.1, and how the loopback device is shaped if someone shaped it (docs/channel.md
    shows how to emulate a network link's rate with tc; the bench never changes it)."""
    try:
        shown = subprocess.run(
            ["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True, timeout=10
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "127.0.0.1"
    if "rate" not in shown:
        return "127.0.0.1"
    return f"127.0.0.1 shaped by tc ({shown[1]} rate {shown[shown.index('rate') + 1]})"


def run(argv: list[str]) -> int:
    args = _parse(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("the channel benchmark needs torch")
        return 2
    common.print_machine()
    transports = TRANSPORTS if args.transport == "all" else (args.transport,)
    mib = 2 * args.layers * args.tokens * args.heads * args.head_size * 2 / (1 << 20)
    import kvx
    from kvx.channel import sender

    segment = (args.segment_kib << 10) if args.segment_kib else sender.SEGMENT_BYTES
    print(
        f"{args.layers} layers x {args.heads} heads x {args.head_size}, bf16, {args.tokens} tokens "
        f"({mib:.0f} MiB per request), vLLM NHD block {args.block_size} on both sides, "
        f"{_loopback()}; segments of {segment >> 10} KiB, CRC-32 by kvx ({kvx.checksum.variant()})"
    )
    rows, status = [], 0
    for transport in transports:
        if transport == "mooncake":
            try:
                from kvx.channel.mooncake import load_engine

                load_engine()
            except ImportError as exc:
                print(f"  mooncake: skipped ({exc})")
                status = status or 2
                continue
        try:
            rows += _rows(transport, _one_transport(transport, args))
        except (RuntimeError, TimeoutError) as exc:
            print(f"  {transport}: FAILED: {exc}")
            status = 1
    headers = ["transport", "case", "ms", "GB/s", "vs raw write", "CPU ms", ""]
    if rows:
        print(common.format_table(headers, rows))
    return 1 if status == 1 else (0 if rows else status)


if __name__ == "__main__":
    import sys

    sys.exit(run(sys.argv[1:]))
