"""Transfer benchmark: kvx vs memcpy of the same bytes vs torch's vectorized indexing.

Llama-3-8B shape (32 layers, 8 KV heads, head 128, bf16), 4096 tokens:
  * vLLM flash-attn NHD pool, block 16, the request's blocks at random places in a larger pool;
  * SGLang-style token pool (block size 1), random slots.
Each case is timed in both directions against libc memcpy of exactly the bytes moved (one call,
contiguous) in the same run; torch's per-layer index_select / index_copy_ is shown for scale.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

try:
    from . import common
except ImportError:  # run from the repository as `python -m bench.transfer`
    import common  # type: ignore[no-redef]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvx bench transfer", description=__doc__.splitlines()[0]
    )
    common.add_kv_shape_args(parser, repeats=5)
    parser.add_argument("--threads", type=int, default=0, help="kvx CPU threads (0 = default)")
    return parser.parse_args(argv)


def _paged_slots(torch, tokens: int, block_size: int, num_blocks: int):
    """Slots of a request laid out in randomly chosen blocks of the pool, in order."""
    needed = -(-tokens // block_size)
    blocks = torch.randperm(num_blocks)[:needed]
    offsets = torch.arange(block_size)
    return (blocks[:, None] * block_size + offsets[None, :]).flatten()[:tokens].contiguous()


def _case_paged(torch, kvx, args, add: Callable) -> None:
    L, H, D, BS, T = args.layers, args.heads, args.head_size, args.block_size, args.tokens
    num_blocks = -(-T * args.pool_factor // BS)
    caches = [torch.randn(2, num_blocks, BS, H, D, dtype=torch.bfloat16) for _ in range(L)]
    slots = _paged_slots(torch, T, BS, num_blocks)
    dense = torch.zeros(2, L, T, H * D, dtype=torch.bfloat16)
    case = f"paged BS={BS}"

    def torch_store():
        for layer, cache in enumerate(caches):
            dense[:, layer] = cache.view(2, num_blocks * BS, H * D).index_select(1, slots)

    def torch_load():
        for layer, cache in enumerate(caches):
            cache.view(2, num_blocks * BS, H * D).index_copy_(1, slots, dense[:, layer])

    add(case, "store", lambda: kvx.store(caches, dense, slots), dense)
    add(case, "load", lambda: kvx.load(caches, dense, slots), dense)
    add(case, "torch index_select (store)", torch_store, dense)
    add(case, "torch index_copy_ (load)", torch_load, dense)


def _case_token_pool(torch, kvx, args, add: Callable) -> None:
    L, H, D, T = args.layers, args.heads, args.head_size, args.tokens
    size = T * args.pool_factor
    k_pool = [torch.randn(size, H, D, dtype=torch.bfloat16) for _ in range(L)]
    v_pool = [torch.randn(size, H, D, dtype=torch.bfloat16) for _ in range(L)]
    slots = torch.randperm(size)[:T].contiguous()
    dense = torch.zeros(2, L, T, H * D, dtype=torch.bfloat16)
    case = "token pool BS=1"
    pools = (k_pool, v_pool)

    def torch_store():
        for layer in range(L):
            dense[0, layer] = k_pool[layer].view(size, H * D).index_select(0, slots)
            dense[1, layer] = v_pool[layer].view(size, H * D).index_select(0, slots)

    add(case, "store", lambda: kvx.store(pools, dense, slots, layout="sglang_mha"), dense)
    add(case, "load", lambda: kvx.load(pools, dense, slots, layout="sglang_mha"), dense)
    add(case, "torch index_select (store)", torch_store, dense)


def run(argv: list[str]) -> int:
    """Runs the benchmark and prints the table; returns a process exit code."""
    args = _parse(argv)
    try:
        import torch
    except ImportError:
        print("the transfer benchmark needs torch (pip install torch)")
        return 2
    import kvx

    torch.manual_seed(0)
    kvx.set_num_threads(args.threads)
    nbytes = 2 * args.layers * args.tokens * args.heads * args.head_size * 2
    src = torch.randn(nbytes // 2, dtype=torch.bfloat16)
    dst = torch.zeros_like(src)

    def plain_memcpy():
        common.memcpy(dst.data_ptr(), src.data_ptr(), nbytes)

    baseline = common.median_seconds(plain_memcpy, args.repeats)
    torch_copy = common.median_seconds(lambda: dst.copy_(src), args.repeats)
    rows = [
        common.Row("all", "libc memcpy (baseline)", baseline, nbytes, baseline),
        common.Row("all", "torch copy_ (contiguous)", torch_copy, nbytes, baseline),
    ]
    progress = common.Progress(7, "bench transfer")

    def add(case: str, method: str, fn: Callable[[], object], dense) -> None:
        seconds = common.median_seconds(fn, args.repeats)
        moved = dense.numel() * dense.element_size()
        rows.append(common.Row(case, method, seconds, moved, baseline * moved / nbytes))
        progress.step(f"{case}: {method}")

    _case_paged(torch, kvx, args, add)
    _case_token_pool(torch, kvx, args, add)
    common.print_machine()
    print(
        f"Llama-3-8B shape: {args.layers} layers, {args.heads} KV heads, "
        f"head {args.head_size}, bf16, {args.tokens} tokens = {nbytes / 2**20:.0f} MiB "
        f"moved per call; kvx threads {kvx.get_num_threads()}"
    )
    print(common.rows_table(rows))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(run(sys.argv[1:]))
