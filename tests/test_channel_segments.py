"""kvx.channel's segments, in one process: the sender gathers a request a few layers at a time
and puts its first segments on the wire before it gathers the last ones, each followed by a
trailer with its CRC-32; a gathering that fails half-way marks the rest abandoned; the
receiver's check (payload.SegmentCheck) names the first segment that fails. The two-process
tests are in tests/test_channel.py."""

from __future__ import annotations

import queue
import threading
import zlib
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import kvx  # noqa: E402
from kvx import channel  # noqa: E402
from kvx.channel import WireFormatError, base, payload, wire  # noqa: E402

LAYERS, TOKENS, HEADS, HEAD_SIZE = 4, 40, 2, 16
LAYER_BYTES = 2 * TOKENS * HEADS * HEAD_SIZE * 2  # 5120: a segment of 4096 ends inside a layer


class Loopback(base.Transport):
    """A sender's transport that keeps what it is sent and answers each frame itself."""

    name = "loopback"

    def __init__(self, role: str, address: str, *, timeout: float = 30.0) -> None:
        self.role, self.address, self.chunk_bytes = role, address, 3000
        self.frames: list[tuple[wire.Header, bytearray, list[bytes]]] = []
        self.written = threading.Event()  # the first payload bytes went
        self._replies: queue.Queue[bytes] = queue.Queue()

    def begin(self, header: wire.Header, header_bytes: bytes) -> None:
        self.frames.append((wire.parse_header(header_bytes), bytearray(), []))

    def write(self, offset: int, chunk: Any) -> None:
        data = self.frames[-1][1]
        assert offset == len(data)
        data += chunk.numpy().tobytes()
        self.written.set()

    def seal(self, trailer: bytes) -> None:
        header, _, trailers = self.frames[-1]
        trailers.append(trailer)
        if len(trailers) == header.num_segments:
            self._replies.put(wire.pack_reply(header.request_id, wire.LANDED))

    def end(self) -> None:
        self._replies.put(wire.pack_reply("", wire.GOODBYE))

    def next_reply(self) -> bytes:
        return self._replies.get()

    def next_frame(self, check: Any, inspect: Any) -> base.Frame | None:
        raise NotImplementedError

    def reply(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


@pytest.fixture
def link() -> Loopback:
    link = Loopback(base.SENDER, "local:0")
    channel.register("loopback", lambda role, address, **options: link)
    return link


def _request() -> tuple[list[Any], Any, bytes]:
    """A vLLM NHD cache, its slots (token 3 skipped), and the payload it must give."""
    g = torch.Generator().manual_seed(5)
    cache = [
        torch.randn(2, 8, 16, HEADS, HEAD_SIZE, generator=g).to(torch.bfloat16)
        for _ in range(LAYERS)
    ]
    slots = torch.randperm(128, generator=g)[:TOKENS]
    slots[3] = -1
    dense = torch.empty(2, LAYERS, TOKENS, HEADS * HEAD_SIZE, dtype=torch.bfloat16)
    kvx.store(cache, dense, slots)
    dense[:, :, 3] = 0  # a skipped token goes as zeros
    return cache, slots, dense.transpose(0, 1).contiguous().view(torch.uint8).numpy().tobytes()


def test_first_segments_go_before_the_last_layer_is_gathered(link: Loopback, monkeypatch) -> None:
    gather, waited = payload.gather, []

    def gather_last_after_a_write(side: Any, buffer: Any, first: int = 0, count: Any = None):
        if first == LAYERS - 1:  # a sender that gathers everything first never gets here
            waited.append(link.written.wait(60))
        return gather(side, buffer, first, count)

    monkeypatch.setattr(payload, "gather", gather_last_after_a_write)
    cache, slots, want = _request()
    with channel.Sender("loopback", link.address, segment_bytes=4096) as tx:
        tx.send("r", cache, slots).wait(60)
    assert waited == [True]
    [(header, data, trailers)] = link.frames
    assert (header.segment_bytes, header.num_segments) == (4096, 5) and bytes(data) == want
    for index, trailer in enumerate(trailers):
        start, end = header.segment(index)
        assert wire.parse_trailer(trailer, index, "r") == wire.Trailer(
            index, zlib.crc32(want[start:end])
        )


def test_a_gathering_that_fails_half_way_abandons_the_rest(link: Loopback, monkeypatch) -> None:
    gather = payload.gather

    def gather_one_layer(side: Any, buffer: Any, first: int = 0, count: Any = None):
        if first > 0:
            raise RuntimeError("the cache went away")
        return gather(side, buffer, first, count)

    monkeypatch.setattr(payload, "gather", gather_one_layer)
    cache, slots, _ = _request()
    failed = r"gathering failed: RuntimeError\('the cache went away'\)"
    with (
        channel.Sender("loopback", link.address, segment_bytes=4096) as tx,
        pytest.raises(channel.ChannelError, match=failed),
    ):
        tx.send("r", cache, slots).wait(60)
    [(_, _, trailers)] = link.frames
    flags = [wire.parse_trailer(t, i, "r").abandoned for i, t in enumerate(trailers)]
    assert flags == [False, True, True, True, True]  # the first layer covers segment 0 only


def test_a_write_that_loses_the_peer_fails_the_request_by_name(link: Loopback, monkeypatch) -> None:
    # A transport's write does not know the request; the sender names it. Which of the link's
    # threads sees the loss first must not change the message.
    def write_to_a_lost_peer(offset: int, chunk: Any) -> None:
        raise channel.PeerLostError("the write failed")

    monkeypatch.setattr(link, "write", write_to_a_lost_peer)
    monkeypatch.setattr(link, "close", link.end)  # unblocks the sender's reply thread
    cache, slots, _ = _request()
    with channel.Sender("loopback", link.address, segment_bytes=4096) as tx:
        handle = tx.send("r", cache, slots)
        with pytest.raises(channel.PeerLostError, match=r"^request 'r': the write failed$"):
            handle.wait(60)


@pytest.mark.parametrize("layout", sorted(kvx.layouts.PAGED_LAYOUTS))
def test_gathering_a_few_layers_at_a_time_gives_the_whole_gather(layout: str) -> None:
    from transfer_cases import Geometry, make_paged

    g = torch.Generator().manual_seed(len(layout))
    paged = make_paged(layout, Geometry(3, 4, 4, 2, 8), torch.float16, g)
    slots = torch.randperm(16, generator=g)[:10]
    slots[2] = -1
    side = payload.resolve(paged, slots, layout)
    whole = torch.full((side.raw_bytes,), 7, dtype=torch.uint8)
    payload.gather(side, whole)
    for groups in ([(0, 1), (1, 1), (2, 1)], [(0, 2), (2, 1)]):
        parts = torch.full((side.raw_bytes,), 9, dtype=torch.uint8)
        for first, count in groups:
            payload.gather(side, parts, first, count)
        assert torch.equal(parts, whole), (layout, groups)


def _checked(data: bytes, trailers: list[bytes]) -> payload.SegmentCheck:
    header = wire.Header("r", 3, 2, 1, 2, 10, 1, 250, len(data), 4096, wire.FLAG_COMPRESSED)
    check = payload.SegmentCheck(header)
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    for index, trailer in enumerate(trailers):
        start, end = header.segment(index)
        check(index, buffer[start:end], trailer)
    return check


def test_segment_check_names_the_first_segment_that_fails() -> None:
    data = np.random.default_rng(0).integers(0, 256, 10000, dtype=np.uint8).tobytes()
    trailers = [
        wire.pack_trailer(wire.Trailer(i, zlib.crc32(data[i * 4096 : (i + 1) * 4096])))
        for i in range(3)
    ]
    assert _checked(data, trailers).error is None
    damaged = data[:5000] + bytes([data[5000] ^ 1]) + data[5001:]
    error = _checked(damaged, trailers).error
    assert isinstance(error, WireFormatError) and error.request_id == "r"
    assert "CRC-32 mismatch in segment 1 of 3 (payload bytes 4096..8192)" in str(error)
    error = _checked(damaged, [trailers[0], trailers[2], trailers[1]]).error
    assert "trailer of segment 1: says segment 2" in str(error)
    abandoned = wire.pack_trailer(wire.Trailer(2, 0, abandoned=True))
    error = _checked(data, [*trailers[:2], abandoned]).error
    assert type(error) is channel.ChannelError and "abandoned it" in str(error)


def test_crc32_is_zlibs_and_kvx_computes_it(monkeypatch) -> None:
    data = np.random.default_rng(1).integers(0, 256, 100_003, dtype=np.uint8)
    calls = []

    def counted(buffer: Any, value: int = 0) -> int:
        calls.append(buffer.numel())
        return kvx_crc32(buffer, value)

    kvx_crc32 = kvx.checksum.crc32
    monkeypatch.setattr(kvx.checksum, "crc32", counted)
    assert payload.crc32(torch.from_numpy(data)[3:]) == zlib.crc32(data[3:].tobytes())
    assert calls == [data.size - 3]
