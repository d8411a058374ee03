"""kvx.channel end to end: a sender and a receiver process on 127.0.0.1, for each transport.

One pair of processes per transport carries every layout pair (raw and compressed), requests
whose payload is damaged in transit (in its first or last segment), and one whose layouts cannot
match, with a receiver that names its requests later than they arrive. Further pairs kill or
stall the sender in the middle of a payload, make it abandon a request whose first segments it
sent, kill the receiver in the middle of a payload, or fill the receiver's staging with
requests it does not expect yet. The receiving caches
come back to this process and are compared, whole, with what kvx.reference (and kvx.codec, for
compressed requests) says must be there.

The senders cut payloads into segments of 4096 bytes (the smallest), so that a request of the
MHA cases (10 KiB) has three, each checked on its own.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import socket
from typing import Any

import channel_peers as peers
import numpy as np
import pytest
from channel_peers import Case

torch = pytest.importorskip("torch")
import kvx  # noqa: E402
from kvx import reference  # noqa: E402

SEGMENTS = {"segment_bytes": 4096}  # the sender's: three segments per MHA request
TRANSPORTS = [
    "torch",
    pytest.param(
        "mooncake",
        marks=pytest.mark.skipif(
            peers.mooncake_missing() is not None,
            reason=f"mooncake cannot load: {peers.mooncake_missing()}",
        ),
    ),
]


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _get(q: Any, who: str) -> Any:
    try:
        item = q.get(timeout=peers.WAIT + 30)
    except queue.Empty:
        pytest.fail(f"the {who} process reported nothing in time")
    if isinstance(item, str) and item.startswith("Traceback"):
        pytest.fail(f"the {who} process failed:\n{item}")
    return item


_KILLED = frozenset({-signal.SIGKILL})


class Pair:
    """A receiver process and the sender processes that talk to it; all are ended on exit, and
    each must have exited cleanly (status 0) unless it was killed on purpose."""

    def __init__(
        self,
        transport: str,
        rx_cases: list[Case],
        rx_options: dict,
        slow: float = 0.0,
        first_alone: bool = False,
    ):
        self.ctx = multiprocessing.get_context("spawn")
        self.transport, self.processes = transport, []
        self.exits: dict[Any, set[int]] = {}  # process -> the statuses it may end with
        self.rx_out = self.ctx.Queue()
        address = _free_address() if transport == "torch" else "127.0.0.1:0"
        args = (transport, address, rx_cases, rx_options, slow, self.rx_out, first_alone)
        self._start(peers.receiver_main, args)
        self.address = address if transport == "torch" else _get(self.rx_out, "receiver")

    def _start(self, target: Any, args: tuple, exits: frozenset = frozenset({0})) -> None:
        process = self.ctx.Process(target=target, args=args, daemon=True)
        process.start()
        self.processes.append(process)
        self.exits[process] = set(exits)

    def send(
        self, cases: list[Case], options: dict, fault: str = "", after: list[Case] = ()
    ) -> Any:
        """Starts a sender process for ``cases``, then ``after`` (once those are done)."""
        out = self.ctx.Queue()
        args = (self.transport, self.address, cases, options, fault, out, list(after))
        self._start(peers.sender_main, args, _KILLED if fault == "kill" else frozenset({0}))
        return out

    def kill_senders(self) -> None:
        for process in self.processes[1:]:
            self.exits[process] |= _KILLED
            process.kill()

    def receiver_results(self) -> dict[str, tuple[str | None, Any]]:
        if self.transport == "torch":
            _get(self.rx_out, "receiver")  # its address, known already
        return {rid: (error, paged) for rid, error, paged in _get(self.rx_out, "receiver")}

    def __enter__(self) -> Pair:
        return self

    def __exit__(self, *exc: Any) -> None:
        for process in self.processes:
            process.join(timeout=30)
        statuses = [(process.name, process.exitcode) for process in self.processes]
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
        if exc[0] is None:  # the test's own failure says more
            for process, (name, status) in zip(self.processes, statuses, strict=True):
                assert status in self.exits[process], f"{name} ended with status {status}"


def _bits(paged: Any) -> list[Any]:
    """Every tensor of a paged cache as raw 16-bit words (compares bytes, NaN or not)."""
    return peers.as_words(paged)


def expected_cache(case: Case) -> Any:
    """What the receiving cache holds after ``case``, computed with kvx.reference."""
    src = peers.make_cache(case.tx_layout, "tx", case.seed)
    dst = peers.make_cache(case.rx_layout, "rx", case.seed)
    mla = case.tx_layout == "mla"
    kv, width = (1, peers.MLA_DIM) if mla else (2, peers.HEADS * peers.HEAD_SIZE)
    dense = torch.zeros(kv, peers.LAYERS, peers.TOKENS, width, dtype=torch.bfloat16)
    fmt = "MLA_1LTD" if mla else "KV_2LTD"
    reference.transfer(
        src, dense, peers.make_slots("tx", case.seed), direction="store", layout=case.tx_layout,
        dense_format=fmt,
    )  # fmt: skip
    if case.compress:
        dense = kvx.codec.decode(kvx.codec.encode(dense))
    reference.transfer(
        dst, dense, peers.make_slots("rx", case.seed), direction="load", layout=case.rx_layout,
        dense_format=fmt,
    )  # fmt: skip
    return dst


def assert_landed(case: Case, paged: Any) -> None:
    want = _bits(expected_cache(case))
    initial = _bits(peers.make_cache(case.rx_layout, "rx", case.seed))
    assert any(not np.array_equal(w, i) for w, i in zip(want, initial, strict=True))
    for i, (g, w) in enumerate(zip(paged, want, strict=True)):
        assert np.array_equal(g, w), f"{case.request_id}: tensor {i} of the receiving cache differs"


def assert_untouched(case: Case, paged: Any) -> None:
    initial = _bits(peers.make_cache(case.rx_layout, "rx", case.seed))
    for i, (g, w) in enumerate(zip(paged, initial, strict=True)):
        assert np.array_equal(g, w), f"{case.request_id}: tensor {i} was written to"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_layout_pair_lands_and_bad_requests_do_not(transport: str) -> None:
    cases = peers.layout_cases()
    corrupt = Case("corrupt-payload", "vllm_nhd", "vllm_hnd", False, 100)
    corrupt_codec = Case("corrupt-codec", "vllm_nhd", "sglang_mha", True, 101)
    corrupt_tail = Case("tail-corrupt", "vllm_hnd", "vllm_nhd", False, 103)
    mismatch = Case("mla-into-mha", "mla", "vllm_nhd", False, 102)
    bad = [corrupt, corrupt_codec, corrupt_tail, mismatch]
    # The bad ones go first: the channel must stay usable for everything after them.
    order = bad + cases
    options = {"timeout": peers.TIMEOUT}
    # A slow receiver: it names each request 0.05 s after the previous one, so most frames wait.
    with Pair(transport, order, options, slow=0.05) as pair:
        sent = dict(_get(pair.send(order, {**options, **SEGMENTS}), "sender"))
        landed = pair.receiver_results()
    for case in cases:
        error, paged = landed[case.request_id]
        assert error is None, error
        assert sent[case.request_id] is None, sent[case.request_id]
        assert_landed(case, paged)
    for case, where in ((corrupt, "segment 0 of"), (corrupt_codec, "segment 0 of"),
                        (corrupt_tail, "segment 2 of 3")):  # fmt: skip
        error, paged = landed[case.request_id]
        assert error and "WireFormatError" in error and "CRC-32" in error, error
        assert case.request_id in error and where in error, error
        assert "RejectedError" in sent[case.request_id] and "CRC-32" in sent[case.request_id]
        assert_untouched(case, paged)
    error, paged = landed[mismatch.request_id]
    assert error and "RejectedError" in error and "shape" in error and mismatch.request_id in error
    assert "RejectedError" in sent[mismatch.request_id]
    assert_untouched(mismatch, paged)


@pytest.mark.parametrize("fault", ["kill", "stall"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_sender_lost_mid_payload_fails_its_request_and_writes_nothing(
    transport: str, fault: str
) -> None:
    before = Case("before", "vllm_nhd", "sglang_mha", False, 200)
    victim = Case("victim", "vllm_nhd", "sglang_mha", False, 201)
    after = Case("after", "vllm_hnd", "vllm_nhd", False, 202)
    # 1 KiB chunks: the victim's 10 KiB payload stops after its first chunk.
    options = {"timeout": 3.0, "chunk_bytes": 1024}
    with Pair(transport, [before, victim, after], options) as pair:
        first = pair.send([before, victim], {**options, **SEGMENTS}, fault)
        if transport == "mooncake":
            # Mooncake's receiver keeps serving: a new sender's request lands.
            _get(pair.send([after], {**options, **SEGMENTS}), "second sender")
        landed = pair.receiver_results()
        if fault == "stall":
            assert _get(first, "stalled sender")[0] == ("before", None)
            pair.kill_senders()  # it sleeps in the middle of the victim's payload
    error, paged = landed["before"]
    assert error is None, error
    assert_landed(before, paged)
    error, paged = landed["victim"]
    kind = "PeerLostError" if fault == "kill" else "StalledError"
    assert error and kind in error and "'victim'" in error, error
    assert_untouched(victim, paged)
    error, paged = landed["after"]
    if transport == "mooncake":
        assert error is None, error
        assert_landed(after, paged)
    else:  # a torch.distributed group does not outlive its peer
        assert error and kind in error, error
        assert_untouched(after, paged)


def _start_pair(
    transport: str, rx_target: Any, rx_args: tuple, tx_target: Any, tx_args: tuple
) -> tuple[Any, Any, Any, Any]:
    """Starts a receiver process, ``rx_target(transport, address, *rx_args, rx_out)``, then a
    sender process that talks to it, ``tx_target(transport, address, *tx_args, tx_out)``.
    Returns (receiver, sender, rx_out, tx_out) once the receiver has reported its address."""
    ctx = multiprocessing.get_context("spawn")
    rx_out, tx_out = ctx.Queue(), ctx.Queue()
    address = _free_address() if transport == "torch" else "127.0.0.1:0"
    receiver = ctx.Process(target=rx_target, args=(transport, address, *rx_args, rx_out))
    receiver.start()
    address = _get(rx_out, "receiver") if transport != "torch" else address
    sender = ctx.Process(target=tx_target, args=(transport, address, *tx_args, tx_out))
    sender.start()
    if transport == "torch":
        _get(rx_out, "receiver")  # its address, known already
    return receiver, sender, rx_out, tx_out


def _join_or_kill(*processes: Any) -> None:
    for process in processes:
        process.join(timeout=peers.WAIT)
        if process.is_alive():
            process.kill()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_receiver_lost_mid_payload_fails_the_senders_requests_in_flight(transport: str) -> None:
    before = Case("before", "vllm_nhd", "vllm_hnd", False, 210)
    victim = Case("victim", "vllm_nhd", "vllm_hnd", False, 211)
    queued = Case("queued", "vllm_hnd", "vllm_nhd", True, 212)
    options = {"timeout": peers.TIMEOUT, **SEGMENTS}
    receiver, sender, rx_out, tx_out = _start_pair(
        transport, peers.dying_receiver_main, ([before, victim],),
        peers.sender_main, ([before, victim, queued], options, ""),
    )  # fmt: skip
    assert _get(rx_out, "receiver") is None  # "before" landed
    sent = dict(_get(tx_out, "sender"))
    _join_or_kill(sender, receiver)
    assert sent["before"] is None, sent
    for rid in ("victim", "queued"):
        assert sent[rid] and "PeerLostError" in sent[rid] and repr(rid) in sent[rid], sent
    assert (receiver.exitcode, sender.exitcode) == (-signal.SIGKILL, 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_damaged_header_is_refused(transport: str) -> None:
    garbage = Case("garbage", "vllm_nhd", "vllm_nhd", False, 300)
    after = Case("after", "vllm_nhd", "vllm_nhd", False, 301)
    options = {"timeout": 3.0}
    # The receiver names only `after`: a damaged header's request id cannot be trusted.
    with Pair(transport, [after], options) as pair:
        sent = dict(_get(pair.send([garbage, after], options), "sender"))
        landed = pair.receiver_results()
    error, paged = landed["after"]
    if transport == "mooncake":  # refused by the control path; the next request lands
        assert "RejectedError" in sent["garbage"] and "CRC-32" in sent["garbage"], sent
        assert error is None and sent["after"] is None, (error, sent)
        assert_landed(after, paged)
    else:  # the payload's length is unknown: the torch channel cannot go on
        assert error and "WireFormatError" in error and "CRC-32" in error, error
        assert "cannot skip the payload" in error
        assert "Error" in sent["garbage"] and "Error" in sent["after"], sent
        assert_untouched(after, paged)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_request_abandoned_after_its_first_segments_fails_and_the_next_lands(
    transport: str,
) -> None:
    abandoned = Case("abandoned", "vllm_nhd", "vllm_hnd", False, 400)
    after = Case("after", "vllm_hnd", "sglang_mha", False, 401)
    options = {"timeout": peers.TIMEOUT}
    # Its first layer's segment goes, then gathering the second layer fails.
    with Pair(transport, [abandoned, after], options) as pair:
        sent = dict(
            _get(pair.send([abandoned, after], {**options, **SEGMENTS}, "abandon"), "sender")
        )
        landed = pair.receiver_results()
    assert "gathering failed" in sent["abandoned"] and "on purpose" in sent["abandoned"], sent
    error, paged = landed["abandoned"]
    assert error and "abandoned it" in error and "'abandoned'" in error, error
    assert_untouched(abandoned, paged)
    error, paged = landed["after"]
    assert error is None and sent["after"] is None, (error, sent)
    assert_landed(after, paged)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unexpected_requests_wait_within_staging_bytes_and_one_more_is_refused(
    transport: str,
) -> None:
    held = [Case(f"held-{i}", "vllm_nhd", "vllm_nhd", False, 500 + i) for i in range(2)]
    refused = Case("refused", "vllm_nhd", "vllm_nhd", False, 502)
    later = Case("later", "vllm_nhd", "vllm_nhd", False, 503)
    # Room for two 10 KiB payloads (12 KiB each in Mooncake's 4 KiB-aligned pool), not three.
    rx_options = {"timeout": 3.0, "staging_bytes": 25 << 10}
    # The receiver expects `refused` alone until it failed: the two before it, received and not
    # expected, fill its staging. `later` goes once the others are done (and their room free).
    with Pair(transport, [refused, *held, later], rx_options, first_alone=True) as pair:
        out = pair.send([*held, refused], {"timeout": 3.0}, after=[later])
        sent = dict(_get(out, "sender"))
        landed = pair.receiver_results()
    error, paged = landed["refused"]
    assert error and "RejectedError" in error and "no room" in error, error
    assert "RejectedError" in sent["refused"] and "no room" in sent["refused"], sent
    assert_untouched(refused, paged)
    for case in [*held, later]:
        error, paged = landed[case.request_id]
        assert error is None and sent[case.request_id] is None, (error, sent)
        assert_landed(case, paged)


@pytest.mark.parametrize("close", [True, False], ids=["closed", "left-open"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_processes_exit_cleanly_after_a_large_compressed_request(
    transport: str, close: bool
) -> None:
    # 32 MiB: the receiver's decode buffer is large enough that freeing it takes a while, which
    # a background thread still running at interpreter exit did (and the process aborted).
    # Left open, the sender and receiver are closed at exit, before any thread can outlive it:
    # a process whose channel threads still run after atexit ends with THREADS_LEFT_AT_EXIT.
    receiver, sender, rx_out, tx_out = _start_pair(
        transport, peers.big_receiver_main, (32, close), peers.big_sender_main, (32, close)
    )
    assert _get(tx_out, "sender") is None and _get(rx_out, "receiver") is None
    _join_or_kill(sender, receiver)
    assert (receiver.exitcode, sender.exitcode) == (0, 0)
