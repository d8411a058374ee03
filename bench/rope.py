"""RoPE re-rotation benchmark (``python -m kvx bench rope``).

Re-rotates bf16 keys ``[T, H, D]`` (default 4096 x 8 x 128, full rotary) from old to new positions
in place and reports bandwidth over the key bytes, read + write (2 * T * H * D * 2 bytes), for:

- ``kvx.rope.rerotate_keys``: the Python API, argument checks included;
- ``kvx_rope_rerotate``: the C entry point alone, descriptors built once;
- ``memcpy``: libc ``memcpy`` of the same bytes into a preallocated buffer (one call, one thread)
  — the "plain memcpy" baseline of docs/design.md, "Performance bars";
- ``torch copy_``: ``Tensor.copy_`` of the same bytes into a preallocated tensor (torch's own
  threads), a stricter baseline;
- ``torch reference``: ``kvx.reference_rope.rerotate_keys`` (plain torch, float32).

``--op apply`` times plain RoPE instead (``kvx.rope.apply_rotary`` / ``kvx_rope_apply``): a query
and a key, both ``[T, H, D]``, rotated at the new positions; the bytes are those of both.

All in one run: medians per call over ``--repeats`` calls of each method, timed in alternating
blocks so that load from other processes does not favour one of them. The bar (docs/design.md)
is kvx at >= 80% of memcpy; the table gives the ratio against both baselines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

try:
    from . import common
except ImportError:  # run from the repository as `python -m bench.rope`
    import common  # type: ignore[no-redef]

_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvx bench rope", description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-size", type=int, default=128)
    p.add_argument("--rot-dim", type=int, default=None, help="rotary dims (default: the head size)")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16", help="key dtype")
    p.add_argument(
        "--cache-dtype", choices=sorted(_DTYPES), default="fp32", help="cos_sin_cache dtype"
    )
    p.add_argument(
        "--gptj", action="store_true", help="GPT-J (interleaved) pairing instead of NeoX"
    )
    p.add_argument(
        "--positions",
        choices=["shifted", "random"],
        default="shifted",
        help="shifted: old = 0..T-1, new = old + T/2 (a reused chunk, CacheBlend); random: uniform",
    )
    p.add_argument(
        "--repeats", type=int, default=300, help="timed calls per method (torch reference: 1/10)"
    )
    p.add_argument("--threads", type=int, default=0, help="libkvx CPU threads (0: its default)")
    p.add_argument(
        "--op",
        choices=["rerotate", "apply"],
        default="rerotate",
        help="rerotate: keys from old to new positions; apply: a query and a key at the new ones",
    )
    return p


def _block_medians(
    cases: list[tuple[str, Callable[[], object]]],
    blocks: int,
    per_block: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Median seconds per call for each case, timed in `blocks` rounds that run every case in turn
    (a few warm-up calls, then `per_block` timed ones): load from other processes on a small
    shared machine then hits all cases alike, while each case still runs back to back, as its
    thread pool expects (timing one call of each in turn makes torch's and libkvx's pools fight).
    Between cases the machine settles (common.settle): idle OpenMP workers of torch spin for
    milliseconds after each parallel op and would take a core from the next case."""
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for block in range(blocks):
        for name, fn in cases:
            common.settle()
            for _ in range(3):
                fn()
            for _ in range(per_block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        if progress:
            progress(block + 1)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        import torch
    except ImportError:
        print("kvx bench rope: needs torch", file=sys.stderr)
        return 2
    import kvx
    from kvx import reference_rope, rope
    from kvx._native import ffi, lib

    if args.threads:
        kvx.set_num_threads(args.threads)
    T, H, D = args.tokens, args.heads, args.head_size
    rot_dim = args.rot_dim or D
    dtype, cache_dtype = (
        getattr(torch, _DTYPES[args.dtype]),
        getattr(torch, _DTYPES[args.cache_dtype]),
    )
    is_neox = not args.gptj
    g = torch.Generator().manual_seed(0)
    keys = torch.randn((T, H, D), generator=g).to(dtype)
    if args.positions == "shifted":
        old = torch.arange(T, dtype=torch.int64)
        new = old + T // 2
    else:
        old = torch.randint(0, 2 * T, (T,), generator=g)
        new = torch.randint(0, 2 * T, (T,), generator=g)
    cos_sin = rope.build_cos_sin_cache(rot_dim, 2 * T, 10000.0, dtype=cache_dtype)
    apply = args.op == "apply"
    query = torch.randn((T, H, D), generator=g).to(dtype) if apply else None
    nbytes = keys.numel() * keys.element_size() * (2 if apply else 1)
    traffic = 2 * nbytes  # every key (and query) byte is read and written

    # C call with prebuilt descriptors: the kernel without the Python argument checks
    heads = rope._resolve_heads(keys, "keys", None)
    t_desc, c_desc = (
        rope._fill_tensor(heads),
        rope._fill_cache(rope._resolve_cache(cos_sin, None), is_neox),
    )
    q_desc = rope._fill_tensor(rope._resolve_heads(query, "query", None)) if apply else None
    old_ptr, new_ptr = ffi.cast("void *", old.data_ptr()), ffi.cast("void *", new.data_ptr())

    def c_call() -> None:
        if apply:
            status = lib.kvx_rope_apply(
                q_desc, t_desc, c_desc, new_ptr, lib.KVX_DTYPE_INT64, ffi.NULL
            )
        else:
            status = lib.kvx_rope_rerotate(
                t_desc, c_desc, old_ptr, new_ptr, lib.KVX_DTYPE_INT64, ffi.NULL
            )
        if status:
            raise RuntimeError(kvx._native.last_error())

    src = torch.randn((nbytes // keys.element_size(),), generator=g).to(dtype)
    dst = torch.empty_like(src)
    ref_keys = keys.clone()
    ref_query = query.clone() if apply else None

    if apply:
        api_name, c_name = "kvx.rope.apply_rotary", "kvx_rope_apply (C)"
        api = lambda: rope.apply_rotary(new, query, keys, cos_sin, is_neox=is_neox)  # noqa: E731
        reference = lambda: reference_rope.apply_rotary(  # noqa: E731
            new, ref_query, ref_keys, cos_sin, is_neox=is_neox
        )
    else:
        api_name, c_name = "kvx.rope.rerotate_keys", "kvx_rope_rerotate (C)"
        api = lambda: rope.rerotate_keys(keys, old, new, cos_sin, is_neox=is_neox)  # noqa: E731
        reference = lambda: reference_rope.rerotate_keys(  # noqa: E731
            ref_keys, old, new, cos_sin, is_neox=is_neox
        )
    cases = [
        ("memcpy (libc, 1 thread)", lambda: common.memcpy(dst.data_ptr(), src.data_ptr(), nbytes)),
        ("torch copy_", lambda: dst.copy_(src)),
        (api_name, api),
        (c_name, c_call),
        ("torch reference", reference),
    ]
    common.print_machine()
    what = "application (query and key)" if apply else "re-rotation"
    print(
        f"RoPE {what}: {T} tokens x {H} heads x {D} (rot_dim {rot_dim}), {args.dtype} keys, "
        f"{args.cache_dtype} cache, {'NeoX' if is_neox else 'GPT-J'} pairs, "
        f"{args.positions} positions; "
        f"{nbytes / 2**20:.1f} MiB of {'query and key' if apply else 'keys'}; "
        f"libkvx threads {kvx.get_num_threads()}, "
        f"torch threads {torch.get_num_threads()}; medians of {args.repeats} calls each",
        flush=True,
    )
    fast = [case for case in cases if case[0] != "torch reference"]
    blocks = 5

    def progress(done: int) -> None:
        print(f"  block {done}/{blocks} done", file=sys.stderr, flush=True)

    print(
        f"[1/2] timing {', '.join(name for name, _ in fast)} in {blocks} alternating blocks ...",
        file=sys.stderr,
        flush=True,
    )
    seconds = _block_medians(fast, blocks, max(1, args.repeats // blocks), progress)
    print("[2/2] timing torch reference ...", file=sys.stderr, flush=True)
    seconds.update(_block_medians(cases[-1:], 1, max(3, args.repeats // 10)))

    best = {name: b for name, (_, b) in seconds.items()}
    seconds = {name: m for name, (m, _) in seconds.items()}
    base_memcpy, base_copy = seconds["memcpy (libc, 1 thread)"], seconds["torch copy_"]
    rows = [
        [
            name,
            f"{s * 1e3:.3f}",
            f"{best[name] * 1e3:.3f}",
            f"{traffic / s / 1e9:.1f}",
            f"{base_memcpy / s * 100:.0f}%",
            f"{base_copy / s * 100:.0f}%",
        ]
        for name, s in seconds.items()
    ]
    print(
        common.format_table(
            ["method", "median ms", "best ms", "GB/s (r+w, median)", "vs memcpy", "vs torch copy_"],
            rows,
        )
    )
    api, kernel = seconds[api_name], seconds[c_name]
    ok = base_memcpy / api >= 0.8
    print(
        f"bar: {api_name} at >= 80% of memcpy: {'PASS' if ok else 'FAIL'} "
        f"({base_memcpy / api * 100:.0f}% by medians, "
        f"{best['memcpy (libc, 1 thread)'] / best[api_name] * 100:.0f}% "
        "by best times; "
        f"C kernel alone {base_memcpy / kernel * 100:.0f}%; "
        f"vs torch copy_ {base_copy / api * 100:.0f}%); "
        f"{seconds['torch reference'] / api:.1f}x faster than the torch reference"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(sys.argv[1:]))
