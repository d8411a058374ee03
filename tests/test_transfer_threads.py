"""Thread count and re-entrancy: results never depend on how many threads work, and calls from
several Python threads at once (cffi releases the GIL) each get their own correct result."""

import shutil
import subprocess
from pathlib import Path

import kvx
import pytest
import transfer_cases as tc
from concurrency import failures_in_threads
from machine import STRICT_C11

REPO = Path(__file__).resolve().parent.parent
DEADLOCK_GUARD_S = 300  # the driver's own guard gives up on a job after 60 s


@pytest.fixture
def restore_threads():
    yield
    kvx.set_num_threads(0)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_result_independent_of_thread_count(threads, restore_threads):
    kvx.set_num_threads(threads)
    assert kvx.get_num_threads() == threads
    paged, dense, slots, expected = tc.pool_store_case(threads)
    kvx.store(paged, dense, slots)
    assert tc.bits_equal(dense, expected)


def test_set_num_threads_rejects_out_of_range(restore_threads):
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"num_threads: expected 0 \(default\) to 256, got 300"
    ):
        kvx.set_num_threads(300)


def test_concurrent_calls_from_python_threads():
    cases = [tc.pool_store_case(100 + i) for i in range(6)]

    def work(case):
        paged, dense, slots, expected = case
        for _ in range(5):
            kvx.store(paged, dense, slots)
            assert tc.bits_equal(dense, expected), "mismatch"

    assert failures_in_threads(work, cases) == []


def test_pool_survives_count_changes_and_idle_gaps(restore_threads):
    """Workers spin for a while after each job, then sleep: calls back to back (spinning
    workers), after an idle gap (sleeping workers) and after the count is lowered all give the
    same result."""
    import time

    paged, dense, slots, expected = tc.pool_store_case(7)
    before = dense.clone()  # padding slots leave these values in place
    for threads, gap in [(8, 0.0), (2, 0.0), (2, 0.005), (1, 0.0), (4, 0.005), (3, 0.0)]:
        kvx.set_num_threads(threads)
        for _ in range(3):
            dense.copy_(before)
            kvx.store(paged, dense, slots)
            assert tc.bits_equal(dense, expected), (threads, gap)
            time.sleep(gap)


@pytest.fixture(scope="module")
def thread_pool_driver(tmp_path_factory) -> Path:
    """tests/c/thread_pool_driver.c built with the pool's sources (not the library),
    warning-free."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("thread_pool") / "thread_pool_driver"
    core = REPO / "libkvx" / "src" / "core"
    sources = [
        REPO / "tests" / "c" / "thread_pool_driver.c",
        core / "thread_pool.c",
        core / "errors.c",
    ]
    build = subprocess.run(
        [
            cc,
            *STRICT_C11,
            "-O1",
            "-D_GNU_SOURCE",
            "-pthread",
            f"-I{REPO / 'libkvx' / 'include'}",
            f"-I{core}",
            *map(str, sources),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    return out


def test_lowered_thread_count_is_honoured(thread_pool_driver):
    """After the thread count is lowered, a job runs on exactly that many threads (the caller
    and count - 1 workers, though more workers exist and the last job used them); raised again,
    it runs on more. The driver counts the distinct threads that run items, and each item waits
    until the expected number have arrived, so this holds whatever the scheduler does."""
    counts = [8, 2, 1, 4, 8, 3, 2, 8, 1, 2] * 5
    run = subprocess.run(
        [str(thread_pool_driver), *map(str, counts)],
        capture_output=True,
        text=True,
        timeout=DEADLOCK_GUARD_S,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
