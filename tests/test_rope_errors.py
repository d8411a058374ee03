"""Bad input to kvx.rope and to the C entry points: each argument is rejected with a message that
names it and the expected value, and nothing is modified."""

from __future__ import annotations

import re

import kvx
import numpy as np
import pytest
import torch
from kvx import rope
from kvx._native import ffi, last_error, lib
from misaligned import misaligned_copy
from rope_cases import cache, positions, randn

T, H, D, MAXPOS = 9, 2, 16, 40


@pytest.fixture
def args():
    keys = randn((T, H, D), torch.bfloat16)
    return dict(
        keys=keys,
        old=positions(T, MAXPOS, seed=2),
        new=positions(T, MAXPOS, seed=3),
        cs=cache(D, MAXPOS),
    )


def _rejects(fn, match, *watched):
    before = [w.clone() if isinstance(w, torch.Tensor) else w.copy() for w in watched]
    with pytest.raises(kvx.InvalidArgumentError, match=match):
        fn()
    for b, w in zip(before, watched, strict=True):
        assert torch.equal(b, w) if isinstance(w, torch.Tensor) else np.array_equal(b, w), (
            "input was modified"
        )


def _rerotate(a, **over):
    kw = dict(a)
    kw.update(over)
    extra = {k: kw.pop(k) for k in ("is_neox", "rot_dim", "head_size") if k in kw}
    return lambda: rope.rerotate_keys(kw["keys"], kw["old"], kw["new"], kw["cs"], **extra)


def test_valid_call_works(args):
    before = args["keys"].clone()
    _rerotate(args)()
    assert not torch.equal(before, args["keys"])


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "bad,match",
    [
        ([[1.0]], r"keys: expected a torch.Tensor or numpy.ndarray, got list"),
        (
            torch.zeros((T, H, D), dtype=torch.int32),
            r"keys: expected dtype float32, float16 or bfloat16, got torch.int32",
        ),
        (
            torch.zeros((T, H, D), dtype=torch.float64),
            r"keys: expected dtype float32, float16 or bfloat16, got torch.float64",
        ),
        (
            torch.zeros(T * H * D),
            r"keys: expected \[T, H\*D\], \[T, H, D\] or \[L, T, H, D\], got shape \(288,\)",
        ),
        (
            torch.zeros((1, 1, T, H, D)),
            r"keys: expected \[T, H\*D\], \[T, H, D\] or \[L, T, H, D\], got shape",
        ),
        (
            torch.zeros((T, H * D)),
            r"keys: a 2-D \[T, H\*D\] tensor needs head_size, a divisor of 32; got head_size=None",
        ),
        (
            torch.zeros((T, D, H)).transpose(1, 2),
            r"keys: head vectors must be contiguous \(stride 1 along the last axis\)",
        ),
        (
            torch.zeros((T, 1, D)).expand(T, H, D),
            r"keys: expected a writable view, got one with broadcast",
        ),
        (
            torch.zeros(T * D + D).as_strided((T, H, D), (D, D // 2, 1)),
            r"keys: expected head vectors that do not overlap",
        ),
    ],
)
def test_bad_keys(args, bad, match):
    _rejects(_rerotate(args, keys=bad), match, args["old"], args["new"], args["cs"])


def test_read_only_numpy_keys(args):
    keys = np.zeros((T, H, D), dtype=np.float32)
    keys.flags.writeable = False
    _rejects(_rerotate(args, keys=keys), r"keys: expected a writable array", keys)


def test_keys_tracked_by_autograd(args):
    """In-place writes through raw pointers would be invisible to autograd: refused unless grad
    mode is off (as torch allows in-place changes of leaves under no_grad)."""
    keys = args["keys"].clone().requires_grad_()
    _rejects(
        _rerotate(args, keys=keys),
        r"keys: expected a tensor that does not require grad",
        keys.detach(),
    )
    with torch.no_grad():
        _rerotate(args, keys=keys)()
    assert not torch.equal(keys.detach(), args["keys"])  # rotated


def test_head_size_mismatch(args):
    _rejects(
        _rerotate(args, head_size=8),
        r"head_size: expected keys.shape\[-1\] \(16\), got 8",
        args["keys"],
    )


def test_flat_keys_head_size_not_dividing(args):
    flat = torch.zeros((T, H * D), dtype=torch.bfloat16)
    _rejects(_rerotate(args, keys=flat, head_size=12), r"a divisor of 32; got head_size=12", flat)


# ---------------------------------------------------------------- positions


@pytest.mark.parametrize("which", ["old", "new"])
@pytest.mark.parametrize(
    "bad,match",
    [
        (
            torch.zeros(T, dtype=torch.float32),
            r"{}_positions: expected dtype int64 or int32, got torch.float32",
        ),
        (
            torch.zeros(T, dtype=torch.int8),
            r"{}_positions: expected dtype int64 or int32, got torch.int8",
        ),
        (
            torch.zeros((T, 1), dtype=torch.int64),
            r"{}_positions: expected a 1-D \[T\] array, got shape \(9, 1\)",
        ),
        (
            torch.zeros(T - 1, dtype=torch.int64),
            r"{}_positions: expected 9 positions \(one per token\), got 8",
        ),
        ("list", r"{}_positions: expected a torch.Tensor or numpy.ndarray, got list"),
    ],
)
def test_bad_positions(args, which, bad, match):
    bad = list(range(T)) if isinstance(bad, str) else bad
    _rejects(_rerotate(args, **{which: bad}), match.format(which), args["keys"])


@pytest.mark.parametrize("which", ["old", "new"])
@pytest.mark.parametrize("value", [-1, MAXPOS, 2**40])
@pytest.mark.parametrize("pos_dtype", [torch.int64, torch.int32])
def test_position_out_of_range_modifies_nothing(args, which, value, pos_dtype):
    if pos_dtype == torch.int32 and value > 2**31:
        value = 2**31 - 1
    bad = args[which].clone().to(pos_dtype)
    bad[T - 1] = (
        value  # the last token: earlier tokens would be rotated by a kernel that checks late
    )
    other = "new" if which == "old" else "old"
    fn = _rerotate(args, **{which: bad, other: args[other].to(pos_dtype)})
    _rejects(
        fn,
        rf"{which}_positions\[8\]: expected a position in \[0, 40\) \(the cache's max_position\), "
        rf"got {value}",
        args["keys"],
    )


def test_apply_position_out_of_range(args):
    pos = args["new"].clone()
    pos[3] = MAXPOS + 5
    query, key = args["keys"], randn((T, 1, D), torch.float32)
    _rejects(
        lambda: rope.apply_rotary(pos, query, key, args["cs"]),
        r"positions\[3\]: expected a position in \[0, 40\)",
        query,
        key,
    )


# ---------------------------------------------------------------- cos_sin_cache and rot_dim


@pytest.mark.parametrize(
    "bad,match",
    [
        (
            torch.zeros((MAXPOS, D), dtype=torch.float64),
            r"cos_sin_cache: expected dtype float32, float16 or bfloat16, got torch.float64",
        ),
        (
            torch.zeros(MAXPOS * D),
            r"cos_sin_cache: expected a 2-D \[max_position, rot_dim\] table, got shape \(640,\)",
        ),
        (torch.zeros((0, D)), r"cos_sin_cache: expected at least one position \(row\), got 0"),
        (
            torch.zeros((MAXPOS, 15)),
            r"rot_dim: expected an even number >= 2 \(cos_sin_cache.shape\[1\]\), got 15",
        ),
        (torch.zeros((MAXPOS, 32)), r"rot_dim: expected <= the head size of keys \(16\), got 32"),
        (
            torch.zeros((MAXPOS, 2 * D))[:, ::2],
            r"cos_sin_cache: rows must be contiguous \(stride 1 along dim 1\), got stride 2",
        ),
    ],
)
def test_bad_cache(args, bad, match):
    _rejects(_rerotate(args, cs=bad), match, args["keys"])


def test_rot_dim_mismatch(args):
    _rejects(
        _rerotate(args, rot_dim=8),
        r"rot_dim: expected cos_sin_cache.shape\[1\] \(16\), got 8",
        args["keys"],
    )


def test_keys_overlapping_inputs(args):
    buf = torch.zeros((MAXPOS + T * H, D), dtype=torch.float32)
    keys, cs = buf[MAXPOS:].view(T, H, D), buf[: MAXPOS + 1]
    _rejects(
        _rerotate(args, keys=keys, cs=cs), r"keys: expected memory separate from cos_sin_cache", buf
    )


def test_unsupported_device(args):
    meta = torch.empty((T, H, D), dtype=torch.bfloat16, device="meta")
    with pytest.raises(
        kvx.InvalidArgumentError, match=r"device: libkvx does not support torch device type 'meta'"
    ):
        _rerotate(args, keys=meta)()


# ---------------------------------------------------------------- apply_rotary specifics


def test_apply_token_mismatch(args):
    query, key = args["keys"], randn((T - 1, H, D), torch.bfloat16)
    _rejects(
        lambda: rope.apply_rotary(args["new"], query, key, args["cs"]),
        r"key: expected the tokens of query \(9\), got 8",
        query,
        key,
    )


def test_apply_query_and_key_overlap(args):
    query = args["keys"]
    _rejects(
        lambda: rope.apply_rotary(args["new"], query, query[:, :1], args["cs"]),
        r"key: overlaps query \(the same elements would be rotated twice\)",
        query,
    )


def test_apply_takes_query_and_key_from_one_fused_tensor(args):
    """vLLM and SGLang pass query and key as column ranges of one qkv projection: interleaved
    in memory, element by element disjoint."""
    query, key = args["keys"], args["keys"][:, :2] + 1
    fused = torch.cat([query.flatten(1), key.flatten(1)], dim=1)
    fused_query = fused[:, : query[0].numel()].unflatten(1, query.shape[1:])
    fused_key = fused[:, query[0].numel() :].unflatten(1, key.shape[1:])
    rope.apply_rotary(args["new"], fused_query, fused_key, args["cs"])
    rope.apply_rotary(args["new"], query, key, args["cs"])
    assert torch.equal(fused_query, query) and torch.equal(fused_key, key)


def test_apply_bad_query(args):
    _rejects(
        lambda: rope.apply_rotary(
            args["new"], torch.zeros((T, H, D), dtype=torch.int8), None, args["cs"]
        ),
        r"query: expected dtype float32, float16 or bfloat16, got torch.int8",
        args["cs"],
    )


# ---------------------------------------------------------------- build_cos_sin_cache


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: rope.build_cos_sin_cache(7, 10), r"rot_dim: expected an even integer >= 2, got 7"),
        (lambda: rope.build_cos_sin_cache(0, 10), r"rot_dim: expected an even integer >= 2, got 0"),
        (
            lambda: rope.build_cos_sin_cache(True, 10),
            r"rot_dim: expected an even integer >= 2, got True",
        ),
        (lambda: rope.build_cos_sin_cache(8, 0), r"max_position: expected an integer >= 1, got 0"),
        (
            lambda: rope.build_cos_sin_cache(8, 10, 0.0),
            r"base: expected a positive number, got 0.0",
        ),
        (
            lambda: rope.build_cos_sin_cache(8, 10, scaling="yarn"),
            r"scaling: expected None, a linear factor or a mapping",
        ),
        (
            lambda: rope.build_cos_sin_cache(8, 10, scaling={"rope_type": "yarn"}),
            r"scaling: expected rope_type 'default', 'linear' or 'llama3', got 'yarn'",
        ),
        (
            lambda: rope.build_cos_sin_cache(8, 10, scaling=0.0),
            r"scaling: expected a positive linear factor, got 0.0",
        ),
        (
            lambda: rope.build_cos_sin_cache(8, 10, scaling={"rope_type": "llama3", "factor": 8.0}),
            r"scaling: llama3 scaling needs 'original_max_position_embeddings'",
        ),
        (
            lambda: rope.build_cos_sin_cache(
                8,
                10,
                scaling={
                    "rope_type": "llama3",
                    "factor": -1.0,
                    "original_max_position_embeddings": 8192,
                },
            ),
            r"scaling: llama3 factors must be positive",
        ),
    ],
)
def test_bad_build_arguments(call, match):
    with pytest.raises(kvx.InvalidArgumentError, match=match):
        call()


# ---------------------------------------------------------------- the C entry points directly


class CCall:
    """Valid descriptors for kvx_rope_rerotate / kvx_rope_apply over numpy buffers; tests break one
    field at a time."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.keys = rng.standard_normal((T, H, D)).astype(np.float32)
        self.query = rng.standard_normal((T, 3, D)).astype(np.float32)
        self.cs = cache(D, MAXPOS).numpy()
        self.old = np.arange(T, dtype=np.int64)
        self.new = np.arange(T, dtype=np.int64) + 5
        self.k = self._tensor(self.keys)
        self.q = self._tensor(self.query)
        self.c = ffi.new(
            "kvx_rope_cache *",
            dict(
                struct_size=ffi.sizeof("kvx_rope_cache"),
                dtype=lib.KVX_DTYPE_FLOAT32,
                rot_dim=D,
                pairing=lib.KVX_ROPE_NEOX,
                max_position=MAXPOS,
                row_stride=D,
                cos_sin=ffi.cast("void *", self.cs.ctypes.data),
            ),
        )
        self.old_ptr = ffi.cast("void *", self.old.ctypes.data)
        self.new_ptr = ffi.cast("void *", self.new.ctypes.data)
        self.pos_dtype = lib.KVX_DTYPE_INT64
        self.stream = ffi.NULL

    @staticmethod
    def _tensor(a: np.ndarray, **fields):
        """A contiguous [T, H, D] float32 array, or the view `fields` make of its memory
        (base: an address)."""
        desc = dict(
            struct_size=ffi.sizeof("kvx_rope_tensor"),
            dtype=lib.KVX_DTYPE_FLOAT32,
            num_layers=1,
            num_heads=a.shape[1],
            head_size=D,
            num_tokens=T,
            base=a.ctypes.data,
            layer_stride=0,
            token_stride=a.shape[1] * D,
            head_stride=D,
        )
        desc.update(fields)
        desc["base"] = ffi.cast("void *", desc["base"])
        return ffi.new("kvx_rope_tensor *", desc)

    def _run(self, fn):
        before = self.keys.copy(), self.query.copy()
        status = fn()
        untouched = np.array_equal(before[0], self.keys) and np.array_equal(before[1], self.query)
        return status, last_error(), untouched

    def rerotate(self, keys="default"):
        k = self.k if keys == "default" else keys
        return self._run(
            lambda: lib.kvx_rope_rerotate(
                k, self.c, self.old_ptr, self.new_ptr, self.pos_dtype, self.stream
            )
        )

    def apply(self, query="default", key="default"):
        q = self.q if query == "default" else query
        k = self.k if key == "default" else key
        return self._run(
            lambda: lib.kvx_rope_apply(q, k, self.c, self.new_ptr, self.pos_dtype, self.stream)
        )


@pytest.fixture
def c():
    return CCall()


def test_c_valid_calls(c):
    for run in (c.rerotate, c.apply):
        status, message, untouched = run()
        assert status == lib.KVX_OK and message == "" and not untouched
    status, _, _ = c.apply(key=ffi.NULL)
    assert status == lib.KVX_OK


def _expect(result, match, status=lib.KVX_ERR_INVALID_ARGUMENT):
    got, message, untouched = result
    assert got == status, (got, message)
    assert untouched, "a rejected call modified its input"
    assert re.search(match, message), message


@pytest.mark.parametrize(
    "field,value,match",
    [
        (
            "struct_size",
            3,
            r"keys->struct_size: expected sizeof\(kvx_rope_tensor\) \(\d+; .*\), got 3",
        ),
        (
            "struct_size",
            4096,
            r"keys->struct_size: expected sizeof\(kvx_rope_tensor\) \(\d+; .*\), got 4096",
        ),
        (
            "dtype",
            lib.KVX_DTYPE_INT8,
            r"keys->dtype: expected KVX_DTYPE_FLOAT32, FLOAT16 or BFLOAT16, got 7",
        ),
        ("num_layers", 0, r"keys->num_layers: expected 1\.\.\d+, got 0"),
        ("num_heads", -2, r"keys->num_heads: expected 1\.\.\d+, got -2"),
        ("num_tokens", -1, r"keys->num_tokens: expected 0\.\.\d+, got -1"),
        ("head_size", 8, r"keys->head_size: expected >= cache->rot_dim \(16\), got 8"),
        ("reserved0", 3, r"keys->reserved0: expected 0, got 3"),
        ("base", ffi.NULL, r"keys->base: expected a pointer, got NULL"),
        ("layer_stride", -1, r"keys->layer_stride: expected a non-negative stride, got -1"),
        ("token_stride", -32, r"keys->token_stride: expected a non-negative stride, got -32"),
        (
            "head_stride",
            2**63 - 1,
            r"keys->head_stride: stride \d+ overflows 64-bit offsets over 2 items",
        ),
        ("token_stride", 2**59, r"keys: strides address more than 2\^63 bytes"),
    ],
)
def test_c_tensor_fields(c, field, value, match):
    setattr(c.k, field, value)
    _expect(c.rerotate(), match)


@pytest.mark.parametrize(
    "field,value,match",
    [
        (
            "struct_size",
            0,
            r"cache->struct_size: expected sizeof\(kvx_rope_cache\) \(\d+; .*\), got 0",
        ),
        (
            "struct_size",
            49,
            r"cache->struct_size: expected sizeof\(kvx_rope_cache\) \(\d+; .*\), got 49",
        ),
        (
            "dtype",
            lib.KVX_DTYPE_FLOAT64,
            r"cache->dtype: expected KVX_DTYPE_FLOAT32, FLOAT16 or BFLOAT16, got 8",
        ),
        ("rot_dim", 15, r"cache->rot_dim: expected an even number >= 2, got 15"),
        ("rot_dim", 0, r"cache->rot_dim: expected an even number >= 2, got 0"),
        ("rot_dim", 32, r"keys->head_size: expected >= cache->rot_dim \(32\), got 16"),
        (
            "pairing",
            2,
            r"cache->pairing: expected KVX_ROPE_NEOX \(0\) or KVX_ROPE_GPTJ \(1\), got 2",
        ),
        ("max_position", 0, r"cache->max_position: expected 1\.\.\d+, got 0"),
        ("row_stride", -16, r"cache->row_stride: expected a non-negative stride, got -16"),
        (
            "row_stride",
            2**61,
            r"cache->row_stride: stride \d+ overflows 64-bit offsets over 40 items",
        ),
        ("row_stride", 2**57, r"cache: strides address more than 2\^63 bytes"),
        ("cos_sin", ffi.NULL, r"cache->cos_sin: expected a \[40, 16\] table, got NULL"),
    ],
)
def test_c_cache_fields(c, field, value, match):
    setattr(c.c, field, value)
    _expect(c.rerotate(), match)


def test_c_null_descriptors(c):
    _expect(c.rerotate(keys=ffi.NULL), r"keys: expected a kvx_rope_tensor, got NULL")
    _expect(c.apply(query=ffi.NULL), r"query: expected a kvx_rope_tensor, got NULL")
    c.c = ffi.NULL
    _expect(c.rerotate(), r"cache: expected a kvx_rope_cache, got NULL")


def test_c_positions(c):
    c.pos_dtype = lib.KVX_DTYPE_FLOAT32
    _expect(
        c.rerotate(),
        r"positions_dtype: expected KVX_DTYPE_INT64 \(10\) or KVX_DTYPE_INT32 \(9\), got 1",
    )
    c.pos_dtype = lib.KVX_DTYPE_INT64
    c.old_ptr = ffi.NULL
    _expect(c.rerotate(), r"old_positions: expected 9 entries, got NULL")
    c.old_ptr, c.new_ptr = ffi.cast("void *", c.old.ctypes.data), ffi.NULL
    _expect(c.rerotate(), r"new_positions: expected 9 entries, got NULL")
    _expect(c.apply(), r"positions: expected 9 entries, got NULL")
    c.new_ptr = ffi.cast("void *", c.new.ctypes.data)
    c.new[T - 1] = MAXPOS
    _expect(
        c.rerotate(),
        r"new_positions\[8\]: expected a position in \[0, 40\) "
        r"\(the cache's max_position\), got 40",
    )
    _expect(c.apply(), r"positions\[8\]: expected a position in \[0, 40\)")
    c.new[T - 1] = 0
    c.old[0] = -7
    _expect(c.rerotate(), r"old_positions\[0\]: expected a position in \[0, 40\) .*got -7")


def test_c_int32_positions_are_read_as_int32():
    """The first 9 int32 slots hold valid positions; read as int64 they would be 1 + 2**32, out
    of range. The int32 call must succeed and equal the same call with int64 positions."""
    as_int64, as_int32 = CCall(), CCall()
    as_int64.old[:], as_int64.new[:] = 1, 6
    status, message, _ = as_int64.rerotate()
    assert status == lib.KVX_OK, message
    as_int32.old.view(np.int32)[:T], as_int32.new.view(np.int32)[:T] = 1, 6
    as_int32.pos_dtype = lib.KVX_DTYPE_INT32
    status, message, untouched = as_int32.rerotate()
    assert status == lib.KVX_OK and not untouched, message
    np.testing.assert_array_equal(as_int32.keys, as_int64.keys)


def test_c_apply_key_checks(c):
    c.k.num_tokens = T - 1
    _expect(c.apply(), r"key->num_tokens: expected query->num_tokens \(9\), got 8")
    c.k.num_tokens = T
    c.k.dtype = 99
    _expect(c.apply(), r"key->dtype: expected KVX_DTYPE_FLOAT32, FLOAT16 or BFLOAT16, got 99")


def test_c_stream_without_backend(c):
    c.stream = ffi.new("kvx_stream *", dict(device_type=999, device_index=0, handle=ffi.NULL))
    _expect(
        c.rerotate(),
        r"stream->device_type: no backend for device type 999",
        lib.KVX_ERR_NOT_AVAILABLE,
    )
    _expect(
        c.apply(), r"stream->device_type: no backend for device type 999", lib.KVX_ERR_NOT_AVAILABLE
    )


# ---------------------------------------------------------------- overlap (C entry points)


@pytest.mark.parametrize(
    "fields,match",
    [
        (
            dict(head_stride=D // 2),
            r"keys->head_stride: expected >= cache->rot_dim \(16\), the elements a head rotates, "
            r"got 8: heads overlap, so elements would be rotated twice",
        ),
        (dict(head_stride=0), r"keys->head_stride: .* got 0: heads overlap"),
        (
            dict(token_stride=0),
            r"keys->token_stride: expected >= cache->rot_dim \(16\), .* got 0: tokens overlap",
        ),
        (
            dict(token_stride=D),
            r"keys->token_stride: expected >= 32, the elements one token's heads span, got 16: "
            r"tokens overlap",
        ),
        (
            dict(num_layers=2, layer_stride=D),
            r"keys->layer_stride: expected >= 32, the elements one layer's heads span, got 16: "
            r"layers overlap",
        ),
        (
            dict(num_layers=2, layer_stride=H * D + 8),
            r"keys->layer_stride: expected >= 288, the elements one layer's heads and tokens "
            r"span, got 40: layers overlap",
        ),
    ],
    ids=[
        "head_stride=8",
        "head_stride=0",
        "token_stride=0",
        "token_stride=16",
        "layer_stride=16",
        "layer_stride=40",
    ],
)
def test_c_keys_whose_head_vectors_overlap(c, fields, match):
    # more room than any of these views reaches
    room = np.random.default_rng(3).standard_normal((2 * T, H, D)).astype(np.float32)
    before = room.copy()
    keys = CCall._tensor(room, **fields)
    _expect(c.rerotate(keys), match)
    _expect(c.apply(query=keys, key=ffi.NULL), match.replace("keys", "query"))
    np.testing.assert_array_equal(room, before)


def test_c_one_token_may_repeat_its_stride():
    """A single token's token_stride is never used: 0 is no overlap."""
    c = CCall()
    c.k = CCall._tensor(c.keys, num_tokens=1, token_stride=0)
    status, message, untouched = c.rerotate()
    assert status == lib.KVX_OK and not untouched, message


def test_c_heads_may_share_the_elements_past_rot_dim():
    """Only the first rot_dim elements of a head vector are touched: heads 8 apart with head_size
    16 and rot_dim 8 are disjoint, and rotate as the same heads stored apart."""
    rng = np.random.default_rng(5)
    buf = rng.standard_normal((T, 2 * D)).astype(np.float32)
    apart = np.ascontiguousarray(buf[:, :D].reshape(T, 2, D // 2))
    before = buf.copy()
    c = CCall()
    c.c.rot_dim = D // 2
    for keys in (
        CCall._tensor(buf, num_heads=2, token_stride=2 * D, head_stride=D // 2),
        CCall._tensor(apart, head_size=D // 2, token_stride=D, head_stride=D // 2),
    ):
        status, message, _ = c.rerotate(keys)
        assert status == lib.KVX_OK, message
    np.testing.assert_array_equal(buf[:, :D], apart.reshape(T, D))
    np.testing.assert_array_equal(buf[:, D:], before[:, D:])


@pytest.mark.parametrize(
    "key,match",
    [
        ("query", r"^key: overlaps query \(the same elements would be rotated twice\); pass "),
        (dict(offset=D, num_heads=1), r"^key: overlaps query \(the same elements"),
        (
            dict(offset=D, num_heads=1, token_stride=2 * D),
            r"^key: shares memory with query, with another token stride \(128 bytes against "
            r"192\)",
        ),
        (
            dict(offset=2 * D, num_heads=2, num_tokens=T - 1),
            r"^key: shares memory with query, and one token of the two spans 256 bytes, more than "
            r"their token stride \(192 bytes\)",
        ),
    ],
    ids=["same-view", "one-head-of-query", "another-token-stride", "token-wider-than-stride"],
)
def test_c_apply_key_overlapping_query(c, key, match):
    query = c.q
    if key == "query":
        key = c.q
    else:
        offset = key.pop("offset")
        key = CCall._tensor(c.query, base=c.query.ctypes.data + 4 * offset, **key)
        if key.num_tokens < T:  # the key would reach past the buffer: fewer tokens for both
            query = CCall._tensor(c.query, num_tokens=key.num_tokens)
    _expect(c.apply(query, key), match)


HQ, HK = 3, 2


def _fused(layout: str) -> tuple[np.ndarray, dict, dict]:
    """A [T, ...] float32 buffer and the query and key views of it (element offset, heads,
    strides) that engines make: vLLM and SGLang's qkv[:, :q_size] and qkv[:, q_size:][:k_size]
    (and key first), and a [T, H, 3, D] tensor's [:, :, 0] and [:, :, 1] (GPT-NeoX's layout)."""
    rng = np.random.default_rng(11)
    if layout == "per-head":
        row = 3 * HQ * D
        q = dict(offset=0, heads=HQ, head_stride=3 * D)
        k = dict(offset=D, heads=HQ, head_stride=3 * D)
    else:
        row = (HQ + 2 * HK) * D
        q = dict(offset=0 if layout == "qkv" else HK * D, heads=HQ, head_stride=D)
        k = dict(offset=HQ * D if layout == "qkv" else 0, heads=HK, head_stride=D)
    return rng.standard_normal((T, row)).astype(np.float32), q, k


def _strided(buf: np.ndarray, view: dict) -> np.ndarray:
    row = buf.shape[1]
    return np.lib.stride_tricks.as_strided(
        buf.reshape(-1)[view["offset"] :],
        shape=(T, view["heads"], D),
        strides=(4 * row, 4 * view["head_stride"], 4),
    )


@pytest.mark.parametrize("layout", ["qkv", "kqv", "per-head"])
def test_c_apply_accepts_query_and_key_views_of_one_fused_tensor(layout):
    """Their address ranges interleave token by token, their elements do not: accepted, and
    rotated as the same query and key stored apart; the rest (values) untouched."""
    buf, qv, kv = _fused(layout)
    expected = buf.copy()
    query, key = _strided(buf, qv).copy(), _strided(buf, kv).copy()
    c = CCall()
    status, message, _ = c.apply(CCall._tensor(query), CCall._tensor(key))
    assert status == lib.KVX_OK, message
    _strided(expected, qv)[...] = query
    _strided(expected, kv)[...] = key

    def view(v):
        return CCall._tensor(
            buf,
            base=buf.ctypes.data + 4 * v["offset"],
            num_heads=v["heads"],
            token_stride=buf.shape[1],
            head_stride=v["head_stride"],
        )

    status, message, _ = c.apply(view(qv), view(kv))
    assert status == lib.KVX_OK, message
    np.testing.assert_array_equal(buf, expected)


# ---------------------------------------------------------------- alignment (C entry points)


def _set_keys_base(c, p):
    c.k.base = p


def _set_query_base(c, p):
    c.q.base = p


def _set_cos_sin(c, p):
    c.c.cos_sin = p


def _set_old(c, p):
    c.old_ptr = p


def _set_new(c, p):
    c.new_ptr = p


# (argument, the call, the array it points to, how to point it elsewhere, dtype of the tensors
# or positions, bytes past an aligned address, the alignment the message asks for)
F32, F16, BF16 = lib.KVX_DTYPE_FLOAT32, lib.KVX_DTYPE_FLOAT16, lib.KVX_DTYPE_BFLOAT16
I64, I32 = lib.KVX_DTYPE_INT64, lib.KVX_DTYPE_INT32
MISALIGNED = [
    ("keys->base", "rerotate", "keys", _set_keys_base, F32, 2, "4 bytes (float32)"),
    ("keys->base", "rerotate", "keys", _set_keys_base, F16, 1, "2 bytes (float16)"),
    ("keys->base", "rerotate", "keys", _set_keys_base, BF16, 3, "2 bytes (bfloat16)"),
    ("query->base", "apply", "query", _set_query_base, F32, 1, "4 bytes (float32)"),
    ("key->base", "apply", "keys", _set_keys_base, F32, 2, "4 bytes (float32)"),
    ("cache->cos_sin", "rerotate", "cs", _set_cos_sin, F32, 2, "4 bytes (float32)"),
    ("old_positions", "rerotate", "old", _set_old, I64, 4, "8 bytes (int64)"),
    ("new_positions", "rerotate", "new", _set_new, I64, 1, "8 bytes (int64)"),
    ("old_positions", "rerotate", "old", _set_old, I32, 2, "4 bytes (int32)"),
    ("positions", "apply", "new", _set_new, I64, 4, "8 bytes (int64)"),
]


@pytest.mark.parametrize(
    "name,call,array,point,dtype,offset,alignment",
    MISALIGNED,
    ids=[f"{m[0]}-{m[5]}-{i}" for i, m in enumerate(MISALIGNED)],
)
def test_c_misaligned_pointer(c, name, call, array, point, dtype, offset, alignment):
    """Refused for every backend (an unknown device type still gets the alignment message: it
    is checked before a backend is chosen), naming the argument; nothing written."""
    if array in ("old", "new"):
        c.pos_dtype = dtype
    elif array != "cs":
        c.k.dtype = c.q.dtype = dtype
    buf, address = misaligned_copy(getattr(c, array), offset)
    before = buf.copy()
    point(c, ffi.cast("void *", address))
    want = rf"^{re.escape(name)}: expected an address aligned to {re.escape(alignment)}, "
    want += rf"got {address:#x}$"
    _expect(getattr(c, call)(), want)
    c.stream = ffi.new("kvx_stream *", dict(device_type=999, device_index=0, handle=ffi.NULL))
    _expect(getattr(c, call)(), want)
    np.testing.assert_array_equal(buf, before)
