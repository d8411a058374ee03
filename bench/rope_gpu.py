"""GPU RoPE benchmark: kvx re-rotation and application vs the same run's device copy of the key
bytes (the roofline: RoPE reads and writes every key once) and the plain-torch reference.

Keys ``[T, 8, 128]`` bf16 (T = 4096 and 32768 by default), full rotary, fp32 cache; re-rotation
from positions 0..T-1 to a shifted window (CacheBlend), and application at those positions to
queries ``[T, 32, 128]`` and keys. Times are medians of CUDA-event timings after a warm-up; GB/s
count the rotated bytes once, as for the copy (both read and write each byte once).
"""

from __future__ import annotations

import argparse

try:
    from . import common
except ImportError:  # run from the repository as `python -m bench.rope_gpu`
    import common  # type: ignore[no-redef]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvx bench rope_gpu", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--repeats", type=int, default=20)
    return parser.parse_args(argv)


def _one_size(torch, rope, reference_rope, tokens: int, repeats: int, progress) -> list:
    keys = torch.randn(tokens, 8, 128, device="cuda").to(torch.bfloat16)
    query = torch.randn(tokens, 32, 128, device="cuda").to(torch.bfloat16)
    old = torch.arange(tokens, device="cuda")
    new = old + tokens // 2
    cos_sin = rope.build_cos_sin_cache(128, 2 * tokens, device="cuda")
    key_bytes = keys.numel() * keys.element_size()
    both_bytes = key_bytes + query.numel() * query.element_size()
    src_k, dst_k = keys.clone(), torch.empty_like(keys)
    src_qk = torch.empty(both_bytes // 2, dtype=torch.bfloat16, device="cuda")
    dst_qk = torch.empty_like(src_qk)

    copy_k = common.gpu_median(torch, lambda: dst_k.copy_(src_k), repeats)
    copy_qk = common.gpu_median(torch, lambda: dst_qk.copy_(src_qk), repeats)
    case = f"{tokens} tokens"
    rows = [
        (case, "torch copy_ of the key bytes (baseline)", copy_k, key_bytes, copy_k),
        (
            case,
            "kvx rerotate_keys",
            common.gpu_median(torch, lambda: rope.rerotate_keys(keys, old, new, cos_sin), repeats),
            key_bytes,
            copy_k,
        ),
        (
            case,
            "torch reference rerotate_keys",
            common.gpu_median(
                torch, lambda: reference_rope.rerotate_keys(keys, old, new, cos_sin), repeats
            ),
            key_bytes,
            copy_k,
        ),
        (case, "torch copy_ of the query+key bytes (baseline)", copy_qk, both_bytes, copy_qk),
        (
            case,
            "kvx apply_rotary (query + key)",
            common.gpu_median(torch, lambda: rope.apply_rotary(new, query, keys, cos_sin), repeats),
            both_bytes,
            copy_qk,
        ),
        (
            case,
            "torch reference apply_rotary",
            common.gpu_median(
                torch, lambda: reference_rope.apply_rotary(new, query, keys, cos_sin), repeats
            ),
            both_bytes,
            copy_qk,
        ),
    ]
    progress.step(case)
    # Row counts bytes once; RoPE, like the copy, reads and writes each, so the ratio is fair.
    return [common.Row(c, m, s, n, b) for c, m, s, n, b in rows]


def run(argv: list[str]) -> int:
    """Runs the benchmark on the first CUDA/HIP device and prints the table."""
    args = _parse(argv)
    modules = common.gpu_modules("GPU RoPE")
    if modules is None:
        return 2
    torch, _kvx = modules
    from kvx import reference_rope, rope

    progress = common.Progress(len(args.tokens), "bench rope_gpu")
    rows = [
        row
        for tokens in args.tokens
        for row in _one_size(torch, rope, reference_rope, tokens, args.repeats, progress)
    ]
    print(
        f"{torch.cuda.get_device_name()}: RoPE, 8 KV heads (32 query heads), head 128, "
        "bf16 keys, fp32 cache"
    )
    print(common.rows_table(rows, baseline="baseline"))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(run(sys.argv[1:]))
