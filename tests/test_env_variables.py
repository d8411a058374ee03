"""KVX_NUM_THREADS and KVX_CPU_ISA: a value the library refuses (garbage, trailing junk, out of
range, an instruction set this CPU cannot run) is reported exactly once per process on stderr,
naming the variable, the value, what is accepted and what runs instead, and the calls still give
correct results; a valid value prints nothing. Each case runs in a fresh process whose first kvx
calls come from several threads at once, so the warning is also said once when they race."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from machine import isa_variants

TESTS = Path(__file__).resolve().parent
MAX_THREADS = 256
ISA_NAMES = ("baseline", "avx2", "avx512", "avx512bf16", "neon")

# Transfer, RoPE and codec calls, each checked against kvx's references, from 4 threads at once;
# then the thread count and the kernels in use.
SCRIPT = f"""
import sys, threading
sys.path.insert(0, {str(TESTS)!r})
import numpy as np
import torch
import kvx
from kvx import codec, reference_codec, reference_rope, rope
import transfer_cases as tc

def transfer_is_correct(seed):
    paged, dense, slots, expected = tc.pool_store_case(seed)
    kvx.store(paged, dense, slots)
    return tc.bits_equal(dense, expected)


def rope_is_correct(seed):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn((300, 4, 128), generator=gen)
    key = torch.randn((300, 2, 128), generator=gen)
    positions = torch.randint(0, 400, (300,), generator=gen)
    cache = rope.build_cos_sin_cache(128, 400, dtype=torch.float32)
    q_ref, k_ref = query.clone(), key.clone()
    rope.apply_rotary(positions, query, key, cache)
    reference_rope.apply_rotary(positions, q_ref, k_ref, cache)
    return torch.equal(query, q_ref) and torch.equal(key, k_ref)


def codec_is_correct(seed):
    kv = np.random.default_rng(seed).standard_normal((2, 3, 200, 24)).astype(np.float32)
    kb, vb = [32, 16, 8], [48, 16, 4]
    symbols, scales = reference_codec.quantize(kv.reshape(6, 200, 24), kb + vb)
    expected = reference_codec.dequantize(symbols, scales, kb + vb).reshape(kv.shape)
    out = codec.decode(codec.encode(torch.from_numpy(kv), kb, vb, chunk_tokens=64), as_numpy=True)
    return np.array_equal(out, expected)


results = []
def work(seed):
    results.append(transfer_is_correct(seed) and rope_is_correct(seed) and codec_is_correct(seed))
threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert results == [True] * 4, results
print(kvx.get_num_threads())
print(kvx.cpu_kernels())
"""


def _run(**env: str) -> tuple[int, str, list[str]]:
    """Runs SCRIPT with `env` added: (thread count, kernels, the library's warning lines)."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=dict(_default_env(), **env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    threads, kernels = done.stdout.splitlines()[:2]
    return (
        int(threads),
        kernels,
        [line for line in done.stderr.splitlines() if line.startswith("kvx:")],
    )


def _cpus() -> int:
    return min(len(os.sched_getaffinity(0)), MAX_THREADS)


def _default_env() -> dict[str, str]:
    """This environment without either variable."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in ("KVX_NUM_THREADS", "KVX_CPU_ISA")
    }


@pytest.fixture(scope="module")
def best_kernels() -> str:
    """The kernels this CPU runs when KVX_CPU_ISA is not set."""
    done = subprocess.run(
        [sys.executable, "-c", "import kvx; print(kvx.cpu_kernels())"],
        env=_default_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize("value", ["abc", "4x", "0", "-3", " "])
def test_refused_thread_count_warns_once_and_uses_the_cpus(value):
    threads, _, warnings = _run(KVX_NUM_THREADS=value)
    assert threads == _cpus()
    assert warnings == [
        f'kvx: KVX_NUM_THREADS="{value}" ignored (expected an integer 1..{MAX_THREADS}); '
        f"using {_cpus()} thread{'s' if _cpus() > 1 else ''} (the CPUs this process may run on)"
    ]


@pytest.mark.parametrize("value", ["1000", "99999999999999999999999"])
def test_too_large_thread_count_warns_once_and_is_clamped(value):
    threads, _, warnings = _run(KVX_NUM_THREADS=value)
    assert threads == MAX_THREADS
    assert warnings == [
        f'kvx: KVX_NUM_THREADS="{value}" is more than {MAX_THREADS} '
        f"(expected an integer 1..{MAX_THREADS}); using {MAX_THREADS} threads"
    ]


@pytest.mark.parametrize(
    "value,threads", [("1", 1), ("3", 3), (" 2 ", 2), ("256", 256), ("", None)]
)
def test_valid_thread_count_prints_nothing(value, threads):
    used, _, warnings = _run(KVX_NUM_THREADS=value)
    assert used == (threads or _cpus())  # empty counts as unset
    assert warnings == []


@pytest.mark.parametrize("value", ["sse9", "AVX2", "avx2 "])
def test_unknown_isa_warns_once_and_runs_the_best(value, best_kernels):
    _, kernels, warnings = _run(KVX_CPU_ISA=value)
    assert kernels == best_kernels
    assert warnings == [
        f'kvx: KVX_CPU_ISA="{value}" ignored '
        "(expected baseline, avx2, avx512, avx512bf16 or neon); "
        f"using the best variants this CPU runs: {kernels}"
    ]


def test_isa_this_cpu_cannot_run_warns_once_and_runs_the_best(best_kernels):
    missing = [name for name in ISA_NAMES if name not in isa_variants()]
    if not missing:
        pytest.skip("this CPU runs every variant")
    for value in missing:
        _, kernels, warnings = _run(KVX_CPU_ISA=value)
        assert kernels == best_kernels
        assert warnings == [
            f'kvx: KVX_CPU_ISA="{value}" ignored (this CPU cannot run it); '
            f"using the best variants it runs: {kernels}"
        ]


@pytest.mark.parametrize("value", ["", *isa_variants()])
def test_isa_this_cpu_runs_prints_nothing(value, best_kernels):
    _, kernels, warnings = _run(KVX_CPU_ISA=value)
    assert kernels.startswith(f"rope={value} " if value else best_kernels)
    assert warnings == []
