"""The README's two-process kvx.channel example runs as written, saved as a script and started
with python (tests/test_readme.py also runs it with `python -c`, like every README block)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

pytest.importorskip("torch")


def _channel_example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    examples = [block for block in blocks if "kvx.channel.Sender" in block]
    assert len(examples) == 1, "the README has one kvx.channel example"
    return examples[0]


def test_readme_channel_example_runs_in_two_processes(tmp_path: Path) -> None:
    script = tmp_path / "channel_example.py"
    script.write_text(_channel_example())
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "req-1 landed in slots 300..399" in result.stdout
