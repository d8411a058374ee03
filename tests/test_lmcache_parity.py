"""kvx's LMCache-named functions against LMCache's own pure-torch versions (fetched from PyPI at
test time): same argument names, same results, same edge behaviour."""

from __future__ import annotations

import inspect

import lmcache_reference
import pytest
import torch
from kvx import codec, rope

CACHEGEN = "lmcache/v1/platform/torch_ops/cachegen_kernels.py"
POS = "lmcache/v1/platform/torch_ops/pos_kernels.py"


@pytest.fixture(scope="module")
def lmcache_calculate_cdf():
    return lmcache_reference.function(CACHEGEN, "calculate_cdf", {"torch": torch})


def test_calculate_cdf_takes_lmcache_argument_names(lmcache_calculate_cdf) -> None:
    assert list(inspect.signature(codec.calculate_cdf).parameters)[1] == "num_bins"
    assert list(inspect.signature(lmcache_calculate_cdf).parameters)[1] == "num_bins"


# LMCache's own test uses int8 symbols and bins 1 .. 63; uint8 carries up to 256 bins.
BINS = [(torch.int8, n) for n in (1, 2, 5, 11, 16, 31, 32, 63, 128)] + [
    (torch.uint8, n) for n in (1, 7, 64, 255, 256)
]


@pytest.mark.parametrize("dtype,num_bins", BINS)
@pytest.mark.parametrize("tokens", [1, 7, 1000])
def test_calculate_cdf_equals_lmcache(lmcache_calculate_cdf, num_bins, tokens, dtype) -> None:
    gen = torch.Generator().manual_seed(num_bins * 1000 + tokens)
    symbols = torch.randint(0, num_bins, (3, tokens, 5), generator=gen).to(dtype)
    expected = lmcache_calculate_cdf(symbols, num_bins)
    got = codec.calculate_cdf(symbols, num_bins)
    assert got.dtype == expected.dtype == torch.int16 and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_one_bin_gives_lmcache_table() -> None:
    """LMCache's calculate_cdf(sym, 1) gives [0, 65535] (as int16: [0, -1])."""
    cdf = codec.calculate_cdf(torch.zeros((1, 4, 1), dtype=torch.int8), 1)
    assert cdf.view(
        torch.uint16 if hasattr(torch, "uint16") else torch.int16
    ).flatten().tolist() in ([0, 65535], [0, -1])


def test_no_tokens_give_the_bin_offsets() -> None:
    """With no tokens LMCache's torch version means the tables 0, 1, .., num_bins (its code says
    so, though its reshape fails on an empty input first); kvx gives them."""
    for num_bins in (1, 16, 256):
        cdf = codec.calculate_cdf(torch.zeros((2, 0, 3), dtype=torch.uint8), num_bins)
        assert torch.equal(cdf, torch.arange(num_bins + 1, dtype=torch.int16).expand(2, 3, -1))


@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("rot_dim", [64, 48])
def test_rotary_embedding_k_fused_equals_lmcache(is_neox, rot_dim) -> None:
    """Same argument names and order; same result up to float32 rounding (kvx combines the two
    rotations into one, LMCache applies them one after the other)."""
    lmcache_fused = lmcache_reference.function(POS, "rotary_embedding_k_fused", {"torch": torch})
    assert list(inspect.signature(rope.rotary_embedding_k_fused).parameters) == list(
        inspect.signature(lmcache_fused).parameters
    )
    gen = torch.Generator().manual_seed(rot_dim + is_neox)
    tokens, heads, head_size = 37, 4, 64
    cache = rope.build_cos_sin_cache(rot_dim, 4096, 10000.0)
    old = torch.randint(0, 4096, (tokens,), generator=gen)
    new = torch.randint(0, 4096, (tokens,), generator=gen)
    key = torch.randn(tokens, heads, head_size, generator=gen)
    expected = key.clone()
    lmcache_fused(old, new, expected, head_size, cache, is_neox)
    rope.rotary_embedding_k_fused(old, new, key, head_size, cache, is_neox)
    torch.testing.assert_close(key, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(key[..., rot_dim:], expected[..., rot_dim:])  # the pass-through dims
