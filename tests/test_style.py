"""Source style: every C, C++ and CUDA source is as clang-format (with the repository's
.clang-format) writes it, and the Python of python/, tests/ and bench/ passes `ruff check` and
`ruff format --check` (settings in pyproject.toml). Both tools come pinned in the `test` extra;
docs/contributing.md says how to format. A missing tool, or another version than the pinned one
(each release formats a little differently), fails the test rather than skipping it."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
C_DIRS = ("libkvx", "tests/c", "tests/stubs")
C_SUFFIXES = {".c", ".h", ".cu", ".cuh", ".cpp", ".cc", ".hpp"}
PY_DIRS = ("python", "tests", "bench")


def _pinned(package: str) -> str:
    """The version the `test` extra of pyproject.toml pins for package."""
    m = re.search(rf'"{re.escape(package)}==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert m, f"the test extra of pyproject.toml should pin {package}: {package}==VERSION"
    return m.group(1)


def _tool(name: str, package: str) -> str:
    """The tool's executable: the PyPI wheels install it beside this interpreter (a venv's bin/,
    or the user scheme's scripts folder), else whatever PATH has. Fails naming the install
    command when it is missing or is not the pinned version."""
    version = _pinned(package)
    install = f"pip install '{package}=={version}' (or the test extra: pip install '.[test]')"
    folders = [
        Path(sys.executable).parent,
        Path(sysconfig.get_path("scripts")),
        Path(sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user"))),
    ]
    exe = next(
        (str(f / name) for f in folders if (f / name).is_file() and os.access(f / name, os.X_OK)),
        shutil.which(name),
    )
    if exe is None:
        pytest.fail(f"{name} is not installed: {install}")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    found = re.search(r"(\d+\.\d+\.\d+)", out.stdout + out.stderr)
    if out.returncode != 0 or not found or found.group(1) != version:
        pytest.fail(
            f"{exe} is {found.group(1) if found else 'of unknown version'}, not the pinned "
            f"{version}, which formats differently: {install}"
        )
    return exe


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def _offenders(out: str, pattern: str) -> list[str]:
    """Sorted unique repository-relative paths that pattern's first group captures in out."""
    paths = set()
    for m in re.finditer(pattern, out, re.MULTILINE):
        p = Path(m.group(1))
        paths.add(str(p.resolve().relative_to(REPO)) if p.is_absolute() else str(p))
    return sorted(paths)


def _fail(what: str, files: list[str], fix: str, proc: subprocess.CompletedProcess) -> None:
    listing = "\n  ".join(files) if files else (proc.stdout + proc.stderr)[-4000:]
    pytest.fail(f"{len(files) or 'some'} file(s) {what}; {fix}:\n  {listing}", pytrace=False)


def test_c_sources_are_clang_formatted():
    clang_format = _tool("clang-format", "clang-format")
    sources = sorted(
        str(p.relative_to(REPO))
        for d in C_DIRS
        for p in (REPO / d).rglob("*")
        if p.suffix in C_SUFFIXES and p.is_file()
    )
    assert len(sources) > 20, f"expected the C sources under {C_DIRS}, found {sources}"
    proc = _run([clang_format, "--dry-run", "--Werror", *sources])
    if proc.returncode != 0:
        files = _offenders(proc.stderr, r"^(.+?):\d+:\d+: (?:error|warning): ")
        _fail("not as clang-format writes them", files, "run: clang-format -i FILE...", proc)


def test_python_passes_ruff_check():
    ruff = _tool("ruff", "ruff")
    proc = _run([ruff, "check", "--no-cache", "--output-format", "concise", *PY_DIRS])
    if proc.returncode != 0:
        files = _offenders(proc.stdout, r"^(.+?\.pyi?):\d+:\d+: ")
        _fail("with ruff findings", files, "run: ruff check --fix, then fix the rest by hand", proc)


def test_python_is_ruff_formatted():
    ruff = _tool("ruff", "ruff")
    proc = _run([ruff, "format", "--no-cache", "--check", "--output-format", "concise", *PY_DIRS])
    if proc.returncode != 0:
        # "path:line:col: unformatted: ..." (concise), "Would reformat: path" (older releases)
        files = _offenders(proc.stdout, r"^(?:Would reformat: )?(.+?\.pyi?)(?::\d+:\d+: |$)")
        fix = "run: ruff format " + " ".join(PY_DIRS)
        _fail("not as ruff format writes them", files, fix, proc)
