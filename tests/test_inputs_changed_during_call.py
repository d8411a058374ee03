"""Index arrays that another thread changes during the call. cffi releases the GIL around every
library call, so another thread can rewrite slot_mapping or the positions while the library works
on them. The promise that an out-of-range slot or position never touches memory must hold
anyway: each value is read once, checked, and only the checked copy used.

Each case runs in a child process (a wild write or read is a crash there, not a dead pytest): a
writer thread flips one entry between a valid value and a huge one while the main thread calls
the library many times. Every call must either succeed with exactly the result of the valid
value or raise kvx.InvalidArgumentError having modified nothing. Which of the two happens, and
how often, depends on scheduling; the verdict does not.

The writer is a native thread (a few lines of C built for the test): a Python thread would need
the GIL for every write and would barely run while the library works. It flips the entry
continuously, and each call waits until it has run since the last one, so that a writer starved
of CPU time (a busy machine) does not leave the entry unchanged for a whole run."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from machine import STRICT_C11

FLIPPER_C = Path(__file__).resolve().parent / "c" / "entry_flipper.c"

CHILD_COMMON = """
import ctypes, os, sys, time
import numpy as np
import torch
import kvx

CALLS = 200
# One thread for the library and one for torch (whose idle OpenMP workers spin for a while
# after each parallel op): the calls' work stays on the calling thread. Where there are two
# CPUs, the writer gets one and this thread the other: sharing a core, the writer would run only
# when this thread is preempted, rarely inside the short time between two reads of the entry.
kvx.set_num_threads(1)
torch.set_num_threads(1)
CPUS = sorted(os.sched_getaffinity(0))
flipper = ctypes.CDLL(sys.argv[2])
flipper.flipper_start.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                                  ctypes.c_int]
flipper.flipper_flips.restype = ctypes.c_longlong

def wait_for_writer(seen):
    # Until the writer has run since `seen` flips (a writer starved of CPU time changes nothing
    # while the library reads); gives up after 10 s, which only makes the check weaker.
    deadline = time.monotonic() + 10
    while flipper.flipper_flips() < seen + 1000 and time.monotonic() < deadline:
        time.sleep(0)
    return flipper.flipper_flips()

def hammer(array, index, good, bad, call, check_success, check_rejected):
    # Calls `call` CALLS times while a native thread flips array[index] between good and bad.
    assert array.flags.c_contiguous and array[index] == good
    entry = array.ctypes.data + index * array.itemsize
    assert flipper.flipper_start(entry, array.itemsize, good, bad,
                                 CPUS[1] if len(CPUS) > 1 else -1) == 0
    if len(CPUS) > 1:
        os.sched_setaffinity(0, {CPUS[0]})  # this thread only (Linux)
    outcomes = {"ok": 0, "rejected": 0}
    seen = 0
    try:
        for _ in range(CALLS):
            seen = wait_for_writer(seen)
            try:
                call()
            except kvx.InvalidArgumentError as error:
                assert str(bad) in str(error), str(error)
                check_rejected()
                outcomes["rejected"] += 1
            else:
                check_success()
                outcomes["ok"] += 1
    finally:
        flipper.flipper_stop()
    print(outcomes)
"""

# slot_mapping: one entry per token of a long batch (a million tokens, most without a slot: -1),
# so the library spends about a millisecond reading entries between its reads of the first one,
# the one that changes: long enough for the writer to get the core even when the two threads
# share one (a busy machine), where a short window would see one value twice.
TRANSFER = """
LAYERS, BLOCKS, BLOCK, HEADS, HEAD = 1, 64, 16, 1, 2
CAPACITY, TOKENS = BLOCKS * BLOCK, 1 << 20
gen = torch.Generator().manual_seed(1)
caches = [torch.randn(2, BLOCKS, BLOCK, HEADS, HEAD, generator=gen) for _ in range(LAYERS)]
slots = torch.full((TOKENS,), -1, dtype=torch.int64)
slots[torch.randperm(TOKENS, generator=gen)[:CAPACITY]] = torch.randperm(CAPACITY, generator=gen)
slots[0] = 5
dense = torch.randn(2, LAYERS, TOKENS, HEADS * HEAD, generator=gen)
BAD = 1 << 40  # 2^40 slots of 8 bytes: far outside any mapping

if sys.argv[1] == "store":
    expected = torch.full_like(dense, 7.0)
    kvx.reference.transfer(caches, expected, slots, direction="store")
    sentinel = torch.full_like(dense, 7.0)

    def call():
        dense.copy_(sentinel)
        kvx.store(caches, dense, slots)

    def check_success():
        assert torch.equal(dense, expected), "store copied wrong data"

    def check_rejected():
        assert torch.equal(dense, sentinel), "a rejected store wrote to dense"
else:
    original = [c.clone() for c in caches]
    expected = [c.clone() for c in caches]
    kvx.reference.transfer(expected, dense, slots, direction="load")

    def call():
        for c, o in zip(caches, original):
            c.copy_(o)
        kvx.load(caches, dense, slots)

    def check_success():
        assert all(torch.equal(c, e) for c, e in zip(caches, expected)), "load wrote wrong data"

    def check_rejected():
        assert all(torch.equal(c, o) for c, o in zip(caches, original)), "a rejected load wrote"

hammer(slots.numpy(), 0, 5, BAD, call, check_success, check_rejected)
"""

# The last token's position changes: the library reads it last when checking and last when
# rotating, so the whole rotation (a millisecond or two) lies between the two reads.
ROPE = """
TOKENS, HEADS, HEAD, MAX_POSITION = 4096, 4, 128, 4096
cache = kvx.rope.build_cos_sin_cache(HEAD, MAX_POSITION, 10000.0)
gen = torch.Generator().manual_seed(2)
dtype = torch.int64 if sys.argv[1] == "rerotate_keys" else torch.int32
positions = torch.randint(0, MAX_POSITION, (TOKENS,), generator=gen, dtype=dtype)
old = torch.randint(0, MAX_POSITION, (TOKENS,), generator=gen, dtype=dtype)
good = int(positions[-1])
# rows of 512 bytes: far outside any mapping either way
BAD = (1 << 40) if dtype == torch.int64 else (1 << 30)
original = torch.randn(TOKENS, HEADS, HEAD, generator=gen)
keys = original.clone()
query = original.clone()

if sys.argv[1] == "rerotate_keys":
    expected = kvx.rope.rerotate_keys(original.clone(), old, positions.clone(), cache)

    def call():
        keys.copy_(original)
        kvx.rope.rerotate_keys(keys, old, positions, cache)

    def check_success():
        assert torch.equal(keys, expected), "rerotate_keys computed wrong keys"

    def check_rejected():
        assert torch.equal(keys, original), "a rejected rerotate_keys modified keys"
else:
    expected_q, expected_k = kvx.rope.apply_rotary(positions.clone(), original.clone(),
                                                   original.clone(), cache)

    def call():
        query.copy_(original)
        keys.copy_(original)
        kvx.rope.apply_rotary(positions, query, keys, cache)

    def check_success():
        assert torch.equal(query, expected_q) and torch.equal(keys, expected_k), (
            "apply_rotary: wrong result")

    def check_rejected():
        assert torch.equal(query, original) and torch.equal(keys, original), (
            "a rejected apply_rotary wrote")

hammer(positions.numpy(), TOKENS - 1, good, BAD, call, check_success, check_rejected)
"""


@pytest.fixture(scope="module")
def flipper(tmp_path_factory) -> Path:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("needs a C compiler for the writer thread")
    tmp = tmp_path_factory.mktemp("flipper")
    library = tmp / "libflipper.so"
    subprocess.run(
        [
            cc,
            *STRICT_C11,
            "-O1",
            "-shared",
            "-fPIC",
            "-pthread",
            str(FLIPPER_C),
            "-o",
            str(library),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return library


def _run(script: str, operation: str, flipper: Path) -> None:
    child = textwrap.dedent(CHILD_COMMON) + textwrap.dedent(script)
    result = subprocess.run(
        [sys.executable, "-c", child, operation, str(flipper)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    crashed = f"crashed with signal {-result.returncode}" if result.returncode < 0 else "failed"
    assert result.returncode == 0, (
        f"the child {crashed}:\n" + result.stdout[-2000:] + result.stderr[-4000:]
    )
    print(operation, result.stdout.strip())  # how the calls went, for `pytest -s`


@pytest.mark.parametrize("operation", ["store", "load"])
def test_slot_mapping_changed_during_transfer(operation, flipper):
    _run(TRANSFER, operation, flipper)


@pytest.mark.parametrize("operation", ["rerotate_keys", "apply_rotary"])
def test_positions_changed_during_rope(operation, flipper):
    _run(ROPE, operation, flipper)
