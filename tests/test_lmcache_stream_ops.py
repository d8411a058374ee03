"""kvx.lmcache.stream_ops: LMCache's stream-ordered completions and events on kvx's stream marks.

On the CPU (LMCache's active device in this process) against LMCache's own torch versions,
in-process; with several threads recording and draining at once; and with a stub runtime's
device as the active one, whose streams the tests pause and run task by task (never a sleep),
so that items waiting for their stream are seen for certain.
"""

from __future__ import annotations

import inspect
import threading
import time

import device_stub_cases as dsc
import kvx
import lmcache_env
import pytest
from kvx._native import ffi, lib

BACKENDS = ["ascend", "cnrt"]
OPS = [
    "record_completion_on_stream",
    "drain_recorded_completions",
    "record_event_on_stream",
    "drain_recorded_events",
]


@pytest.fixture(scope="module")
def lmc():
    """LMCache's torch baseline module (``lmcache.v1.platform.torch_ops``)."""
    lmcache_env.activate()
    from lmcache.v1.platform import torch_ops

    return torch_ops


@pytest.fixture
def ops(lmc):
    """kvx's stream ops, with kvx's and LMCache's buffers emptied first."""
    from kvx.lmcache import stream_ops

    for impl in (stream_ops, lmc):
        impl.drain_recorded_completions()
        impl.drain_recorded_events()
    yield stream_ops
    assert stream_ops.drain_recorded_completions() == []
    assert stream_ops.drain_recorded_events() == []


def _parameters(function) -> list[tuple[str, object, object]]:
    params = inspect.signature(function).parameters.values()
    return [(p.name, p.kind, p.default) for p in params]


def test_the_ops_are_kvx_s_with_lmcache_s_signatures(lmc, ops) -> None:
    from kvx.lmcache.device_ops import FALLBACK_OPS, KvxCpuDeviceOps

    for name in OPS:
        assert name not in FALLBACK_OPS
        op = getattr(KvxCpuDeviceOps, name)
        assert op is getattr(ops, name) and op.__module__ == "kvx.lmcache.stream_ops"
        assert _parameters(op) == _parameters(getattr(lmc, name)), name


# ---------------------------------------------------------------- the CPU, against LMCache's


def test_completions_equal_lmcache_s(lmc, ops) -> None:
    records = [("finish_write", b"\x92\xa2k0"), ("finish_read", b""), ("finish_write", b"x" * 4096)]
    results = {}
    for who, impl in (("kvx", ops), ("lmcache", lmc)):
        got = [impl.drain_recorded_completions()]
        impl.record_completion_on_stream(0, *records[0])
        got.append(impl.drain_recorded_completions())
        for kind, payload in records[1:]:
            impl.record_completion_on_stream(0, kind, payload)
        got += [impl.drain_recorded_completions(), impl.drain_recorded_completions()]
        results[who] = got
    assert results["kvx"] == results["lmcache"]
    assert results["kvx"] == [[], records[:1], records[1:], []]


def test_events_equal_lmcache_s_stamped_when_recorded(lmc, ops) -> None:
    """Same events, metadata copied at the call (changing the caller's dicts afterwards changes
    nothing); on the CPU kvx stamps them when recorded, as LMCache's torch version does."""
    results, windows = {}, {}
    for who, impl in (("kvx", ops), ("lmcache", lmc)):
        strs, ints = {"device": "cpu"}, {"count": 10}
        before = time.time()
        impl.record_event_on_stream(0, "mp.store.start", "sess-1", strs, ints)
        strs["device"], ints["count"] = "changed", 11
        impl.record_event_on_stream(0, "mp.store.end", "sess-1", strs, {})
        windows[who] = (before, time.time())
        results[who] = impl.drain_recorded_events()
        assert impl.drain_recorded_events() == []
    unstamped = {who: [e[:2] + e[3:] for e in got] for who, got in results.items()}
    assert (
        unstamped["kvx"]
        == unstamped["lmcache"]
        == [
            ("mp.store.start", "sess-1", {"device": "cpu"}, {"count": 10}),
            ("mp.store.end", "sess-1", {"device": "changed"}, {}),
        ]
    )
    low, high = windows["kvx"]
    stamps = [e[2] for e in results["kvx"]]
    assert all(isinstance(s, float) and low <= s <= high for s in stamps)
    assert stamps == sorted(stamps)


def test_completions_and_events_are_drained_apart(ops) -> None:
    ops.record_completion_on_stream(0, "k", b"v")
    ops.record_event_on_stream(0, "e", "s", {}, {})
    assert [e[:2] for e in ops.drain_recorded_events()] == [("e", "s")]
    assert ops.drain_recorded_completions() == [("k", b"v")]


def _record_and_drain_concurrently(record, drain, threads: int, per_thread: int) -> list:
    """Threads record items (thread, i) while another drains; returns everything drained, the
    last drain after every recorder finished."""
    drained: list = []
    done = threading.Event()

    def recorder(t: int) -> None:
        for i in range(per_thread):
            record(t, i)

    def drainer() -> None:
        while not done.is_set():
            drained.extend(drain())

    workers = [threading.Thread(target=recorder, args=(t,)) for t in range(threads)]
    draining = threading.Thread(target=drainer)
    draining.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    draining.join()
    drained.extend(drain())
    return drained


def _exactly_once_in_order(items: list[tuple[int, int]], threads: int, per_thread: int) -> None:
    assert sorted(items) == [(t, i) for t in range(threads) for i in range(per_thread)]
    for t in range(threads):
        assert [i for u, i in items if u == t] == list(range(per_thread))


def test_threads_record_while_another_drains_completions(ops) -> None:
    got = _record_and_drain_concurrently(
        lambda t, i: ops.record_completion_on_stream(0, str(t), i.to_bytes(4, "little")),
        ops.drain_recorded_completions,
        threads=4,
        per_thread=300,
    )
    _exactly_once_in_order([(int(k), int.from_bytes(p, "little")) for k, p in got], 4, 300)


def test_threads_record_while_another_drains_events(ops) -> None:
    got = _record_and_drain_concurrently(
        lambda t, i: ops.record_event_on_stream(0, "e", str(t), {}, {"i": i}),
        ops.drain_recorded_events,
        threads=4,
        per_thread=300,
    )
    _exactly_once_in_order([(int(sid), ints["i"]) for _, sid, _, _, ints in got], 4, 300)


# ---------------------------------------------------------------- a stub device as the active one


@pytest.fixture(params=BACKENDS)
def device(request, ops, monkeypatch):
    """A stub runtime's device 0 as LMCache's active device: (stub, device name)."""
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    from kvx.lmcache import _active

    st = dsc.stub(request.param)
    st.reset()
    monkeypatch.setattr(_active, "device", lambda: f"{request.param}:0")
    yield st, request.param
    assert st.errors() == (0, ""), st.errors()


def test_stub_items_wait_for_their_stream_in_recording_order(ops, device) -> None:
    """c1 on paused stream A, c2 on stream B, c3 on A: a drain returns c2 once B ran, c1 once A
    ran one task, c3 once A ran the rest; each once, the others kept."""
    st, _ = device
    a, b = st.stream(0), st.stream(0)
    st.pause(a, True)
    ops.record_completion_on_stream(a, "c1", b"1")
    ops.record_completion_on_stream(b, "c2", b"2")
    ops.record_completion_on_stream(a, "c3", b"3")
    assert st.sync(b) == 0
    assert ops.drain_recorded_completions() == [("c2", b"2")]
    assert ops.drain_recorded_completions() == []
    assert st.step(a, 1) == 1
    assert ops.drain_recorded_completions() == [("c1", b"1")]
    st.pause(a, False)
    assert st.sync(a) == 0
    assert ops.drain_recorded_completions() == [("c3", b"3")]


def test_stub_events_are_stamped_when_first_seen_passed(ops, device) -> None:
    """Not before the stream got there: the stamp lies between letting the stream run and the
    drain that found the event."""
    st, _ = device
    queue = st.stream(0)
    st.pause(queue, True)
    ops.record_event_on_stream(queue, "mp.retrieve.end", "s", {"k": "v"}, {"n": 1})
    assert ops.drain_recorded_events() == []
    released = time.time()
    st.pause(queue, False)
    assert st.sync(queue) == 0
    (event,) = ops.drain_recorded_events()
    assert event[:2] == ("mp.retrieve.end", "s") and event[3:] == ({"k": "v"}, {"n": 1})
    assert released <= event[2] <= time.time()


def test_stub_default_stream_is_the_active_device_s(ops, device) -> None:
    """cuda_stream_ptr 0 is the device's default stream: the item waits while that stream is
    paused, and kvx_synchronize of the device's default stream lets it pass."""
    st, backend = device
    st.pause(0, True)
    ops.record_completion_on_stream(0, "k", b"v")
    assert ops.drain_recorded_completions() == []
    st.pause(0, False)
    stream = ffi.new("kvx_stream *")
    stream.device_type, stream.device_index = dsc.DEVICE_TYPE[backend], 0
    assert lib.kvx_synchronize(stream) == lib.KVX_OK
    assert ops.drain_recorded_completions() == [("k", b"v")]


def test_stub_threads_record_on_a_paused_stream_while_another_drains(ops, device) -> None:
    """Nothing is drained while the stream is paused; everything, once, after it ran."""
    st, _ = device
    queue = st.stream(0)
    st.pause(queue, True)
    early = _record_and_drain_concurrently(
        lambda t, i: ops.record_completion_on_stream(queue, str(t), bytes([i])),
        ops.drain_recorded_completions,
        threads=3,
        per_thread=40,
    )
    assert early == []
    st.pause(queue, False)
    assert st.sync(queue) == 0
    got = ops.drain_recorded_completions()
    _exactly_once_in_order([(int(k), p[0]) for k, p in got], 3, 40)


NO_NOTIFIER = """
    import logging
    import device_stub_cases as dsc
    from kvx.lmcache import _active, stream_ops
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
    dsc._loaded["cnrt"] = dsc.Stub("cnrt", dsc.build_stub("cnrt", ("STUB_NO_NOTIFIER",)))
    st = dsc.stub("cnrt")
    _active.device = lambda: "mlu:0"
    queue = st.stream(0)
    for i in range(2):
        stream_ops.record_completion_on_stream(queue, "k", bytes([i]))
        print(stream_ops.drain_recorded_completions(), st.calls("cnrtQueueSync"))
"""


def test_without_events_recording_waits_for_the_stream_and_says_so_once() -> None:
    if dsc.compiler() is None:
        pytest.skip("no C compiler to build the stub runtimes")
    r = dsc.run_python(NO_NOTIFIER)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == ["[('k', b'\\x00')] 1", "[('k', b'\\x01')] 2"]
    said = [line for line in r.stderr.splitlines() if line.startswith("kvx.lmcache")]
    assert said == [
        "kvx.lmcache kvx: record_completion_on_stream waits for the stream instead of marking it: "
        "mark_record: the loaded CNRT runtime lacks cnrtNotifierCreate or another of its event "
        "functions, so the cnrt backend cannot mark a queue [KVX_ERR_UNSUPPORTED]"
    ]


def test_a_failing_query_loses_nothing(ops, device) -> None:
    """A drain that fails (the runtime cannot tell) raises and keeps every item: the next drain
    returns each once, in order."""
    st, backend = device
    queue = st.stream(0)
    st.pause(queue, True)
    for i in range(3):
        ops.record_completion_on_stream(queue, "k", bytes([i]))
    st.pause(queue, False)
    assert st.sync(queue) == 0
    query = {"ascend": "aclrtQueryEventStatus", "cnrt": "cnrtQueryNotifier"}[backend]
    st.inject(query, 507899, times=1, after=1)  # the second entry's query fails
    with pytest.raises(kvx.DeviceError, match=query):
        ops.drain_recorded_completions()
    assert ops.drain_recorded_completions() == [("k", bytes([i])) for i in range(3)]
