"""The README's code runs as written: every ```python block, each on its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
PYTHON_BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_python_examples() -> None:
    assert len(PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs(index: int) -> None:
    result = subprocess.run([sys.executable, "-c", PYTHON_BLOCKS[index]], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"README python block {index}:\n{PYTHON_BLOCKS[index]}\n{result.stderr}"
