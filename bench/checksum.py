"""CRC-32 benchmark: kvx.checksum.crc32 against zlib.crc32 and memcpy of the same bytes.

On a 16 MiB buffer (a kvx.channel segment, checksummed by each side) and a 1 MiB one; python-isal's
crc32 joins them where it is installed (kvx.channel used it before kvx had its own). One thread;
"vs memcpy" is memcpy's time over the method's, the bar being a checksum about as fast as copying
the bytes. ``KVX_CPU_ISA=baseline`` measures kvx's tables instead of its fastest variant.
"""

from __future__ import annotations

import argparse
import zlib

try:
    from . import common
except ImportError:  # run from the repository as `python -m bench.checksum`
    import common  # type: ignore[no-redef]

SIZES = (16 << 20, 1 << 20)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvx bench checksum", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repeats", type=int, default=21)
    return parser.parse_args(argv)


def _methods(kvx) -> list[tuple[str, object]]:
    """(name, function of the buffer) of each CRC-32 measured."""
    methods = [
        (f"kvx.checksum.crc32 ({kvx.checksum.variant()})", kvx.checksum.crc32),
        ("zlib.crc32", zlib.crc32),
    ]
    try:
        from isal.isal_zlib import crc32 as isal_crc32
    except ImportError:
        return methods
    return [*methods, ("isal crc32", isal_crc32)]


def _case(np, kvx, size: int, repeats: int) -> list[common.Row]:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    copy = np.empty_like(data)
    case = f"{size >> 20} MiB"
    memcpy = common.median_seconds(
        lambda: common.memcpy(copy.ctypes.data, data.ctypes.data, size), repeats
    )
    rows = []
    for name, crc32 in _methods(kvx):
        if crc32(data) != zlib.crc32(data):
            raise AssertionError(f"{name} differs from zlib.crc32")
        seconds = common.median_seconds(lambda f=crc32: f(data), repeats)
        rows.append(common.Row(case, name, seconds, size, memcpy))
    rows.append(common.Row(case, "memcpy (same bytes)", memcpy, size, memcpy))
    return rows


def run(argv: list[str]) -> int:
    """Runs the benchmark and prints the table; returns a process exit code."""
    args = _parse(argv)
    import kvx
    import numpy as np

    rows = [row for size in SIZES for row in _case(np, kvx, size, args.repeats)]
    common.print_machine()
    print(common.rows_table(rows))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(run(sys.argv[1:]))
