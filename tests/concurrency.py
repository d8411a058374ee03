"""Running one piece of test work on several Python threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


def failures_in_threads(work: Callable[[Any], None], cases: Sequence[Any]) -> list[str]:
    """Runs ``work(case)`` for every case, each on a thread of its own, all at once; returns the
    ``repr`` of every exception they raised (an empty list: all went through)."""
    failures: list[str] = []

    def run(case: Any) -> None:
        try:
            work(case)
        except Exception as exc:  # collected, so one thread's failure does not hide the others
            failures.append(repr(exc))

    threads = [threading.Thread(target=run, args=(case,)) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures
