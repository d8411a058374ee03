"""Fork safety of the CPU thread pool: a child made by fork() (multiprocessing's "fork" start
method, as vLLM's workers use) inherits none of the parent's pool threads. It must start with no
workers, build its own on its first multi-threaded call and compute correct results, also when
the parent forked while another of its threads was in the middle of a kvx call.

Each scenario runs in a fresh Python process, so that a deadlocked child cannot hang pytest: a
generous guard kills the whole process group and fails the test. Nothing here depends on timing
otherwise."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DEADLOCK_GUARD_S = 120

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not Path("/proc/self/task").is_dir(),
    reason="needs fork() and Linux /proc",
)

# Shared by the scenarios: a transfer large enough to be split over THREADS threads, a check of
# its result, and what a forked child does.
PRELUDE = f"""
import os, sys, threading, traceback
sys.path.insert(0, {str(TESTS)!r})
import numpy as np
import torch
torch.set_num_threads(1)  # keep torch's own thread pool out of the picture
import kvx
import transfer_cases as tc

THREADS = 4


def case(seed):
    paged, dense, slots, expected = tc.pool_store_case(seed)
    return paged, dense.clone(), slots, expected, dense


def store_is_correct(paged, dense, slots, expected, original):
    dense.copy_(original)  # padding slots (-1) leave these values in place
    kvx.store(paged, dense, slots)
    return tc.bits_equal(dense, expected)


def threads_now():
    return len(os.listdir("/proc/self/task"))


def child_checks(inputs):
    '''Exit status of a forked child: 0 when its calls are correct and ran on its own workers.'''
    try:
        before = threads_now()
        for _ in range(3):
            if not store_is_correct(*inputs):
                print("child: wrong result", file=sys.stderr)
                return 3
        started = threads_now() - before
        if started < THREADS - 1:  # e.g. it ran serially because it inherited a held lock
            print(f"child: {{started}} pool threads started, expected {{THREADS - 1}}",
                  file=sys.stderr)
            return 4
        return 0
    except BaseException:
        traceback.print_exc()
        return 2


def fork_and_check(inputs):
    '''Forks a child that runs child_checks; returns its exit status.'''
    pid = os.fork()
    if pid == 0:
        os._exit(child_checks(inputs))
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


kvx.set_num_threads(THREADS)
"""

AFTER_A_CALL = """
inputs = case(1)
before = threads_now()
assert store_is_correct(*inputs), "parent: wrong result"
assert threads_now() - before >= THREADS - 1, "parent: the pool did not start its workers"
status = fork_and_check(inputs)
assert status == 0, f"child exited with {status}"
assert store_is_correct(*inputs), "parent: wrong result after the fork"
"""

DURING_ANOTHER_THREADS_CALLS = """
FORKS = 10
stop = threading.Event()
calls = [0]
failures = []


def call_in_a_loop():
    inputs = case(2)
    while not stop.is_set():
        if not store_is_correct(*inputs):
            failures.append("parent's second thread: wrong result")
        calls[0] += 1


inputs = case(1)
assert store_is_correct(*inputs), "parent: wrong result"
loop = threading.Thread(target=call_in_a_loop)
loop.start()
try:
    for i in range(FORKS):
        seen = calls[0]
        while calls[0] < seen + 2:  # the loop is running: it is likely inside kvx.store now
            threading.Event().wait(0.001)
        status = fork_and_check(inputs)
        if status != 0:
            failures.append(f"child {i} exited with {status}")
            break
finally:
    stop.set()
    loop.join()
assert not failures, failures
assert store_is_correct(*inputs), "parent: wrong result after the forks"
"""


def _run_guarded(scenario: str) -> None:
    """Runs PRELUDE + scenario in a new Python process (its own process group, so that the
    guard can kill a deadlocked child too) and fails with its output unless it exits 0."""
    process = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + scenario],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=DEADLOCK_GUARD_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"deadlock: no exit within {DEADLOCK_GUARD_S} s\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]


def test_child_builds_its_own_pool_after_a_multi_threaded_call():
    """After a multi-threaded call in the parent, a forked child's multi-threaded calls finish,
    start the child's own workers and give the right bits; the parent's pool still works."""
    _run_guarded(AFTER_A_CALL)


def test_fork_while_another_thread_is_in_a_kvx_call():
    """Forking while a second parent thread runs kvx calls back to back (the pool's locks may be
    held, a job half published): every child still gets a working pool of its own and the right
    bits, and the parent's second thread keeps getting the right bits."""
    _run_guarded(DURING_ANOTHER_THREADS_CALLS)
