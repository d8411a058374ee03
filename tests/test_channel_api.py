"""kvx.channel's API inside one process: argument errors surface in the caller, and (where the
Mooncake wheel loads: both of its engines can live in one process) numpy caches and float32
compressed requests land. The two-process tests are in tests/test_channel.py."""

from __future__ import annotations

import numpy as np
import pytest
from channel_peers import mooncake_missing

torch = pytest.importorskip("torch")
import kvx  # noqa: E402
from kvx import channel  # noqa: E402

needs_mooncake = pytest.mark.skipif(
    mooncake_missing() is not None, reason=f"mooncake cannot load: {mooncake_missing()}"
)


def test_an_unknown_transport_or_address_is_refused() -> None:
    with pytest.raises(ValueError, match="transport: expected one of"):
        channel.Sender("carrier-pigeon", "127.0.0.1:1")
    with pytest.raises(ValueError, match="address: expected 'host:port'"):
        channel.Receiver("torch", "localhost")
    with pytest.raises(ValueError, match=r"segment_bytes: expected 4096\.\.4294967295, got 4095"):
        channel.Sender("torch", "127.0.0.1:1", segment_bytes=4095)


@pytest.fixture
def pair():
    rx = channel.Receiver("mooncake", "127.0.0.1:0", timeout=10, staging_bytes=1 << 20)
    tx = channel.Sender("mooncake", rx.address, timeout=10, staging_bytes=1 << 20)
    yield tx, rx
    tx.close(timeout=10)
    rx.close(timeout=10)


@needs_mooncake
def test_bad_arguments_raise_in_the_caller(pair) -> None:
    tx, rx = pair
    cache = [torch.zeros(2, 4, 16, 2, 8) for _ in range(2)]
    with pytest.raises(kvx.InvalidArgumentError, match="slot_mapping"):
        tx.send("r", cache, torch.arange(4, dtype=torch.int32))
    with pytest.raises(kvx.InvalidArgumentError, match="layout"):
        rx.expect("r", cache, torch.arange(4), layout="vllm_nhd_typo")
    with pytest.raises(ValueError, match="request_id"):
        tx.send("x" * 200, cache, torch.arange(4))
    handle = rx.expect("r", cache, torch.arange(4))
    with pytest.raises(ValueError, match="already expected"):
        rx.expect("r", cache, torch.arange(4))
    with pytest.raises(TimeoutError, match="'r'"):
        handle.wait(0.01)
    assert not handle.done()
    tx.send("r", cache, torch.arange(4)).wait(10)
    handle.wait(10)


@needs_mooncake
def test_numpy_caches_land(pair) -> None:
    tx, rx = pair
    rng = np.random.default_rng(0)
    src = [rng.standard_normal((2, 4, 16, 2, 8)).astype(np.float16) for _ in range(3)]
    dst = tuple([np.zeros((64, 2, 8), np.float16) for _ in range(3)] for _ in "KV")
    landing = rx.expect("np", dst, np.arange(10, 30, dtype=np.int64), layout="sglang_mha")
    tx.send("np", src, np.arange(20, dtype=np.int64)).wait(10)
    landing.wait(10)
    for kv in range(2):
        for layer in range(3):
            want = src[layer][kv].reshape(-1, 2, 8)[:20]
            assert np.array_equal(dst[kv][layer][10:30], want)
            assert not dst[kv][layer][:10].any() and not dst[kv][layer][30:].any()


@needs_mooncake
def test_float32_compressed_lands_as_the_codec_decodes(pair) -> None:
    tx, rx = pair
    src = [torch.randn(2, 4, 16, 2, 8) for _ in range(3)]
    dst = [torch.zeros(2, 8, 8, 2, 8) for _ in range(3)]  # block size 8 on this side
    slots = torch.arange(64)
    landing = rx.expect("f32", dst, slots)
    tx.send("f32", src, slots, compress=True).wait(10)
    landing.wait(10)
    dense = torch.empty(2, 3, 64, 16)
    kvx.store(src, dense, slots)
    decoded = kvx.codec.decode(kvx.codec.encode(dense))
    got = torch.empty(2, 3, 64, 16)
    kvx.store(dst, got, slots)
    assert torch.equal(got, decoded) and not torch.equal(got, dense)


class _Staging:
    """The default staging of a transport, on its own."""

    from kvx.channel import base as _base

    allocate = _base.Transport.allocate
    staging = _base.Transport.staging
    release_staging = _base.Transport.release_staging
    _staging_pool = _base.Transport._staging_pool


def test_staging_reuses_a_large_enough_spare_wherever_it_is_kept() -> None:
    """Spares are kept smallest first; taking the larger one out of the list must not compare
    tensors of different sizes (list.remove would, element-wise)."""
    link = _Staging()
    big, small = link.staging(10240), link.staging(7435)
    link.release_staging(big)
    link.release_staging(small)
    again = link.staging(9000)
    assert again.numel() == 9000 and again._base is big._base
    assert link.staging(7000)._base is small._base
