"""Fuzz harness for the codec container decoder (kvx.codec.decode -> kvx_codec_decompress).

Two engines, same target:

- atheris (coverage-guided, libFuzzer-style) when installed:
  ``python tests/fuzz/fuzz_codec.py -atheris [libFuzzer flags]``;
- otherwise a built-in structure-aware mutation fuzzer (no dependency):
  ``python tests/fuzz/fuzz_codec.py --seconds 60 --seed 1``. It mutates valid containers (bit
  flips, byte and integer-field overwrites, insertions, deletions, truncations, splices) and,
  half of the time, recomputes the checksums so that the parser's deeper checks and the range
  decoder see the damage too.

The target accepts kvx.CorruptInputError (and InvalidArgumentError for a numpy-unrepresentable
dtype); anything else, a crash, a hang (run it under a timeout), or a decoded tensor whose shape
or values disagree with its header is a finding. tests/fuzz/test_fuzz_codec.py runs a short
bounded session in CI; KVX_FUZZ_SECONDS makes it longer.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib

import kvx
import numpy as np
from kvx import codec
from kvx import reference_codec as ref


def target(data: bytes) -> None:
    """Decodes data; raises AssertionError on any behaviour other than a clean error or a
    well-formed tensor."""
    try:
        out = codec.decode(data)
    except (kvx.CorruptInputError, kvx.InvalidArgumentError):
        return
    meta = codec.inspect(data)
    assert tuple(out.shape) == meta.shape, (tuple(out.shape), meta.shape)
    values = out.float() if hasattr(out, "float") else out.astype(np.float32)
    assert bool(np.isfinite(np.asarray(values)).all()), "non-finite values decoded"


def seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for shape, bins, chunk, dtype, method in [
        ((2, 2, 9, 5), ([16, 8], [6, 32]), 4, np.float32, "cachegen"),
        ((2, 1, 20, 3), ([256], [4]), 7, np.float16, "cachegen"),
        ((1, 3, 6, 4), ([32, 16, 16], None), 6, np.float32, "cachegen"),
        ((2, 1, 0, 4), ([16], [16]), 2, np.float32, "cachegen"),
        ((2, 2, 9, 2, 4), ([12, 10], [6, 64]), 4, np.float32, "rotated"),
        ((2, 1, 20, 8), ([256], [4]), 7, np.float16, "rotated"),
        ((2, 1, 40, 16), ([12], [40]), 40, np.float32, "rotated"),  # Gaussian stream models
    ]:
        kv = (rng.standard_normal(shape) * 4).astype(dtype)
        out.append(
            codec.encode(
                kv, key_bins=bins[0], value_bins=bins[1], chunk_tokens=chunk, method=method
            )
        )
    return out


INTERESTING = [
    0,
    1,
    2,
    3,
    4,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0xFFFFFFFF,
    2**32,
    2**63 - 1,
    2**64 - 1,
]


def fix_crcs(data: bytearray, layout: dict) -> bytearray:
    hdr = ref.HEADER_SIZE + 2 * len(layout["bins"])
    if len(data) >= hdr + 4:
        data[hdr : hdr + 4] = struct.pack("<I", zlib.crc32(bytes(data[:hdr])))
    for c in layout["chunks"]:
        if len(data) >= c["end"] + 4:
            data[c["end"] : c["end"] + 4] = struct.pack(
                "<I", zlib.crc32(bytes(data[c["start"] : c["end"]]))
            )
    return data


def mutate(rng: np.random.Generator, seed: bytes, others: list[bytes]) -> bytes:
    data = bytearray(seed)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 7))
        n = len(data)
        if op == 0 and n:  # bit flip
            i = int(rng.integers(0, n))
            data[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1 and n:  # random byte
            data[int(rng.integers(0, n))] = int(rng.integers(0, 256))
        elif op == 2 and n >= 8:  # integer field overwrite, any width
            size = int(rng.choice([1, 2, 4, 8]))
            i = int(rng.integers(0, n - size + 1))
            value = int(rng.choice(INTERESTING)) % (1 << (8 * size))
            data[i : i + size] = value.to_bytes(size, "little")
        elif op == 3:  # truncate
            del data[int(rng.integers(0, n + 1)) :]
        elif op == 4:  # insert
            i = int(rng.integers(0, n + 1))
            data[i:i] = rng.integers(
                0, 256, size=int(rng.integers(1, 16)), dtype=np.uint8
            ).tobytes()
        elif op == 5 and n:  # delete a run
            i = int(rng.integers(0, n))
            del data[i : i + int(rng.integers(1, 16))]
        else:  # splice with another seed
            other = others[int(rng.integers(0, len(others)))]
            i = int(rng.integers(0, min(n, len(other)) + 1))
            data[i:] = other[i:]
    return bytes(data)


def run_builtin(seconds: float, seed: int, max_iterations: int | None = None) -> int:
    rng = np.random.default_rng(seed)
    corpus = seeds()
    layouts = [ref.parse_container(b) for b in corpus]
    for b in corpus:
        target(b)
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline and (max_iterations is None or count < max_iterations):
        k = int(rng.integers(0, len(corpus)))
        data = mutate(rng, corpus[k], corpus)
        if rng.random() < 0.5:
            data = bytes(fix_crcs(bytearray(data), layouts[k]))
        try:
            target(data)
        except AssertionError:
            sys.stderr.write(f"finding after {count} inputs: {data.hex()}\n")
            raise
        count += 1
    return count


def main(argv: list[str]) -> int:
    if argv and argv[0] == "-atheris":
        import atheris  # type: ignore[import-not-found]

        atheris.Setup([sys.argv[0]] + argv[1:], target)
        atheris.Fuzz()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    count = run_builtin(args.seconds, args.seed)
    print(f"fuzz_codec: {count} inputs, no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
