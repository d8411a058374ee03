"""A bounded fuzzing session of the container decoder, in a child process so that a crash or a
hang is reported as a failure instead of taking pytest down. KVX_FUZZ_SECONDS (default 8)
lengthens it; see fuzz_codec.py for the longer and the atheris modes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_container_decoder(seed: int) -> None:
    seconds = float(os.environ.get("KVX_FUZZ_SECONDS", "8"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_codec.py"),
            "--seconds",
            str(seconds),
            "--seed",
            str(seed),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds * 4 + 120,
    )
    assert proc.returncode == 0, (
        f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    assert "no findings" in proc.stdout
    count = int(proc.stdout.split("fuzz_codec: ")[1].split()[0])
    assert count > 100, proc.stdout  # the session really ran
