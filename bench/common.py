"""Helpers shared by the benchmarks: timing, a progress bar, a results table."""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

_libc = ctypes.CDLL(None)
_libc.memcpy.restype = ctypes.c_void_p
_libc.memcpy.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def print_machine() -> None:
    """The line every CPU benchmark starts with: figures are only comparable on the same CPU
    (machines of one kind here differ: some have AVX-512, some only AVX2)."""
    import kvx

    print(
        f"CPU: {kvx.cpu_isa()}; kvx kernels: {kvx.cpu_kernels()}; "
        f"kvx threads: {kvx.get_num_threads()}"
    )


def memcpy(dst: int, src: int, nbytes: int) -> None:
    """libc's memcpy between raw addresses: the plain single-call baseline."""
    _libc.memcpy(dst, src, nbytes)


def add_kv_shape_args(parser: argparse.ArgumentParser, repeats: int) -> None:
    """The paged-transfer shape (Llama-3-8B by default) that several benchmarks share."""
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-size", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--pool-factor", type=int, default=2, help="pool capacity / tokens moved")
    parser.add_argument("--repeats", type=int, default=repeats)


def settle(seconds: float = 0.03) -> None:
    """Sleeps long enough for idle worker threads of the previous case to stop spinning (libgomp,
    behind torch's CPU ops, spins for some milliseconds before it sleeps; libkvx's pool for 0.1 ms),
    so that they do not take a core from the next case on a small machine."""
    time.sleep(seconds)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` untimed runs, on a
    settled machine (see :func:`settle`)."""
    settle()
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gpu_median(torch, fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` on the current CUDA/HIP stream, timed by events after a warm-up."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def gpu_modules(bench: str):
    """``(torch, kvx)`` when a GPU benchmark can run; else None, after saying why on stdout."""
    try:
        import torch
    except ImportError:
        print(f"the {bench} benchmark needs torch with CUDA or ROCm")
        return None
    import kvx

    if torch.cuda.is_available() and any(
        b.available for b in kvx.backends() if b.name in ("cuda", "hip")
    ):
        return torch, kvx
    print(
        "no GPU: needs torch.cuda and a libkvx built with -Dcuda=enabled or -Dhip=enabled "
        "(see kvx info)"
    )
    return None


class Progress:
    """A one-line progress bar on stderr (no dependency on tqdm)."""

    def __init__(self, total: int, label: str, stream=sys.stderr) -> None:
        self.total, self.label, self.stream, self.done = total, label, stream, 0
        self._draw("")

    def step(self, what: str) -> None:
        self.done += 1
        self._draw(what)
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()

    def _draw(self, what: str) -> None:
        width = 30
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {what[:40]:<40}")
        self.stream.flush()


@dataclass
class Row:
    """One line of a results table."""

    case: str
    method: str
    seconds: float
    nbytes: int
    baseline_seconds: float | None = None

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9

    @property
    def ratio(self) -> float | None:
        return None if self.baseline_seconds is None else self.baseline_seconds / self.seconds


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    rows = [list(map(str, r)) for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def rows_table(rows: Sequence[Row], baseline: str = "memcpy") -> str:
    """Table of rows: case, method, ms, GB/s, ratio to the case's baseline."""
    return format_table(
        ["case", "method", "ms", "GB/s", f"vs {baseline}"],
        [
            [
                r.case,
                r.method,
                f"{r.seconds * 1e3:.2f}",
                f"{r.gbps:.2f}",
                "-" if r.ratio is None else f"{r.ratio * 100:.0f}%",
            ]
            for r in rows
        ],
    )
