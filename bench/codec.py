"""Benchmark of the CacheGen codec on the CPU (``python -m kvx bench codec``).

Default input: a Llama-3-8B-shaped chunk (32 layers, 8 KV heads x 128 = 1024 channels, 256
tokens, bf16, LMCache's bin schedule) of LLM-like data: every channel has its own offset and
scale (log-normal, with a few outlier channels ~20x larger), and values drift smoothly from token
to token (AR(1) along tokens), as real keys and values do. torch runs single-threaded during
the measurements: its idle OpenMP workers spin and would steal the cores the codec measures.
Reports encode and decode throughput in symbols (= elements) per second and per CPU-second (run
with --threads 1 and 2 to size a larger host from them), how the time splits between quantize,
CDF, range coder and dequantize, bits per element,
compression ratio against the raw bytes, the same run's zstd level 3 on the raw bytes, and the
reconstruction's relative L2 error; then the same for the container's rotated method (its own
default bins and 512-token chunks, heads of --head-size), whose speed is the figure to compare
here (its rate and quality are bench/codec_quality.py's, on real KV).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

try:
    from . import common
except ImportError:  # run from the repository as `python -m bench.codec`
    import common  # type: ignore[no-redef]


def llm_like_kv(layers: int, tokens: int, channels: int, dtype: Any, seed: int) -> Any:
    """``[2, layers, tokens, channels]`` torch tensor of token-correlated values with outlier
    channels (float32 generation, then cast to ``dtype``)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shape = (2, layers, 1, channels)
    scale = torch.exp(0.4 * torch.randn(shape, generator=g))
    # Keys have a few outlier channels (about 1%, ~8x larger); values do not.
    outliers = torch.rand(shape, generator=g) < 0.01
    outliers[1] = False
    scale = torch.where(outliers, scale * 8.0, scale)
    offset = 0.5 * torch.randn(shape, generator=g) * scale
    rho = 0.9
    z = torch.empty((2, layers, tokens, channels))
    state = torch.randn(shape, generator=g)
    for t in range(tokens):
        state = rho * state + (1 - rho * rho) ** 0.5 * torch.randn(shape, generator=g)
        z[:, :, t : t + 1] = state
    return (offset + scale * z).to(dtype)


CPU_TIMES: dict[int, float] = {}  # id(result of best_time) -> median CPU seconds, for the table


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` runs after one warm-up, and the last result. The median
    process CPU time (all threads) of the same runs is kept in CPU_TIMES[id(result)]."""
    result = fn()
    times, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    CPU_TIMES[id(result)] = statistics.median(cpu)
    return statistics.median(times), result


def _split(total: float, steps: dict[str, float]) -> str:
    """Each step's share of the container call's time, measured alone on the same data; the rest
    is the container's own work (chunking, layout, checksums) and what the steps lose when run
    inside it (negative where they run faster there, on chunks that stay in the caches)."""
    shares = [f"{name} {100 * t / total:.0f}%" for name, t in steps.items()]
    rest = 100 * (total - sum(steps.values())) / total
    return ", ".join(shares) + f", rest {rest:.0f}% of the container's time"


def _progress(step: str, index: int, total: int) -> None:
    print(f"[{index}/{total}] {step}...", file=sys.stderr, flush=True)


def _zstd(raw: bytes, repeat: int) -> dict[str, Any] | None:
    try:
        import zstandard
    except ImportError:
        return None
    comp = zstandard.ZstdCompressor(level=3)
    dec = zstandard.ZstdDecompressor()
    t_c, blob = best_time(lambda: comp.compress(raw), repeat)
    t_d, _ = best_time(lambda: dec.decompress(blob), repeat)
    return {"size": len(blob), "t_encode": t_c, "t_decode": t_d}


def run(argv: list[str]) -> int:
    """Entry point used by ``python -m kvx bench codec``; returns a process exit status."""
    parser = argparse.ArgumentParser(prog="kvx bench codec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1024, help="KV heads x head size")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument(
        "--head-size", type=int, default=128, help="for the rotated method (a power of two)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: libkvx default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("kvx bench codec: needs torch (bf16 data)", file=sys.stderr)
        return 2
    import kvx
    from kvx import codec

    if args.threads:
        kvx.set_num_threads(args.threads)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # idle OpenMP workers spin and would steal the measured cores
    try:
        return _measure(args, torch, kvx, codec)
    finally:
        torch.set_num_threads(torch_threads)


def _measure(args: argparse.Namespace, torch: Any, kvx: Any, codec: Any) -> int:
    steps = 7
    _progress("generating LLM-like KV data", 1, steps)
    kv = llm_like_kv(args.layers, args.tokens, args.channels, getattr(torch, args.dtype), args.seed)
    symbols = kv.numel()
    raw = kv.view(torch.uint8).numpy().tobytes() if kv.element_size() != 4 else kv.numpy().tobytes()
    key_bins, value_bins = codec.default_bins(args.layers)

    _progress("kvx encode (container)", 2, steps)
    t_enc, blob = best_time(
        lambda: codec.encode(kv, key_bins, value_bins, args.chunk_tokens), args.repeat
    )
    c_enc = CPU_TIMES[id(blob)]
    _progress("kvx decode (container)", 3, steps)
    t_dec, out = best_time(lambda: codec.decode(blob), args.repeat)
    c_dec = CPU_TIMES[id(out)]

    _progress("the rotated method (container, its default bins and chunks)", 4, steps)
    t_rot_enc, rot_blob = best_time(
        lambda: codec.encode(kv, method="rotated", head_size=args.head_size), args.repeat
    )
    t_rot_dec, rot_out = best_time(lambda: codec.decode(rot_blob), args.repeat)

    _progress("the codec's steps alone (quantize, CDF, range coder, dequantize)", 5, steps)
    x = kv.reshape(2 * args.layers, args.tokens, args.channels)
    bins = key_bins + value_bins
    t_quant, (sym, scales) = best_time(lambda: codec.quantize(x, bins), args.repeat)
    t_cdf, cdf = best_time(lambda: codec.calculate_cdf(sym, max(bins)), args.repeat)
    t_rc_enc, (streams, lengths) = best_time(lambda: codec.encode_streams(cdf, sym), args.repeat)
    dec_sym = torch.empty_like(sym)
    t_rc_dec, _ = best_time(
        lambda: codec.decode_fast_new(cdf, streams, lengths, dec_sym), args.repeat
    )
    t_dequant, _ = best_time(lambda: codec.dequantize(sym, scales, bins, kv.dtype), args.repeat)
    if not torch.equal(dec_sym, sym):
        print("kvx bench codec: range coder round trip FAILED", file=sys.stderr)
        return 1

    _progress("zstd level 3 on the raw bytes", 6, steps)
    zstd = _zstd(raw, args.repeat)
    _progress("error", 7, steps)
    ref = kv.float()

    def rel_l2(decoded: Any) -> float:
        diff = decoded.float().reshape(ref.shape) - ref
        return (torch.linalg.vector_norm(diff) / torch.linalg.vector_norm(ref)).item()

    def msym(t: float, cpu: float | None = None) -> str:
        text = f"{symbols / t / 1e6:8.1f} M symbols/s  ({len(raw) / t / 1e9:.2f} GB/s raw)"
        if cpu:
            text += f"; {symbols / cpu / 1e6:.1f} M symbols per CPU-second"
        return text

    rows = [
        (
            "input",
            f"{args.dtype} [2, {args.layers}, {args.tokens}, {args.channels}] = "
            f"{symbols / 1e6:.2f} M elements, {len(raw) / 1e6:.1f} MB",
        ),
        ("bins", "LMCache schedule: K 32 x first 10 layers, V 32 x first 2, 16 after"),
        ("threads", f"{kvx.get_num_threads()} (kvx); torch set to 1 while measuring"),
        ("kvx encode (container)", msym(t_enc, c_enc)),
        ("kvx decode (container)", msym(t_dec, c_dec)),
        ("range coder encode only", msym(t_rc_enc)),
        ("range coder decode only", msym(t_rc_dec)),
        (
            "encode split",
            _split(t_enc, {"quantize": t_quant, "CDF": t_cdf, "range coder": t_rc_enc}),
        ),
        ("decode split", _split(t_dec, {"range coder": t_rc_dec, "dequantize": t_dequant})),
        (
            "kvx size",
            f"{len(blob) / 1e6:.2f} MB: {8 * len(blob) / symbols:.3f} bits/element, "
            f"ratio {len(raw) / len(blob):.2f}x vs raw {args.dtype}",
        ),
        (
            "  of which streams",
            f"{int(lengths.sum()) / 1e6:.2f} MB "
            f"({8 * int(lengths.sum()) / symbols:.3f} bits/element)",
        ),
        ("relative L2 error", f"{rel_l2(out):.4f}"),
        ("rotated encode (container)", msym(t_rot_enc, CPU_TIMES[id(rot_blob)])),
        ("rotated decode (container)", msym(t_rot_dec, CPU_TIMES[id(rot_out)])),
        (
            "rotated size, error",
            f"{8 * len(rot_blob) / symbols:.3f} bits/element ({len(raw) / len(rot_blob):.2f}x); "
            f"relative L2 {rel_l2(rot_out):.4f} (its own bins: see docs/codec-quality.md)",
        ),
    ]
    if zstd is None:
        rows.append(("zstd level 3", "zstd not installed (pip install zstandard)"))
    else:
        rows.append(
            (
                "zstd level 3 ratio",
                f"{len(raw) / zstd['size']:.2f}x ({8 * zstd['size'] / symbols:.3f} bits/element)",
            )
        )
        rows.append(
            (
                "zstd level 3 speed",
                f"compress {len(raw) / zstd['t_encode'] / 1e6:.0f} MB/s, "
                f"decompress {len(raw) / zstd['t_decode'] / 1e6:.0f} MB/s (1 thread)",
            )
        )
    common.print_machine()
    print(common.format_table(["measure", "value"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
