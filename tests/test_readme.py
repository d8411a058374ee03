"""The README's code runs as written: every ```python block, each on its own, and every ```c
block, compiled against the installed wheel (`python -m kvx --cflags --libs`) and run.

The shell and CMake blocks are exercised elsewhere: the two commands by .ci/run and
tests/test_cli.py (the demo), the build-and-link lines and find_package(kvx) by
tests/test_c_api.py; the GPU build lines need a GPU toolkit and machine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from machine import compile_and_run

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


PYTHON_BLOCKS = _blocks("python")
C_BLOCKS = _blocks("c")


def test_the_readme_has_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 3 and len(C_BLOCKS) >= 1


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs(index: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PYTHON_BLOCKS[index]], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        f"README python block {index}:\n{PYTHON_BLOCKS[index]}\n{result.stderr}"
    )


@pytest.mark.parametrize("index", range(len(C_BLOCKS)))
def test_c_block_compiles_warning_free_and_runs(index: int, tmp_path: Path) -> None:
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    flags = subprocess.run(
        [sys.executable, "-m", "kvx", "--cflags", "--libs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    compile_and_run(
        C_BLOCKS[index], tmp_path, flags
    )  # -Wall -Wextra -Werror; fails on a non-zero exit
