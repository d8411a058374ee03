"""GPU transfer benchmark: kvx vs the same run's device copy of the same bytes.

Llama-3-8B shape (32 layers, 8 KV heads, head 128, bf16, block 16), 4096 and 32768 tokens in random
blocks of a larger pool:
  * device to device, both directions, against torch ``copy_`` of the same bytes (the bar: 80%)
    and torch's per-layer ``index_select`` / ``index_copy_``;
  * offload into pinned host memory (one kvx launch) against torch's device-to-pinned-host
    ``copy_(non_blocking=True)`` of the same bytes (cudaMemcpyAsync).
Times are medians of CUDA-event timings after a warm-up.
"""

from __future__ import annotations

import argparse

try:
    from . import common
except ImportError:  # run from the repository as `python -m bench.transfer_gpu`
    import common  # type: ignore[no-redef]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvx bench transfer_gpu", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    return parser.parse_args(argv)


def _one_size(torch, kvx, layers: int, tokens: int, repeats: int, progress) -> list:
    H, D, BS = 8, 128, 16
    num_blocks = 2 * -(-tokens // BS)
    caches = [
        torch.randn(2, num_blocks, BS, H, D, device="cuda").to(torch.bfloat16)
        for _ in range(layers)
    ]
    blocks = torch.randperm(num_blocks, device="cuda")[: -(-tokens // BS)]
    slots = (
        (blocks[:, None] * BS + torch.arange(BS, device="cuda")[None, :])
        .flatten()[:tokens]
        .contiguous()
    )
    dense = torch.empty(2, layers, tokens, H * D, dtype=torch.bfloat16, device="cuda")
    pinned = torch.empty(dense.shape, dtype=dense.dtype).pin_memory()
    nbytes = dense.numel() * dense.element_size()
    src, dst = (
        torch.randn(nbytes // 2, device="cuda").to(torch.bfloat16),
        torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda"),
    )
    flat = [c.view(2, num_blocks * BS, H * D) for c in caches]

    def torch_store():
        for layer, f in enumerate(flat):
            dense[:, layer] = f.index_select(1, slots)

    def torch_load():
        for layer, f in enumerate(flat):
            f.index_copy_(1, slots, dense[:, layer])

    case = f"{tokens} tokens"
    d2d = common.gpu_median(torch, lambda: dst.copy_(src), repeats)
    d2h = common.gpu_median(torch, lambda: pinned.view(-1).copy_(src, non_blocking=True), repeats)
    measured = [
        (case, "torch copy_ device->device (baseline)", d2d, d2d),
        (
            case,
            "kvx store device->device",
            common.gpu_median(torch, lambda: kvx.store(caches, dense, slots), repeats),
            d2d,
        ),
        (
            case,
            "kvx load device->device",
            common.gpu_median(torch, lambda: kvx.load(caches, dense, slots), repeats),
            d2d,
        ),
        (case, "torch index_select (store)", common.gpu_median(torch, torch_store, repeats), d2d),
        (case, "torch index_copy_ (load)", common.gpu_median(torch, torch_load, repeats), d2d),
        (case, "torch copy_ device->pinned host (baseline)", d2h, d2h),
        (
            case,
            "kvx store device->pinned host",
            common.gpu_median(torch, lambda: kvx.store(caches, pinned, slots), repeats),
            d2h,
        ),
    ]
    kvx.synchronize(dense)
    progress.step(case)
    return [common.Row(c, m, s, nbytes, b) for c, m, s, b in measured]


def run(argv: list[str]) -> int:
    """Runs the benchmark on the first CUDA/HIP device and prints the table."""
    args = _parse(argv)
    modules = common.gpu_modules("GPU transfer")
    if modules is None:
        return 2
    torch, kvx = modules
    progress = common.Progress(len(args.tokens), "bench transfer_gpu")
    rows = [
        row
        for tokens in args.tokens
        for row in _one_size(torch, kvx, args.layers, tokens, args.repeats, progress)
    ]
    print(
        f"{torch.cuda.get_device_name()}: Llama-3-8B shape, {args.layers} layers, "
        "8 KV heads, head 128, bf16, block 16"
    )
    print(common.rows_table(rows, baseline="baseline"))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(run(sys.argv[1:]))
