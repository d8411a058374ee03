"""bench/codec_quality.py without a model file: its Llama forward pass on a tiny random model
(against torch's own attention and a complex-number RoPE), the cached-prefix path, the metrics,
and the bits accounting through kvx's codec on synthetic KV. No gguf, no network."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import codec_quality as cq  # noqa: E402
from bench import quality_model as qm  # noqa: E402

TINY = qm.LlamaConfig(
    layers=2,
    hidden=32,
    heads=4,
    kv_heads=2,
    head_dim=8,
    ffn=48,
    vocab=64,
    rope_theta=10000.0,
    rms_eps=1e-5,
)


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TINY.vocab, (n,), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- loader format


def test_config_from_smollm2_metadata() -> None:
    meta = {
        "general.architecture": "llama",
        "llama.block_count": 30,
        "llama.embedding_length": 576,
        "llama.feed_forward_length": 1536,
        "llama.attention.head_count": 9,
        "llama.attention.head_count_kv": 3,
        "llama.rope.freq_base": 100000.0,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.vocab_size": 49152,
        "llama.rope.dimension_count": 64,
    }
    cfg = qm.config_from_metadata(meta)
    assert (cfg.layers, cfg.heads, cfg.kv_heads, cfg.head_dim) == (30, 9, 3, 64)
    assert (cfg.kv_channels, cfg.ffn, cfg.vocab, cfg.rope_theta) == (192, 1536, 49152, 1e5)
    del meta["llama.attention.head_count_kv"]  # absent: no GQA
    assert qm.config_from_metadata(meta).kv_heads == 9
    with pytest.raises(ValueError, match="partial RoPE"):
        qm.config_from_metadata({**meta, "llama.rope.dimension_count": 32})
    with pytest.raises(ValueError, match="llama-architecture"):
        qm.config_from_metadata({**meta, "general.architecture": "qwen2"})


def _byte_symbols() -> list[str]:
    """The 256 one-byte symbols of a byte-level BPE vocabulary, in byte order: printable Latin-1
    bytes stand for themselves, the others for the code points from 256 up, in byte order."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    moved = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(moved)) for b in range(256)]


def _write_tiny_gguf(
    path: Path, model: qm.LlamaModel, tokens: list[str], merges: list[str]
) -> None:
    gguf = pytest.importorskip("gguf")
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_block_count(c.layers)
    w.add_embedding_length(c.hidden)
    w.add_feed_forward_length(c.ffn)
    w.add_head_count(c.heads)
    w.add_head_count_kv(c.kv_heads)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.rms_eps)
    w.add_rope_dimension_count(c.head_dim)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    names = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output"]
    names += ["ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    w.add_tensor("token_embd.weight", model.embedding.numpy())
    for i, layer in enumerate(model.layers):
        for n, t in zip(names, vars(layer).values(), strict=True):
            if n == "ffn_up":  # one quantized tensor: the loader must dequantize it
                q8 = gguf.GGMLQuantizationType.Q8_0
                w.add_tensor(
                    f"blk.{i}.{n}.weight", gguf.quants.quantize(t.numpy(), q8), raw_dtype=q8
                )
            else:
                w.add_tensor(f"blk.{i}.{n}.weight", t.numpy())
    w.add_tensor("output_norm.weight", model.output_norm.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_loader_reads_a_tiny_gguf(tmp_path: Path) -> None:
    """A GGUF written by gguf's own writer loads back: config, [out, in] weights, a Q8_0 tensor
    dequantized, the output tied to the embedding, and the BPE tokenizer with digits split."""
    pytest.importorskip("gguf")
    pytest.importorskip("tokenizers")
    symbols = _byte_symbols()
    merges = ["h e", "l l", "he ll", "1 2", "Ġ w"]
    tokens = symbols + ["he", "ll", "hell", "12", "Ġw", "<|im_start|>"]
    config = qm.LlamaConfig(**{**vars(TINY), "vocab": len(tokens)})
    model = qm.random_model(config, seed=10)
    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path, model, tokens, merges)

    loaded = qm.load_gguf(path)
    assert loaded.config.rms_eps == pytest.approx(config.rms_eps, rel=1e-6)  # stored as float32
    assert dataclasses.replace(loaded.config, rms_eps=config.rms_eps) == config
    assert loaded.name == "tiny"
    assert loaded.output is loaded.embedding
    torch.testing.assert_close(loaded.embedding, model.embedding)
    torch.testing.assert_close(loaded.layers[1].wk, model.layers[1].wk)
    torch.testing.assert_close(loaded.layers[0].w_down, model.layers[0].w_down)
    up, want = loaded.layers[0].w_up, model.layers[0].w_up
    assert up.shape == want.shape and 0 < (up - want).abs().max() < 0.02 * want.abs().max()

    ids = loaded.tokenizer.encode("<|im_start|>hello w12").ids
    assert [tokens[i] for i in ids] == ["<|im_start|>", "hell", "o", "Ġw", "1", "2"]
    assert loaded.tokenizer.decode(ids, skip_special_tokens=False) == "<|im_start|>hello w12"


# ---------------------------------------------------------------- forward pass pieces


def test_rope_is_a_complex_rotation_of_adjacent_pairs() -> None:
    """llama.cpp's normal RoPE: channels (2i, 2i+1) as one complex number times
    exp(1j * position * theta ** (-2i / D))."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 8, generator=g)
    positions = torch.tensor([0, 1, 7, 100, 4000])
    cos, sin = qm.rope_cos_sin(positions, 8, 10000.0)
    got = qm.apply_rope(x, cos, sin)
    freqs = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    turn = torch.polar(torch.ones(5, 4, dtype=torch.float64), positions[:, None] * freqs)
    pairs = torch.view_as_complex(x.double().reshape(5, 3, 4, 2).contiguous())
    want = torch.view_as_real(pairs * turn[:, None, :]).reshape(5, 3, 8)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("past", [0, 5])
def test_attention_matches_torch_sdpa_with_gqa(past: int) -> None:
    g = torch.Generator().manual_seed(2)
    tokens, heads, kv_heads, d = 6, 6, 2, 8
    q = torch.randn(tokens, heads, d, generator=g)
    k = torch.randn(past + tokens, kv_heads, d, generator=g)
    v = torch.randn(past + tokens, kv_heads, d, generator=g)
    got = qm.attention(q, k, v, past)
    mask = torch.ones(tokens, past + tokens, dtype=torch.bool).tril(diagonal=past)
    want = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, enable_gqa=True
    )
    torch.testing.assert_close(got, want.transpose(0, 1).reshape(tokens, heads * d))


def test_gqa_query_heads_read_their_group_kv_head() -> None:
    """With V zero except in KV head 1, only query heads 3..5 (of 6, groups of 3) see it."""
    q = torch.randn(4, 6, 8)
    k = torch.randn(4, 2, 8)
    v = torch.zeros(4, 2, 8)
    v[:, 1] = 1.0
    out = qm.attention(q, k, v, 0).view(4, 6, 8)
    assert torch.all(out[:, :3] == 0)
    torch.testing.assert_close(out[:, 3:], torch.ones(4, 3, 8))


def _reference_forward(model: qm.LlamaModel, ids: torch.Tensor) -> torch.Tensor:
    """A plain full-sequence Llama: torch's rms_norm, complex RoPE, SDPA with GQA."""
    c = model.config
    n = len(ids)
    freqs = c.rope_theta ** (-torch.arange(0, c.head_dim, 2, dtype=torch.float64) / c.head_dim)
    turn = torch.polar(torch.ones(n, c.head_dim // 2, dtype=torch.float64),
                       torch.arange(n)[:, None] * freqs).to(torch.complex64)  # fmt: skip

    def rope(x: torch.Tensor) -> torch.Tensor:  # [n, heads, D]
        pairs = torch.view_as_complex(x.reshape(n, x.shape[1], -1, 2).contiguous())
        return torch.view_as_real(pairs * turn[:, None]).reshape(x.shape)

    def norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.rms_norm(x, (c.hidden,), w, c.rms_eps)

    x = model.embedding[ids]
    for w in model.layers:
        h = norm(x, w.attn_norm)
        q = rope(torch.nn.functional.linear(h, w.wq).view(n, c.heads, c.head_dim))
        k = rope(torch.nn.functional.linear(h, w.wk).view(n, c.kv_heads, c.head_dim))
        v = torch.nn.functional.linear(h, w.wv).view(n, c.kv_heads, c.head_dim)
        a = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), is_causal=True, enable_gqa=True
        )
        x = x + torch.nn.functional.linear(a.transpose(0, 1).reshape(n, -1), w.wo)
        h = norm(x, w.ffn_norm)
        gate = torch.nn.functional.silu(torch.nn.functional.linear(h, w.w_gate))
        x = x + torch.nn.functional.linear(gate * torch.nn.functional.linear(h, w.w_up), w.w_down)
    return torch.nn.functional.linear(norm(x, model.output_norm), model.output)


@pytest.mark.parametrize("tied", [True, False])
def test_forward_matches_a_plain_reference(tied: bool) -> None:
    model = qm.random_model(TINY, seed=3, tied=tied)
    ids = _ids(20)
    got = qm.forward(model, ids)
    assert got.logits.shape == (20, TINY.vocab)
    assert got.k.shape == got.v.shape == (TINY.layers, 20, TINY.kv_channels)
    torch.testing.assert_close(got.logits, _reference_forward(model, ids), atol=2e-4, rtol=2e-4)


def test_cached_k_is_after_rope() -> None:
    """Token 0's K is unrotated (position 0), later tokens' K is the rotated projection."""
    model = qm.random_model(TINY, seed=4)
    ids = _ids(3)
    got = qm.forward(model, ids)
    w = model.layers[0]
    h = qm.rms_norm(model.embedding[ids], w.attn_norm, TINY.rms_eps)
    raw = (h @ w.wk.T).view(3, TINY.kv_heads, TINY.head_dim)
    torch.testing.assert_close(got.k[0, 0], raw[0].reshape(-1))
    cos, sin = qm.rope_cos_sin(torch.arange(3), TINY.head_dim, TINY.rope_theta)
    torch.testing.assert_close(got.k[0], qm.apply_rope(raw, cos, sin).reshape(3, -1))
    assert not torch.allclose(got.k[0, 2], raw[2].reshape(-1), atol=1e-3)


@pytest.mark.parametrize("prefix", [1, 7, 19])
def test_continuation_on_exact_prefix_kv_equals_the_full_pass(prefix: int) -> None:
    model = qm.random_model(TINY, seed=5)
    ids = _ids(20)
    full = qm.forward(model, ids)
    cont = qm.forward(model, ids[prefix:], full.k[:, :prefix], full.v[:, :prefix])
    torch.testing.assert_close(cont.logits, full.logits[prefix:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cont.k, full.k[:, prefix:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cont.v, full.v[:, prefix:], atol=1e-5, rtol=1e-5)


def test_continuation_reads_the_prefix_kv() -> None:
    """A changed prefix V changes the continuation: the metric is not blind to the codec."""
    model = qm.random_model(TINY, seed=6)
    ids = _ids(12)
    full = qm.forward(model, ids)
    noisy_v = full.v[:, :6] + 0.5 * torch.randn(full.v[:, :6].shape)
    cont = qm.forward(model, ids[6:], full.k[:, :6], noisy_v)
    assert (cont.logits - full.logits[6:]).abs().max() > 1e-3


# ---------------------------------------------------------------- metrics


def test_kl_is_zero_for_identical_and_matches_the_formula() -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(5, 30)) * 3
    assert np.allclose(cq.kl_divergence(cq.log_softmax(logits), cq.log_softmax(logits)), 0)
    # A constant shift of the logits leaves the distribution as it is.
    assert np.allclose(cq.kl_divergence(cq.log_softmax(logits), cq.log_softmax(logits + 4)), 0)
    p, q = np.array([[0.75, 0.25]]), np.array([[0.5, 0.5]])
    want = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert cq.kl_divergence(np.log(p), np.log(q))[0] == pytest.approx(want)
    other = cq.log_softmax(rng.normal(size=(5, 30)) * 3)
    assert np.all(cq.kl_divergence(cq.log_softmax(logits), other) > 0)


def test_log_softmax_normalizes_torch_logits() -> None:
    logits = torch.randn(4, 50) * 20
    lp = cq.log_softmax(logits)
    assert lp.dtype == np.float64 and np.allclose(np.exp(lp).sum(-1), 1.0)
    assert np.allclose(lp, torch.log_softmax(logits.double(), -1).numpy())


def test_argmax_changed_counts_changed_positions() -> None:
    a = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [1.0, 3.0, 2.0]])
    b = np.array([[0.9, 0.1, 0.0], [2.0, 1.9, 0.0], [0.0, 6.0, 5.0], [1.0, 3.0, 2.5]])
    assert cq.argmax_changed(a, b).tolist() == [True, False, True, False]


def test_check_model_counts_hits_and_loss() -> None:
    logits = torch.full((4, 5), -4.0)
    logits[0, 1] = logits[1, 2] = logits[2, 0] = 4.0  # predicts tokens 1, 2, 0 after 0, 1, 3
    ids = torch.tensor([0, 1, 3, 0])
    empty = torch.zeros(1, 4, 2)
    check = cq.ModelCheck()
    cq.check_model("t", qm.ForwardResult(logits, empty, empty), ids, check)
    assert (check.predicted, check.correct, check.per_text) == (3, 2, {"t": 2 / 3})
    lp = torch.log_softmax(logits.double(), -1)
    assert check.loss == pytest.approx(-float(lp[0, 1] + lp[1, 3] + lp[2, 0]) / 3)


def test_split_points_keep_a_prefix_and_a_continuation() -> None:
    assert cq.split_points(100, [0.25, 0.5, 0.75]) == [25, 50, 75]
    assert cq.split_points(10, [0.0, 1.0, 0.5, 0.5]) == [1, 5, 9]


# ---------------------------------------------------------------- codec settings and bits


def _kv(layers: int = 3, tokens: int = 40, channels: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(8)
    k = rng.normal(size=(layers, tokens, channels)).astype(np.float32)
    k[..., 3] *= 12.0  # an outlier channel, as real keys have
    v = rng.normal(size=(layers, tokens, channels)).astype(np.float32)
    return k, v


def test_cachegen_bytes_are_the_containers() -> None:
    from kvx import codec

    k, v = _kv()
    k2, v2, nbytes = cq.cachegen(32, 16)(k, v)
    blob = codec.encode(np.stack([k, v]), [32] * 3, [16] * 3)
    assert nbytes == len(blob)
    assert k2.shape == k.shape and v2.shape == v.shape and k2.dtype == np.float32
    want_k, want_v = codec.decode(blob, as_numpy=True)
    assert np.array_equal(k2, want_k) and np.array_equal(v2, want_v)
    bits = cq.bits_per_element(nbytes, k.size + v.size)
    assert bits == pytest.approx(len(blob) * 8 / (2 * 3 * 40 * 32))
    assert 1 < bits < 16


def test_chunk_size_only_changes_the_side_data() -> None:
    k, v = _kv(tokens=300)
    k1, _, small_chunks = cq.cachegen(chunk_tokens=100)(k, v)
    k2, _, one_chunk = cq.cachegen(chunk_tokens=512)(k, v)
    assert np.array_equal(k1, k2)  # per-token quantization: chunks only regroup the tables
    assert small_chunks > one_chunk


def test_more_bins_cost_bits_and_cut_error() -> None:
    k, v = _kv()
    rows = []
    for bins in (16, 64):
        totals = cq.Totals()
        k2, v2, nbytes = cq.cachegen(bins, bins)(k, v)
        totals.nbytes, totals.elements = nbytes, k.size + v.size
        totals.k_err, totals.k_sq = float(((k2 - k) ** 2).sum()), float((k**2).sum())
        totals.v_err, totals.v_sq = float(((v2 - v) ** 2).sum()), float((v**2).sum())
        totals.positions = 1
        rows.append(totals.row(str(bins)))
    assert rows[0]["bits_per_element"] < rows[1]["bits_per_element"]
    assert rows[0]["rel_l2_k"] > rows[1]["rel_l2_k"] > 0
    assert rows[1]["ratio_vs_bf16"] == pytest.approx(16 / rows[1]["bits_per_element"])


def test_baselines_bytes_and_error() -> None:
    k, v = _kv()
    elements = k.size + v.size
    k2, v2, nbytes = cq.int8_per_token(k, v)
    assert nbytes == elements + 4 * 2 * 3 * 40  # one byte per element, a float32 per row-token
    for x, x2 in ((k, k2), (v, v2)):
        scale = np.abs(x).max(-1, keepdims=True) / 127
        assert np.all(np.abs(x2 - x) <= scale / 2 + 1e-6)
    assert not np.array_equal(k2, k)
    assert cq.fp32_exact(k, v)[2] * 8 / elements == 32
    kb, _, nbytes = cq.bf16_cast(k, v)
    assert nbytes * 8 / elements == 16 and 0 < np.abs(kb - k).max() <= np.abs(k).max() / 256


def test_rotated_setting_counts_the_real_container() -> None:
    from kvx import codec

    k, v = _kv()
    k2, _, nbytes = cq.cachegen(method="rotated", head_dim=16)(k, v)
    blob = codec.encode(np.stack([k, v]), method="rotated", head_size=16)
    assert nbytes == len(blob) and codec.inspect(blob).method == "rotated"
    assert not np.array_equal(k2, k) and np.allclose(k2, k, atol=np.abs(k).max() / 2)


def test_codec_speed_runs_both_methods_defaults() -> None:
    """The speed line's pieces (not its figures, which bench runs measure): both methods'
    defaults on the KV given, with the bits of the container each wrote."""
    from kvx import codec

    kv = torch.randn(2, 3, 40, 32).to(torch.bfloat16)
    speed = cq.codec_speed(kv, head_dim=16)
    assert set(speed) == {"cachegen", "rotated"}
    for method, r in speed.items():
        assert r["encode"] > 0 and r["decode"] > 0
        kind = dict(method=method, head_size=16 if method == "rotated" else None)
        blob = codec.encode(kv, **kind)
        assert r["bits_per_element"] == 8 * len(blob) / kv.numel()


def test_measure_case_on_a_tiny_model() -> None:
    """Exact KV: no KL and no change; a 4-bin codec: a positive KL and the container's bits."""
    model = qm.random_model(TINY, seed=9)
    ids = _ids(24)
    full = qm.forward(model, ids)
    exact, coarse = cq.Totals(), cq.Totals()
    cq.measure_case(model, ids, full, 10, cq.Setting("fp32", cq.fp32_exact), exact)
    cq.measure_case(model, ids, full, 10, cq.Setting("4 bins", cq.cachegen(4, 4)), coarse)
    row, coarse_row = exact.row("fp32"), coarse.row("4 bins")
    assert row["positions"] == coarse_row["positions"] == 14
    assert row["mean_kl_nats"] < 1e-6 and row["changed_share"] == 0
    assert row["bits_per_element"] == 32 and row["rel_l2_k"] == 0
    assert coarse_row["mean_kl_nats"] > 1e-4 and coarse_row["rel_l2_v"] > 0.05
    assert coarse.elements == 2 * TINY.layers * 10 * TINY.kv_channels


def test_unknown_text_cannot_run() -> None:
    assert cq.run(["--texts", "no-such-text"]) == 2


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    k, v = _kv()
    rows = []
    for bins in (16, 32):
        totals = cq.Totals()
        k2, v2, totals.nbytes = cq.cachegen(bins, bins)(k, v)
        totals.elements, totals.positions = k.size + v.size, 10
        totals.k_err, totals.k_sq = float(((k2 - k) ** 2).sum()), float((k**2).sum())
        totals.v_err, totals.v_sq = float(((v2 - v) ** 2).sum()), float((v**2).sum())
        totals.kl_sum, totals.changed = 0.1 / bins, 1
        rows.append(totals.row(f"{bins} bins"))
    path = tmp_path / "rate.png"
    assert cq.plot(rows, str(path), "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
