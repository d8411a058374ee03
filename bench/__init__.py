"""Benchmarks run by ``python -m kvx bench NAME``: each module NAME has ``run(argv) -> int``.

In the repository they live in ``bench/``; installed, they are the ``kvx.bench`` package.
"""
