"""The processes of the channel tests (tests/test_channel.py): a sender and a receiver built
from the same seeds, so that the test process can compute what must land where.

Small shapes (2 layers, 2 heads, head 16, 40 tokens; MLA: one 32-wide latent) keep a pair of
processes to a few seconds. The sender's block size is 16, the receiver's 8; the SGLang token
pool has block size 1. Every receiver mapping skips token 5 (slot -1).
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

LAYERS, HEADS, HEAD_SIZE, TOKENS, MLA_DIM, SLOTS = 2, 2, 16, 40, 32, 128
MHA_LAYOUTS = ("vllm_nhd", "vllm_hnd", "sglang_mha")
TIMEOUT = 20.0  # the channel's own timeout for a stalled transfer in the ordinary runs
WAIT = 90.0  # every wait on a handle or a queue


@functools.cache
def mooncake_missing() -> str | None:
    """Why the Mooncake wheel cannot load here, or None (asked once: loading it is slow)."""
    try:
        from kvx.channel.mooncake import load_engine

        load_engine()
    except ImportError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Case:
    request_id: str
    tx_layout: str
    rx_layout: str
    compress: bool
    seed: int


def layout_cases(first_seed: int = 0) -> list[Case]:
    """Every meaningful (sender layout, receiver layout) pair, raw and compressed. MLA caches
    hold one latent plane per token, not K and V heads: they pair only with MLA."""
    pairs = [(a, b) for a in MHA_LAYOUTS for b in MHA_LAYOUTS] + [("mla", "mla")]
    cases = []
    for compress in (False, True):
        for a, b in pairs:
            seed = first_seed + len(cases)
            cases.append(
                Case(f"{a}->{b}{'/codec' if compress else ''}#{seed}", a, b, compress, seed)
            )
    return cases


def make_cache(layout: str, role: str, seed: int) -> Any:
    """A bf16 paged cache in ``layout`` full of seeded noise (``role`` "tx" or "rx")."""
    import torch

    g = torch.Generator().manual_seed(seed * 2 + (role == "rx"))
    block = 16 if role == "tx" else 8
    blocks = SLOTS // block

    def noise(*shape: int) -> Any:
        return torch.randn(*shape, generator=g).to(torch.bfloat16)

    if layout == "vllm_nhd":
        return [noise(2, blocks, block, HEADS, HEAD_SIZE) for _ in range(LAYERS)]
    if layout == "vllm_hnd":
        return [noise(2, blocks, HEADS, block, HEAD_SIZE) for _ in range(LAYERS)]
    if layout == "sglang_mha":
        return tuple([noise(SLOTS, HEADS, HEAD_SIZE) for _ in range(LAYERS)] for _ in range(2))
    if layout == "mla":
        return [noise(blocks, block, MLA_DIM) for _ in range(LAYERS)]
    raise ValueError(layout)


def make_slots(role: str, seed: int) -> Any:
    """The request's slots on one side: distinct, scattered; the receiver skips token 5."""
    import torch

    g = torch.Generator().manual_seed(seed * 2 + 1000 + (role == "rx"))
    slots = torch.randperm(SLOTS, generator=g)[:TOKENS].to(torch.int64)
    if role == "rx":
        slots[5] = -1
    return slots


def _transport_class(transport: str) -> type:
    if transport == "torch":
        from kvx.channel.torch_dist import TorchTransport

        return TorchTransport
    from kvx.channel.mooncake import MooncakeTransport

    return MooncakeTransport


def faulty(transport: str, fault: str) -> type:
    """``transport``'s class, breaking on purpose: requests named ``corrupt...`` get their first
    payload byte flipped after the CRC was taken, ``tail-corrupt...`` their last one, those named
    ``garbage...`` a bit of their header; the request named ``victim`` is followed by
    the process killing itself (``fault="kill"``) or hanging (``"stall"``) after its first
    payload chunk."""
    base = _transport_class(transport)

    class Faulty(base):  # type: ignore[misc, valid-type]
        def begin(self, header: Any, header_bytes: bytes) -> None:
            self._request, self._size = header.request_id, header.payload_bytes
            if self._request.startswith("garbage"):  # one bit of the flags field
                header_bytes = header_bytes[:8] + bytes([header_bytes[8] ^ 4]) + header_bytes[9:]
            super().begin(header, header_bytes)

        def write(self, offset: int, chunk: Any) -> None:
            if self._request.startswith("corrupt") and offset == 0:
                chunk[0] ^= 0xFF
            if self._request.startswith("tail-corrupt") and offset + len(chunk) == self._size:
                chunk[-1] ^= 0xFF
            super().write(offset, chunk)
            if self._request == "victim" and fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self._request == "victim" and fault == "stall":
                time.sleep(3600)

    return Faulty


def as_words(paged: Any) -> list[Any]:
    """Every tensor of a bf16 paged cache as a numpy int16 array of its bytes (plain arrays
    cross process boundaries by value; torch tensors would go as shared files)."""
    tensors = [t for plane in paged for t in plane] if isinstance(paged, tuple) else list(paged)
    return [t.view(torch_module().int16).numpy().copy() for t in tensors]


def torch_module() -> Any:
    import torch

    return torch


def _outcome(handle: Any) -> str | None:
    try:
        handle.wait(WAIT)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _gather_fails_once_after_the_first_layer() -> None:
    """Makes the first request that gathers more than one layer group fail at its second (its
    first segments are on the wire by then)."""
    from kvx.channel import payload

    gather, failed = payload.gather, []

    def failing(side: Any, buffer: Any, first: int = 0, count: Any = None) -> Any:
        if first > 0 and not failed:
            failed.append(first)
            raise RuntimeError("the cache went away (on purpose)")
        return gather(side, buffer, first, count)

    payload.gather = failing


def sender_main(
    transport: str,
    address: str,
    cases: list[Case],
    options: dict,
    fault: str,
    out: Any,
    after: list[Case] = (),  # type: ignore[assignment]
) -> None:
    """Sends every case, then (once they are all done) every case in ``after``, then reports
    [(request id, error or None)]. ``fault="abandon"``: the first request of more than one
    layer group fails to gather its second."""
    try:
        from kvx import channel

        if fault == "abandon":
            _gather_fails_once_after_the_first_layer()
        cls = faulty(transport, fault)
        channel.register("faulty", lambda role, address, **kw: cls(role, address, **kw))
        tx = channel.Sender("faulty", address, **options)
        outcomes = []
        for batch in (cases, after):
            sent = [(case, _send(tx, case)) for case in batch]
            outcomes += [(case.request_id, _outcome(handle)) for case, handle in sent]
        out.put(outcomes)
        tx.close()
    except BaseException:
        out.put(traceback.format_exc())


def _send(tx: Any, case: Case) -> Any:
    paged = make_cache(case.tx_layout, "tx", case.seed)
    slots = make_slots("tx", case.seed)
    return tx.send(case.request_id, paged, slots, layout=case.tx_layout, compress=case.compress)


def receiver_main(
    transport: str,
    address: str,
    cases: list[Case],
    options: dict,
    slow: float,
    out: Any,
    first_alone: bool = False,
) -> None:
    """Expects every case (``slow`` seconds apart, so that frames arrive first; ``first_alone``:
    the first case alone until it is done, so that the others wait unexpected), then reports
    [(request id, error or None, the receiving cache afterwards)]."""
    try:
        from kvx import channel

        rx = channel.Receiver(transport, address, **options)
        out.put(rx.address)
        expected = []
        for i, case in enumerate(cases):
            time.sleep(slow)
            paged = make_cache(case.rx_layout, "rx", case.seed)
            slots = make_slots("rx", case.seed)
            handle = rx.expect(case.request_id, paged, slots, layout=case.rx_layout)
            expected.append((case, paged, handle))
            if first_alone and i == 0:
                _outcome(handle)
        results = [(c.request_id, _outcome(h), as_words(paged)) for c, paged, h in expected]
        out.put(results)
        rx.close()
    except BaseException:
        out.put(traceback.format_exc())


def _die_at_victims_first_segment(allowed: threading.Event) -> None:
    """Makes this (receiver) process kill itself once the first segment of the request named
    ``victim`` has arrived (and ``allowed`` is set), before it is checked."""
    from kvx.channel import payload

    class Dying(payload.SegmentCheck):
        def __call__(self, index: int, data: Any, trailer: bytes) -> None:
            if self.header.request_id == "victim":
                allowed.wait()
                os.kill(os.getpid(), signal.SIGKILL)
            super().__call__(index, data, trailer)

    payload.SegmentCheck = Dying  # type: ignore[misc]


def dying_receiver_main(transport: str, address: str, cases: list[Case], out: Any) -> None:
    """Expects every case, reports the first one's outcome, and dies in the middle of the
    payload of the one named ``victim``."""
    try:
        from kvx import channel

        reported = threading.Event()
        _die_at_victims_first_segment(reported)
        rx = channel.Receiver(transport, address, timeout=TIMEOUT)
        out.put(rx.address)
        handles = [
            rx.expect(c.request_id, make_cache(c.rx_layout, "rx", c.seed), make_slots("rx", c.seed),
                      layout=c.rx_layout)
            for c in cases
        ]  # fmt: skip
        out.put(_outcome(handles[0]))
        out.close()
        out.join_thread()  # the report is out before the process dies
        reported.set()
        time.sleep(3600)  # until the victim arrives
    except BaseException:
        out.put(traceback.format_exc())


def _big_request(mib: int, role: str) -> tuple[Any, Any]:
    """A vLLM NHD cache of 4 layers, 8 heads of 128, holding one request of ``mib`` MiB."""
    import torch

    tokens = (mib << 20) // (4 * 2 * 8 * 128 * 2)
    make = torch.randn if role == "tx" else torch.zeros
    cache = [make(2, tokens // 16, 16, 8, 128).to(torch.bfloat16) for _ in range(4)]
    return cache, torch.arange(tokens)


THREADS_LEFT_AT_EXIT = 3  # the exit status of a process whose channel threads outlived atexit


def _exit_with_threads_left() -> None:
    """Ends the process with THREADS_LEFT_AT_EXIT if a channel thread still runs. Registered
    with atexit before kvx.channel is imported, it runs after kvx.channel's own handler."""
    if any(t.name.startswith("kvx-") and t.is_alive() for t in threading.enumerate()):
        os._exit(THREADS_LEFT_AT_EXIT)


def _check_threads_at_exit() -> None:
    import atexit
    import sys

    if "kvx.channel" in sys.modules:
        raise RuntimeError("kvx.channel was imported before the exit check was registered")
    atexit.register(_exit_with_threads_left)


def big_receiver_main(transport: str, address: str, mib: int, close: bool, out: Any) -> None:
    """Lands one compressed request of ``mib`` MiB, closes (or leaves that to the interpreter's
    exit) and exits. The test reads the exit status: a thread still freeing its buffers at
    interpreter exit used to abort the process."""
    try:
        _check_threads_at_exit()
        from kvx import channel

        rx = channel.Receiver(transport, address, timeout=WAIT)
        out.put(rx.address)
        rx.expect("big", *_big_request(mib, "rx")).wait(WAIT)
        if close:
            rx.close()
        out.put(None)
    except BaseException:
        out.put(traceback.format_exc())


def big_sender_main(transport: str, address: str, mib: int, close: bool, out: Any) -> None:
    """Sends the request big_receiver_main expects, and closes as it does."""
    try:
        _check_threads_at_exit()
        from kvx import channel

        tx = channel.Sender(transport, address, timeout=WAIT)
        tx.send("big", *_big_request(mib, "tx"), compress=True).wait(WAIT)
        if close:
            tx.close()
        out.put(None)
    except BaseException:
        out.put(traceback.format_exc())
