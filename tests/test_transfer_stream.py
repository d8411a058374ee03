"""The CPU transfer's streaming copy (non-temporal stores, libkvx/src/cpu/stream_copy.c) gives
kvx.reference's bytes. It runs only for transfers larger than the last-level cache, so a fresh
process lowers that threshold with KVX_CPU_STREAM_THRESHOLD=0 and runs every transfer case of
tests/test_conformance.py, plus cases whose pieces (head vectors, token rows, block runs) are
long enough to stream and have odd lengths and addresses, in both directions and every layout,
under each copy variant (AVX2 and SSE2 on x86-64; memcpy elsewhere)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from machine import cpu_flags

TESTS = Path(__file__).resolve().parent

_SCRIPT = """
import kvx, torch
import conformance_cases as cc
import transfer_cases as tc
from kvx import layouts

# Pieces of at least 256 bytes (the streaming copy's minimum) with odd lengths: uint8 heads of
# 263 bytes (rows of 789, block runs of 5 rows), float16 heads of 262; odd dense row spacing and
# padded paged axes put their starts at every offset from a vector boundary.
ODD = [
    ("u8-head263", tc.Geometry(2, 11, 5, 3, 263), torch.uint8, {}),
    ("u8-head263-gap", tc.Geometry(2, 11, 5, 3, 263), torch.uint8, {"token_gap": 7}),
    ("u8-head263-pad-dim", tc.Geometry(2, 11, 5, 3, 263), torch.uint8, {"pad_axis": "dim"}),
    ("f16-head131-pad-head", tc.Geometry(2, 9, 4, 2, 131), torch.float16, {"pad_axis": "head"}),
    ("bf16-head128-blocks16", tc.Geometry(2, 12, 16, 4, 128), torch.bfloat16, {}),
]
cases = list(cc.TRANSFER_CASES)
for layout in sorted(layouts.PAGED_LAYOUTS):
    for name, g, dtype, kw in ODD:
        for direction in ("store", "load"):
            tokens = g.blocks * g.block_size // 2 + 3
            cases.append(
                cc.TransferCase(
                    "stream", f"{layout}-{name}-{direction}", layout, g, dtype, tokens, direction,
                    9, **kw,
                )
            )
bad = [
    f"{cc.case_id(c)}: {diff}"
    for c in cases
    if (diff := cc.first_difference(cc.expected_transfer(c), cc.cpu_transfer(c)))
]
print(kvx.cpu_kernels())
print(len(cases))
print("\\n".join(bad))
"""


def _variants() -> list[tuple[str, str]]:
    """(KVX_CPU_ISA, the copy it runs) for each copy variant this CPU has."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return [("", "memcpy")]
    runs = [("baseline", "stream-sse2")]
    if "avx2" in cpu_flags():
        runs.append(("", "stream-avx2"))
    return runs


@pytest.mark.parametrize("isa,copy", _variants())
def test_streaming_copy_gives_the_reference_bytes(isa, copy):
    env = dict(os.environ, KVX_CPU_ISA=isa, KVX_CPU_STREAM_THRESHOLD="0")
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr == ""  # the setting was taken without a warning
    kernels, count, *bad = done.stdout.split("\n")
    assert f" copy={copy} " in f"{kernels} "
    assert int(count) > 500
    assert [line for line in bad if line] == []


@pytest.mark.parametrize("value", ["abc", "-1", "12MiB", " "])
def test_refused_stream_threshold_warns_once_and_uses_the_default(value):
    script = (
        "import kvx, torch\n"
        "for _ in range(2):\n"
        "    kvx.store([torch.zeros(2, 4, 16, 2, 8)], torch.zeros(2, 1, 3, 16), "
        "torch.tensor([0, 1, 2]))\n"
    )
    env = dict(os.environ, KVX_CPU_STREAM_THRESHOLD=value)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    warnings = done.stderr.splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith(
        f'kvx: KVX_CPU_STREAM_THRESHOLD="{value}" ignored (expected a byte count, 0 or more); '
        "using the default, "
    )
    assert warnings[0].endswith(" bytes")
