"""Thread count and re-entrancy: results never depend on how many threads work, and calls from
several Python threads at once (cffi releases the GIL) each get their own correct result."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import kvx
import transfer_cases as tc

G = tc.Geometry(layers=4, blocks=64, block_size=16, heads=4, head_size=64)


def _case(seed):
    gen = torch.Generator().manual_seed(seed)
    paged = tc.make_paged("vllm_nhd", G, torch.bfloat16, gen)
    dense = tc.make_dense("vllm_nhd", G, 700, torch.bfloat16, gen)
    slots = tc.make_slots(G.blocks * G.block_size, G.block_size, 700, np.random.default_rng(seed))
    expected = dense.clone()
    kvx.reference.transfer(paged, expected, slots, direction="store")
    return paged, dense, slots, expected


@pytest.fixture
def restore_threads():
    yield
    kvx.set_num_threads(0)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_result_independent_of_thread_count(threads, restore_threads):
    kvx.set_num_threads(threads)
    assert kvx.get_num_threads() == threads
    paged, dense, slots, expected = _case(threads)
    kvx.store(paged, dense, slots)
    assert tc.bits_equal(dense, expected)


def test_set_num_threads_rejects_out_of_range(restore_threads):
    with pytest.raises(kvx.InvalidArgumentError, match=r"num_threads: expected 0 \(default\) to 256, got 300"):
        kvx.set_num_threads(300)


def test_concurrent_calls_from_python_threads():
    cases = [_case(100 + i) for i in range(6)]
    errors = []

    def work(case):
        paged, dense, slots, expected = case
        try:
            for _ in range(5):
                kvx.store(paged, dense, slots)
                if not tc.bits_equal(dense, expected):
                    errors.append("mismatch")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(case,)) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_pool_survives_count_changes_and_idle_gaps(restore_threads):
    """Workers spin for a while after each job, then sleep: calls back to back (spinning
    workers), after an idle gap (sleeping workers) and after the count is lowered all give the
    same result."""
    import time

    paged, dense, slots, expected = _case(7)
    before = dense.clone()  # padding slots leave these values in place
    for threads, gap in [(8, 0.0), (2, 0.0), (2, 0.005), (1, 0.0), (4, 0.005), (3, 0.0)]:
        kvx.set_num_threads(threads)
        for _ in range(3):
            dense.copy_(before)
            kvx.store(paged, dense, slots)
            assert tc.bits_equal(dense, expected), (threads, gap)
            time.sleep(gap)


def _cpu_ticks_by_thread() -> dict[int, int]:
    """user + system clock ticks of each thread of this process (Linux /proc)."""
    ticks = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        ticks[int(task.name)] = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def _busy_threads_while(work, seconds: float) -> int:
    """How many threads other than this one used at least 5 ticks while `work` ran repeatedly."""
    before = _cpu_ticks_by_thread()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        work()
    after = _cpu_ticks_by_thread()
    me = threading.get_native_id()
    return sum(1 for tid, t in after.items() if tid != me and t - before.get(tid, 0) >= 5)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_lowered_thread_count_is_honoured(restore_threads):
    """After 8 threads have worked, a lower count uses exactly that many: the surplus workers
    neither take part nor spin (counted by each thread's CPU time)."""
    paged, dense, slots, _ = _case(9)
    kvx.set_num_threads(8)
    kvx.store(paged, dense, slots)  # starts 7 workers
    for threads in (2, 1):  # no more than this machine's 2 cores, so that every helper gets time
        kvx.set_num_threads(threads)
        busy = _busy_threads_while(lambda: kvx.store(paged, dense, slots), 0.6)
        assert busy == threads - 1, f"{busy} worker threads busy with kvx.set_num_threads({threads})"
