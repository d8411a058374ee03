"""`python -m kvx bench channel` runs end to end on a small shape: two processes per transport,
the landing verified, the table printed (its figures are not checked: timings are the
benchmark's business, not the tests')."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")


def test_channel_benchmark_runs_verifies_and_prints_its_table() -> None:
    # An installed kvx carries the benchmarks as kvx.bench; a source tree has them in bench/.
    installed = importlib.util.find_spec("kvx.bench") is not None
    command = ["-m", "kvx", "bench", "channel"] if installed else ["-m", "bench.channel"]
    result = subprocess.run(
        [sys.executable, *command, "--layers", "2", "--tokens", "64", "--repeats", "1",
         "--codec-repeats", "1", "--timeout", "60"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert result.returncode in (0, 2), result.stdout + result.stderr  # 2: mooncake cannot load
    out = result.stdout
    assert out.startswith("CPU: ")  # the ISA line, as every CPU benchmark
    assert "torch: verified: the receiver's KV equals the sender's" in out
    for case in ("raw write (baseline)", "channel, 1 request", "channel, codec"):
        assert f"torch      {case}" in out, out
    if result.returncode == 0:
        assert "mooncake: verified" in out
