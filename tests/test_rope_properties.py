"""Property tests for kvx.rope over random geometries, pairings, dtypes and positions:

- re-rotating old -> new -> old restores the keys (within the storage dtype's rounding);
- re-rotating keys applied at old positions equals applying at the new positions;
- the result always matches the float64 oracle, and dims past rot_dim never change.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kvx import rope
from rope_cases import DTYPES, REL_TOL, assert_close_to, expected_rerotate


@st.composite
def cases(draw):
    head_size = draw(st.integers(1, 40)) * 2
    rot_dim = draw(st.integers(1, head_size // 2)) * 2
    tokens = draw(st.integers(1, 24))
    layers = draw(st.integers(1, 3))
    heads = draw(st.integers(1, 4))
    max_position = draw(st.integers(1, 5000))
    pos = st.lists(st.integers(0, max_position - 1), min_size=tokens, max_size=tokens)
    return dict(
        shape=(layers, tokens, heads, head_size) if layers > 1 else (tokens, heads, head_size),
        rot_dim=rot_dim,
        max_position=max_position,
        base=draw(st.sampled_from([10000.0, 500000.0, 1e6])),
        is_neox=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)),
        cache_dtype=draw(st.sampled_from(DTYPES)),
        pos_dtype=draw(st.sampled_from([torch.int64, torch.int32])),
        old=torch.tensor(draw(pos)),
        new=torch.tensor(draw(pos)),
        seed=draw(st.integers(0, 2**31)),
    )


def _setup(case):
    g = torch.Generator().manual_seed(case["seed"])
    keys = torch.randn(case["shape"], generator=g).to(case["dtype"])
    cs = rope.build_cos_sin_cache(
        case["rot_dim"], case["max_position"], case["base"], dtype=case["cache_dtype"]
    )
    return keys, cs, case["old"].to(case["pos_dtype"]), case["new"].to(case["pos_dtype"])


@settings(max_examples=150, deadline=None)
@given(cases())
def test_rerotate_matches_oracle_and_keeps_the_tail(case):
    keys, cs, old, new = _setup(case)
    before = keys.clone()
    expected = expected_rerotate(keys, old, new, cs, case["is_neox"])
    rope.rerotate_keys(keys, old, new, cs, is_neox=case["is_neox"])
    r = case["rot_dim"]
    assert_close_to(keys[..., :r], expected[..., :r], case["dtype"])
    assert torch.equal(keys[..., r:], before[..., r:])


@settings(max_examples=150, deadline=None)
@given(cases())
def test_old_new_old_round_trip(case):
    keys, cs, old, new = _setup(case)
    before = keys.clone()
    rope.rerotate_keys(keys, old, new, cs, is_neox=case["is_neox"])
    rope.rerotate_keys(keys, new, old, cs, is_neox=case["is_neox"])
    # two roundings to the storage dtype (plus a cache that is only nearly orthonormal when it
    # is stored in 16 bits): allow a few ulps of the keys' scale
    cache_eps = {torch.float32: 0.0, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[
        case["cache_dtype"]
    ]
    tol = 3 * REL_TOL[case["dtype"]] + 4 * cache_eps
    scale = before.double().abs() + before.double().pow(2).mean().sqrt()
    diff = (keys.double() - before.double()).abs()
    assert bool((diff <= tol * scale).all()), (diff / scale).max().item()


@settings(max_examples=150, deadline=None)
@given(cases())
def test_rerotate_equals_apply_at_new_positions(case):
    keys, cs, old, new = _setup(case)
    via_old = keys.clone()
    rope.apply_rotary(old, via_old, None, cs, is_neox=case["is_neox"])
    rope.rerotate_keys(via_old, old, new, cs, is_neox=case["is_neox"])
    direct = keys.clone()
    rope.apply_rotary(new, direct, None, cs, is_neox=case["is_neox"])
    # two roundings to the keys' dtype on one side, one on the other; a 16-bit cache's rows are
    # only nearly unit length, so R(old)^T R(old) is only nearly the identity
    cache_eps = {torch.float32: 0.0, torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}[
        case["cache_dtype"]
    ]
    tol = 3 * REL_TOL[case["dtype"]] + 4 * cache_eps
    scale = direct.double().abs() + direct.double().pow(2).mean().sqrt()
    diff = (via_old.double() - direct.double()).abs()
    assert bool((diff <= tol * scale).all()), (diff / scale).max().item()
