"""LMCache, installed from PyPI at test time beside (never into) the test environment.

The tests that run kvx as LMCache's device backend need LMCache's wheel, the modules its imports
pull in, and its own test files from the source distribution. None of it is copied into this
repository: it is fetched once per user and machine into the temp dir and reused.

* :func:`site_dir` is a ``pip install --target`` folder holding LMCache's wheel (without its
  dependency list, which names CUDA builds of torch) and the pinned modules its imports need.
  Processes add it *after* their own site-packages (:func:`activate`, :func:`python_command`), so
  the torch, numpy and kvx of the test environment are the ones used.
* :func:`source_tree` is LMCache's unpacked source distribution (its ``tests/`` folder).

Each skips the calling test, saying why, when PyPI cannot be reached.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import site
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pypi_wheels
import pytest

LMCACHE_VERSION = "0.5.6"

# What `import lmcache` and the modules of its tests that kvx runs import, pinned to versions
# that work with LMCache 0.5.6 in a clean environment (checked with Python 3.11, as in CI).
LMCACHE_IMPORTS = [
    "numba==0.68.1",
    "prometheus_client==0.24.1",
    "psutil==7.2.2",
    "aiohttp==3.14.5",
    "cachetools==8.0.3",
    "transformers==5.25.0",
    "aiofile==3.12.3",
    "msgspec==0.23.0",
    "pyzmq==27.3.0",
    "redis==8.2.0",
    "requests==2.32.5",
    "py-cpuinfo==9.0.0",
    "cryptography==51.0.1",
]
# Building the sdist's metadata (pip does, to download it) needs these and nothing else when
# NO_NATIVE_EXT is set; they go to a folder of their own too.
SDIST_TOOLS = ["setuptools>=77,<81", "setuptools_scm"]


def _cache() -> Path:
    path = Path(tempfile.gettempdir()) / f"kvx-lmcache-{os.getuid()}" / LMCACHE_VERSION
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialises the one-time setup between processes (two test runs on one machine)."""
    with open(path / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _pip(args: list[str], what: str, env: dict[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{what}: pip timed out (network too slow or blocked)")
    if result.returncode != 0:
        pytest.skip(f"{what}: pip failed (PyPI unreachable?): {result.stderr.strip()[-400:]}")


def _install_once(folder: Path, steps: list[tuple[list[str], str, dict[str, str] | None]]) -> Path:
    """Runs the pip `steps` into `folder` unless a finished copy is there already; a half-made
    folder (a run killed midway) is started over."""
    done = folder.with_name(folder.name + ".done")
    with _locked(folder.parent):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            for args, what, env in steps:
                _pip(args, what, env)
            done.touch()
    return folder


def site_dir() -> Path:
    """The folder holding LMCache and the modules its imports need (named after that list, so
    that changing it installs afresh)."""
    digest = hashlib.sha256("\n".join(LMCACHE_IMPORTS).encode()).hexdigest()[:12]
    folder = _cache() / f"site-{digest}"
    wheel = pypi_wheels.wheel(f"lmcache=={LMCACHE_VERSION}", f"lmcache-{LMCACHE_VERSION}-*.whl")
    target = ["install", "-q", "--target", str(folder)]
    return _install_once(
        folder,
        [
            ([*target, "--no-deps", str(wheel)], "install LMCache's wheel", None),
            ([*target, *LMCACHE_IMPORTS], "install the modules LMCache imports", None),
        ],
    )


def source_tree() -> Path:
    """LMCache's unpacked source distribution (``tests/``, ``pytest.ini``)."""
    cache = _cache()
    tools = cache / "sdist-tools"
    downloads = cache / "sdist"
    env = dict(os.environ, PYTHONPATH=str(tools), NO_NATIVE_EXT="1")
    _install_once(
        tools, [(["install", "-q", "--target", str(tools), *SDIST_TOOLS], "sdist tools", None)]
    )
    download = [
        "download", "-q", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
        "-d", str(downloads), f"lmcache=={LMCACHE_VERSION}",
    ]  # fmt: skip
    _install_once(downloads, [(download, "download LMCache's source distribution", env)])
    tree = cache / f"lmcache-{LMCACHE_VERSION}"
    with _locked(cache):
        if not (tree / "tests").is_dir():
            with tarfile.open(downloads / f"lmcache-{LMCACHE_VERSION}.tar.gz") as archive:
                archive.extractall(cache, filter="data")
    return tree


def activate() -> None:
    """Makes LMCache importable in this process, after everything already on ``sys.path``."""
    folder = str(site_dir())
    if folder not in sys.path:
        site.addsitedir(folder)


def python_command(*args: str) -> list[str]:
    """A command line running this Python with LMCache importable (after this environment's own
    packages), then ``args`` as ``python -m``/``-c`` arguments would be."""
    bootstrap = (
        "import runpy, site, sys; "
        f"site.addsitedir({str(site_dir())!r}); "
        "sys.argv = sys.argv[1:]; "
        "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-c", bootstrap, *args]
