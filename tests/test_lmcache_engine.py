"""kvx as LMCache's device backend, end to end through LMCache's own cache engine.

LMCache's engine (local CPU backend, LMCache's vLLM paged connector) stores a request's KV from
a vLLM-shaped paged cache and retrieves it into a fresh cache; LMCache's CacheGen serializer and
deserializer then encode and decode the chunks the engine holds, and the decoded chunks go back
into a fresh cache through the connector. This runs once with kvx selected
(``LMCACHE_DEVICE_BACKEND=kvx_cpu``) and once with LMCache's own torch ops: the caches and the
decoded chunks must be the same to the byte, and each side must decode the other's CacheGen
bytes to the same result. LMCache reads the variable when it is imported, so every run is a
process of its own (``tests/lmcache_engine_driver.py``, which says what it does).

Needs a pip-installed kvx: LMCache finds ``kvx_cpu`` through kvx's entry points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmcache_env
import pytest

HERE = Path(__file__).parent
KVX_OPS = "kvx.lmcache.device_ops.KvxCpuDeviceOps"
# The codec ops LMCache's CacheGen serde calls; kvx runs them all itself.
CODEC_OPS = {"calculate_cdf", "encode_fast_new", "decode_fast_prefsum"}
# CacheGen's quantization error on Gaussian data with LMCache's bin schedule is about 0.11.
CACHEGEN_MAX_RELATIVE_ERROR = 0.2
RUN_TIMEOUT_S = 600


def _driver(backend: str | None, *args: str) -> dict[str, Any]:
    """The JSON one driver process prints; ``backend`` None leaves LMCache its torch ops."""
    env = dict(os.environ, LMCACHE_LOG_LEVEL="WARNING")
    env.pop("LMCACHE_DEVICE_BACKEND", None)
    if backend is not None:
        env["LMCACHE_DEVICE_BACKEND"] = backend
    cmd = lmcache_env.python_command("lmcache_engine_driver", *args)
    done = subprocess.run(
        cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    who = backend or "LMCache's torch ops"
    assert done.returncode == 0, f"driver on {who} failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Where each backend's run leaves its CacheGen-encoded chunks."""
    root = tmp_path_factory.mktemp("lmcache-engine")
    return {"torch": root / "torch", "kvx": root / "kvx"}


@pytest.fixture(scope="module")
def torch_run(folders: dict[str, Path]) -> dict[str, Any]:
    return _driver(None, "engine", str(folders["torch"]))


@pytest.fixture(scope="module")
def kvx_run(folders: dict[str, Path], torch_run: dict[str, Any]) -> dict[str, Any]:
    """kvx's run, which also decodes the chunks the torch run encoded."""
    return _driver("kvx_cpu", "engine", str(folders["kvx"]), "--decode", str(folders["torch"]))


@pytest.fixture(scope="module")
def torch_decodes_kvx(folders: dict[str, Path], kvx_run: dict[str, Any]) -> dict[str, Any]:
    return _driver(None, "decode", str(folders["kvx"]))


def test_torch_ops_round_trip_the_request(torch_run: dict[str, Any]) -> None:
    """The baseline itself: LMCache's ops, and the engine gives back what it stored."""
    assert not torch_run["device_ops"].startswith("kvx.")
    assert torch_run["engine"]["equals_original"]
    assert torch_run["engine"]["unchanged_elsewhere"]
    assert torch_run["cachegen"]["relative_error"] < CACHEGEN_MAX_RELATIVE_ERROR
    assert torch_run["cachegen"]["unchanged_elsewhere"]


def test_kvx_ops_are_the_ones_lmcache_runs(kvx_run: dict[str, Any]) -> None:
    assert kvx_run["device_ops"] == KVX_OPS


def test_no_op_kvx_runs_fell_back(kvx_run: dict[str, Any]) -> None:
    """Only ops kvx leaves to LMCache as a whole reached LMCache's torch versions: none of the
    cases these calls make fell back op by op."""
    fell_back = {op for op, _ in kvx_run["fallbacks"]}
    print("LMCache's torch ops reached through kvx:", kvx_run["fallbacks"] or "none")
    assert not fell_back & CODEC_OPS
    assert fell_back <= set(kvx_run["kvx_fallback_ops"])


def test_engine_retrieves_what_torch_ops_retrieve(
    torch_run: dict[str, Any], kvx_run: dict[str, Any]
) -> None:
    assert kvx_run["engine"]["equals_original"]
    assert kvx_run["engine"]["unchanged_elsewhere"]
    assert kvx_run["engine"]["digest"] == torch_run["engine"]["digest"]


def test_cachegen_encodes_and_decodes_as_torch_ops_do(
    torch_run: dict[str, Any], kvx_run: dict[str, Any]
) -> None:
    kvx, torch = kvx_run["cachegen"], torch_run["cachegen"]
    assert len(kvx["encoded"]) == len(torch["encoded"]) == 3  # two full chunks and a partial one
    assert kvx["encoded"] == torch["encoded"]
    assert kvx["decoded"] == torch["decoded"]
    assert kvx["digest"] == torch["digest"]
    assert kvx["unchanged_elsewhere"]


def test_each_decodes_the_others_cachegen_bytes(
    torch_run: dict[str, Any], kvx_run: dict[str, Any], torch_decodes_kvx: dict[str, Any]
) -> None:
    assert not torch_decodes_kvx["device_ops"].startswith("kvx.")
    assert kvx_run["decoded_other"] == torch_run["cachegen"]["decoded"]
    assert torch_decodes_kvx["decoded"] == kvx_run["cachegen"]["decoded"]


def test_benchmark_times_lmcaches_calls_on_both_backends() -> None:
    """``kvx bench lmcache`` on a small shape: both processes run, with the ops they should, and
    every row of the table is there."""
    args = ["--tokens", "256", "--heads", "1", "--head-size", "64", "--blocks", "2"]
    args += ["--repeats", "1", "--lmcache-site", str(lmcache_env.site_dir())]
    done = subprocess.run(
        [sys.executable, "-m", "kvx", "bench", "lmcache", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert f"kvx = {KVX_OPS}" in done.stdout
    assert "torch = lmcache." in done.stdout
    calls = ["RoPE", "transfer store", "transfer load", "codec encode: serde call"]
    calls += ["codec encode: device ops", "codec decode: serde call", "codec decode: device ops"]
    rows = [line.split("  ")[0].strip() for line in done.stdout.splitlines()]
    assert all(call in rows for call in calls), done.stdout
