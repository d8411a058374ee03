"""Property tests for kvx.rope over random geometries, pairings, dtypes and positions:

- re-rotating old -> new -> old restores the keys (within the storage dtype's rounding);
- re-rotating keys applied at old positions equals applying at the new positions;
- the result always matches the float64 oracle, and dims past rot_dim never change;
- through the C ABI, the overlap check never accepts views that share a rotated byte, and
  accepts every view whose dims nest (in any order, with any padding).
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kvx import rope
from kvx._native import ffi, last_error, lib
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


# ---------------------------------------------------------------- the C overlap check

_ELEMENT = {lib.KVX_DTYPE_FLOAT32: 4, lib.KVX_DTYPE_FLOAT16: 2}
_CACHE = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)


def _view(draw, tokens: int, rot_dim: int, nested: bool) -> dict:
    """A small view: random strides, or (nested) dims stacked in a random order, each stride
    clearing what the dims inside it span plus some padding."""
    dtype = draw(st.sampled_from(sorted(_ELEMENT)))
    v = dict(
        dtype=dtype,
        num_layers=draw(st.integers(1, 3)),
        num_heads=draw(st.integers(1, 3)),
        num_tokens=tokens,
        head_size=rot_dim + draw(st.integers(0, 2)),
        offset=draw(st.integers(0, 40)),  # elements past the buffer's start
    )
    counts = {"head": v["num_heads"], "token": tokens, "layer": v["num_layers"]}
    if nested:
        extent = rot_dim
        for dim in draw(st.permutations(["head", "token", "layer"])):
            stride = extent + draw(st.integers(0, 3))
            v[f"{dim}_stride"] = stride
            extent += stride * (counts[dim] - 1)
    else:
        for dim in counts:
            v[f"{dim}_stride"] = draw(st.integers(0, 24))
    return v


@st.composite
def _pairs(draw):
    tokens, rot_dim = draw(st.integers(1, 4)), draw(st.sampled_from([2, 4, 8]))
    query = _view(draw, tokens, rot_dim, nested=draw(st.booleans()))
    key = _view(draw, tokens, rot_dim, nested=draw(st.booleans()))
    if draw(st.booleans()):  # one token stride in bytes, as views of one fused tensor have
        step = query["token_stride"] * _ELEMENT[query["dtype"]]
        if step % _ELEMENT[key["dtype"]] == 0:
            key["token_stride"] = step // _ELEMENT[key["dtype"]]
    return rot_dim, query, key


def _rotated_bytes(v: dict, rot_dim: int) -> list[int]:
    """Every byte the view rotates, once per time it is rotated, from the buffer's start."""
    size = _ELEMENT[v["dtype"]]
    return [
        (v["offset"] + l * v["layer_stride"] + t * v["token_stride"] + h * v["head_stride"]) * size
        + b
        for l in range(v["num_layers"])
        for t in range(v["num_tokens"])
        for h in range(v["num_heads"])
        for b in range(rot_dim * size)
    ]


def _apply(rot_dim: int, views: list[dict]) -> tuple[int, str]:
    """kvx_rope_apply(query, key or NULL) over one buffer that holds every view."""
    end = max(
        (
            v["offset"]
            + (v["num_layers"] - 1) * v["layer_stride"]
            + (v["num_tokens"] - 1) * v["token_stride"]
            + (v["num_heads"] - 1) * v["head_stride"]
            + v["head_size"]
        )
        * _ELEMENT[v["dtype"]]
        for v in views
    )
    buf = np.zeros(end, dtype=np.float32)  # 4-byte elements: every offset is aligned
    tensors = []
    for v in views:
        fields = {k: n for k, n in v.items() if k != "offset"}
        fields["base"] = ffi.cast("void *", buf.ctypes.data + v["offset"] * _ELEMENT[v["dtype"]])
        tensors.append(
            ffi.new("kvx_rope_tensor *", dict(struct_size=ffi.sizeof("kvx_rope_tensor"), **fields))
        )
    cache = ffi.new(
        "kvx_rope_cache *",
        dict(
            struct_size=ffi.sizeof("kvx_rope_cache"),
            dtype=lib.KVX_DTYPE_FLOAT32,
            rot_dim=rot_dim,
            pairing=lib.KVX_ROPE_NEOX,
            max_position=_CACHE.shape[0],
            row_stride=_CACHE.shape[1],
            cos_sin=ffi.cast("void *", _CACHE.ctypes.data),
        ),
    )
    positions = np.zeros(views[0]["num_tokens"], dtype=np.int64)
    key = tensors[1] if len(tensors) > 1 else ffi.NULL
    status = lib.kvx_rope_apply(
        tensors[0],
        key,
        cache,
        ffi.cast("void *", positions.ctypes.data),
        lib.KVX_DTYPE_INT64,
        ffi.NULL,
    )
    return status, last_error()


@settings(max_examples=300, deadline=None)
@given(_pairs())
def test_overlap_check_never_accepts_shared_rotated_bytes(pair):
    rot_dim, query, key = pair
    rotated = _rotated_bytes(query, rot_dim) + _rotated_bytes(key, rot_dim)
    status, message = _apply(rot_dim, [query, key])
    if len(set(rotated)) < len(rotated):
        assert status == lib.KVX_ERR_INVALID_ARGUMENT, "accepted views that share a rotated byte"
    if status != lib.KVX_OK:  # refused by the overlap check, not by another
        assert status == lib.KVX_ERR_INVALID_ARGUMENT, message
        assert " overlap" in message or "shares memory with" in message, message


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_overlap_check_accepts_every_nested_view(data):
    tokens, rot_dim = data.draw(st.integers(1, 4)), data.draw(st.sampled_from([2, 4, 8]))
    view = _view(data.draw, tokens, rot_dim, nested=True)
    status, message = _apply(rot_dim, [view])
    assert status == lib.KVX_OK, message
