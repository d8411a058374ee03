"""GPU codec benchmark: kvx's CacheGen kernels vs the same run's device copy of the same bytes.

Input: Llama-3-8B-shaped chunks of LLM-like data (bench/codec.py's generator: per-channel offsets
and scales, outliers, token-to-token drift), 32 layers x K and V, 8 KV heads x 128 = 1024 channels,
bf16, LMCache's bin schedule; 256 tokens (LMCache's chunk) and a longer run. Every stage is timed
alone on the device (quantize, calculate_cdf, encode, decode, dequantize, and the rotated method's
quantize and dequantize with its bins, heads of --head-size) and reported in GB/s of
the uncompressed bf16 KV bytes, against torch ``copy_`` of those bytes device to device (the
roofline). Times are medians of CUDA-event timings after a warm-up; buffers are allocated once.
"""

from __future__ import annotations

import argparse

try:
    from . import common
    from .codec import llm_like_kv
except ImportError:  # run from the repository as `python -m bench.codec_gpu`
    import common  # type: ignore[no-redef]
    from codec import llm_like_kv  # type: ignore[no-redef]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kvx bench codec_gpu", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--head-size", type=int, default=128, help="the rotated method's heads")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _one_size(torch, kvx, args: argparse.Namespace, tokens: int, progress) -> tuple[list, str]:
    codec = kvx.codec
    L, C = args.layers, args.channels
    kv = llm_like_kv(L, tokens, C, torch.bfloat16, args.seed).cuda().reshape(2 * L, tokens, C)
    key_bins, value_bins = codec.default_bins(L)
    bins = key_bins + value_bins
    nb = max(bins)
    symbols, scales = codec.quantize(kv, bins)
    cdf = codec.calculate_cdf(symbols, nb)
    capacity = codec.stream_bound(tokens)
    streams = torch.empty((2 * L, C, capacity), dtype=torch.uint8, device="cuda")
    lengths = torch.empty((2 * L, C), dtype=torch.int32, device="cuda")
    decoded = torch.empty_like(symbols)
    codec.encode_fast_new(cdf, symbols, streams, lengths)
    codec.decode_fast_new(cdf, streams, lengths, decoded)
    kvx.synchronize(decoded)  # raises what the kernels found; the data must round-trip
    if not torch.equal(decoded, symbols):
        raise RuntimeError("GPU decode did not reproduce the encoded symbols")

    rotated = dict(method="rotated", head_size=args.head_size)
    rotated_key_bins, rotated_value_bins = codec.default_rotated_bins(L)
    rotated_bins = rotated_key_bins + rotated_value_bins
    rotated_symbols, rotated_scales = codec.quantize(kv, rotated_bins, **rotated)

    nbytes = kv.numel() * kv.element_size()
    src, dst = kv.clone(), torch.empty_like(kv)
    copy = common.gpu_median(torch, lambda: dst.copy_(src), args.repeats)
    case = f"{tokens} tokens"
    measured = [
        ("torch copy_ device->device (baseline)", copy),
        ("kvx quantize", common.gpu_median(torch, lambda: codec.quantize(kv, bins), args.repeats)),
        (
            "kvx calculate_cdf",
            common.gpu_median(torch, lambda: codec.calculate_cdf(symbols, nb), args.repeats),
        ),
        (
            "kvx encode",
            common.gpu_median(
                torch, lambda: codec.encode_fast_new(cdf, symbols, streams, lengths), args.repeats
            ),
        ),
        (
            "kvx decode",
            common.gpu_median(
                torch, lambda: codec.decode_fast_new(cdf, streams, lengths, decoded), args.repeats
            ),
        ),
        (
            "kvx dequantize",
            common.gpu_median(
                torch, lambda: codec.dequantize(symbols, scales, bins, torch.bfloat16), args.repeats
            ),
        ),
        (
            "kvx quantize, rotated method",
            common.gpu_median(
                torch, lambda: codec.quantize(kv, rotated_bins, **rotated), args.repeats
            ),
        ),
        (
            "kvx dequantize, rotated method",
            common.gpu_median(
                torch,
                lambda: codec.dequantize(
                    rotated_symbols, rotated_scales, rotated_bins, torch.bfloat16, **rotated
                ),
                args.repeats,
            ),
        ),
    ]
    kvx.synchronize(decoded)
    bits = 8.0 * float(lengths.sum()) / symbols.numel()
    progress.step(case)
    return [
        common.Row(case, m, s, nbytes, copy) for m, s in measured
    ], f"{case}: {bits:.2f} bits per element"


def run(argv: list[str]) -> int:
    """Runs the benchmark on the first CUDA/HIP device and prints the table."""
    args = _parse(argv)
    modules = common.gpu_modules("GPU codec")
    if modules is None:
        return 2
    torch, kvx = modules
    progress = common.Progress(len(args.tokens), "bench codec_gpu")
    rows, notes = [], []
    for tokens in args.tokens:
        more, note = _one_size(torch, kvx, args, tokens, progress)
        rows += more
        notes.append(note)
    print(
        f"{torch.cuda.get_device_name()}: {args.layers} layers x K/V, {args.channels} channels, "
        "bf16, LMCache bins; "
        "GB/s of the uncompressed KV bytes"
    )
    print(common.rows_table(rows, baseline="copy_"))
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(run(sys.argv[1:]))
