"""`python -m kvx info`: each backend's state and why, and which codec and RoPE route its devices
use (native, host-staged, fallback), with the Ascend/CNRT runtimes missing and with the stub
runtimes on the library path (tests/stubs)."""

import os
import subprocess
import sys

import device_stub_cases as dsc
import kvx
import pytest


def _info(env_extra: dict) -> dict:
    env = dict(os.environ)
    env.update(env_extra)
    result = subprocess.run(
        [sys.executable, "-m", "kvx", "info"], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    matrix = next(
        i for i, line in enumerate(lines) if line.startswith("operations each backend runs")
    )
    lines = lines[:matrix]  # the backends' lines; tests/test_devices.py reads the matrix below them
    rows = {}
    for i, line in enumerate(lines):
        words = line.split()
        if line.startswith("  ") and words and words[0] in ("cpu", "cuda", "hip", "ascend", "cnrt"):
            rows[words[0]] = [line.strip()] + [
                ln.strip() for ln in lines[i + 1 : i + 3] if ln.startswith("          ")
            ]
    return rows


def test_runtime_missing_says_why_and_names_the_routes():
    rows = _info({"LD_LIBRARY_PATH": ""})
    assert rows["cpu"] == ["cpu     available", "codec: native", "rope:  native"]
    for backend, library in (("ascend", "libascendcl.so"), ("cnrt", "libcnrt.so")):
        state, codec, rope = rows[backend]
        assert state.startswith(f"{backend:<7} compiled, unavailable (") and library in state
        assert codec.startswith("codec: host-staged")
        assert rope.startswith("rope:  fallback:")
    assert (
        "torch_npu.npu_rotary_mul" in rows["ascend"][2] and "npu_rotary_mul" not in rows["cnrt"][2]
    )
    for backend in ("cuda", "hip"):
        compiled = kvx.backends()[[s.name for s in kvx.backends()].index(backend)].compiled
        assert ("not compiled" in rows[backend][0]) == (not compiled)


@pytest.mark.skipif(dsc.compiler() is None, reason="no C compiler to build the stub runtimes")
def test_with_the_stub_runtimes_the_backends_themselves_are_asked():
    paths = [str(dsc.build_stub(b).parent) for b in ("ascend", "cnrt")]
    rows = _info({"LD_LIBRARY_PATH": os.pathsep.join(paths)})
    for backend in ("ascend", "cnrt"):
        state, codec, rope = rows[backend]
        assert state == f"{backend:<7} available"
        assert codec.startswith("codec: host-staged") and "synchronises the stream" in codec
        assert rope.startswith("rope:  fallback:")


def test_backend_states_carry_the_routes():
    states = {s.name: s for s in kvx.backends()}
    assert (states["cpu"].codec, states["cpu"].rope) == ("native", "native")
    assert (
        states["ascend"].codec.startswith("host-staged")
        and "npu_rotary_mul" in states["ascend"].rope
    )
