"""Batched copy benchmark: kvx.copy_batch vs a Python loop of ctypes.memmove vs one torch copy.

LMCache's ``batched_memcpy(src_ptrs, dst_ptrs, sizes)`` shapes, on the CPU: many small ranges
(4096 x 4 KiB), medium ones (256 x 64 KiB) and a few large ones (8 x 32 MiB). Sources are read in
order from one buffer, destinations are scattered over another in random order (a gather into
a pool's free slots). kvx gets the addresses as Python lists of ints, as LMCache passes them (the
conversion is part of its time). Baselines, measured in the same run: the Python loop LMCache's
fallback runs (one ctypes.memmove per range) and one torch ``copy_`` of the same total bytes,
contiguous (what the bytes cost when moved in one piece with torch's threads). "threads working"
counts the threads that each did at least a tenth of kvx's CPU work (Linux).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time

try:
    from . import common
except ImportError:  # run from the repository as `python -m bench.copy`
    import common  # type: ignore[no-redef]

CASES = ((4096, 4 << 10), (256, 64 << 10), (8, 32 << 20))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvx bench copy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="kvx CPU threads (0 = default)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every case's count by this"
    )
    return parser.parse_args(argv)


def _thread_ticks() -> dict[str, int] | None:
    """CPU clock ticks (user + system) of each thread of this process; None off Linux."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    ticks = {}
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        ticks[task] = int(fields[11]) + int(fields[12])
    return ticks


def _threads_working(fn, seconds: float = 0.5) -> str:
    """How many threads each did at least a tenth of the CPU work while ``fn`` ran over and over
    for ``seconds``: the threads kvx spread the copies over, whatever else the machine runs (a
    CPU time over wall time ratio would shrink on a busy machine)."""
    before = _thread_ticks()
    if before is None:
        return "-"
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        fn()
    after = _thread_ticks() or {}
    work = [after[t] - before.get(t, 0) for t in after]
    total = sum(work)
    return str(sum(w * 10 >= total for w in work)) if total >= 10 else "?"


def _case(np, torch, kvx, count: int, size: int, args, rows: list, rng) -> None:
    total = count * size
    src = np.frombuffer(rng.bytes(total), dtype=np.uint8).copy()
    dst = np.zeros(total, dtype=np.uint8)
    slots = rng.permutation(count)
    src_ptrs = [src.ctypes.data + i * size for i in range(count)]
    dst_ptrs = [dst.ctypes.data + int(s) * size for s in slots]
    sizes = [size] * count

    def kvx_copy():
        kvx.copy_batch(src_ptrs, dst_ptrs, sizes)

    def memmove_loop():
        memmove = ctypes.memmove
        for s, d, n in zip(src_ptrs, dst_ptrs, sizes, strict=True):
            memmove(d, s, n)

    kvx_copy()
    if not np.array_equal(dst.reshape(count, size)[slots], src.reshape(count, size)):
        raise AssertionError("kvx.copy_batch copied the wrong bytes")
    case = f"{count} x {size >> 10} KiB"
    loop = common.median_seconds(memmove_loop, args.repeats)
    mine = common.median_seconds(kvx_copy, args.repeats)
    one = None
    if torch is not None:
        t_src, t_dst = torch.from_numpy(src), torch.from_numpy(dst)
        one = common.median_seconds(lambda: t_dst.copy_(t_src), args.repeats)
    threads = _threads_working(kvx_copy)
    rows.append((case, "kvx.copy_batch", mine, total, loop, one, threads))
    rows.append((case, "Python loop of ctypes.memmove", loop, total, loop, one, None))
    if one is not None:
        rows.append((case, "torch copy_ of the total (one piece)", one, total, loop, one, None))


def run(argv: list[str]) -> int:
    """Runs the benchmark and prints the table; returns a process exit code."""
    args = _parse(argv)
    import kvx
    import numpy as np

    try:
        import torch
    except ImportError:
        torch = None
    kvx.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows: list = []
    progress = common.Progress(len(CASES), "bench copy")
    for count, size in CASES:
        count = max(1, int(count * args.scale))
        _case(np, torch, kvx, count, size, args, rows, rng)
        progress.step(f"{count} x {size >> 10} KiB")
    common.print_machine()

    def ratio(baseline, seconds):
        return "-" if baseline is None else f"{baseline / seconds:.2f}x"

    print(
        common.format_table(
            ["case", "method", "ms", "GB/s", "speed vs loop", "speed vs torch", "threads working"],
            [
                [
                    case,
                    method,
                    f"{seconds * 1e3:.3f}",
                    f"{total / seconds / 1e9:.2f}",
                    ratio(loop, seconds),
                    ratio(one, seconds),
                    threads or "",
                ]
                for case, method, seconds, total, loop, one, threads in rows
            ],
        )
    )
    if torch is None:
        print("(torch is not installed: no torch baseline)")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(run(sys.argv[1:]))
