"""Helpers shared by the RoPE tests: caches, random keys, and the float64 oracle."""

from __future__ import annotations

import torch
from kvx import reference_rope, rope

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# Worst-case error of a result stored in `dtype`: one rounding to the storage type (half an ulp,
# i.e. eps/2 relative) plus float32 arithmetic on values of magnitude <= |x| * sqrt(2).
REL_TOL = {torch.float32: 2e-6, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}


def cache(
    rot_dim: int, max_position: int = 512, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return rope.build_cos_sin_cache(rot_dim, max_position, dtype=dtype)


def randn(shape, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32).to(dtype)


def positions(n: int, max_position: int, dtype=torch.int64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, max_position, (n,), generator=g).to(dtype)


def expected_rerotate(keys, old, new, cos_sin, is_neox, head_size=None):
    """float64 oracle: rotate back by old, forward by new, no rounding until the comparison."""
    k64 = keys.detach().to(torch.float64).clone()
    return reference_rope.rerotate_keys(
        k64, old, new, cos_sin, is_neox=is_neox, head_size=head_size, compute_dtype=torch.float64
    )


def expected_apply(x, pos, cos_sin, is_neox, head_size=None):
    x64 = x.detach().to(torch.float64).clone()
    reference_rope.apply_rotary(
        pos, x64, None, cos_sin, is_neox=is_neox, head_size=head_size, compute_dtype=torch.float64
    )
    return x64


def assert_close_to(actual: torch.Tensor, expected64: torch.Tensor, dtype: torch.dtype) -> None:
    """|actual - expected| <= tol * (|expected| + rms), tol from the storage dtype."""
    diff = (actual.to(torch.float64) - expected64).abs()
    scale = expected64.abs() + expected64.pow(2).mean().sqrt()
    bound = REL_TOL[dtype] * scale
    worst = (diff / scale).max().item() if diff.numel() else 0.0
    assert bool((diff <= bound).all()), (
        f"max relative error {worst:.3g} > {REL_TOL[dtype]:.3g} for {dtype}"
    )
