"""torch is optional and slow to import: kvx imports it only when a call needs it."""

import subprocess
import sys

SCRIPT = """
import sys
import numpy as np
import kvx
from kvx import cli
assert "torch" not in sys.modules, "import kvx imported torch"
cli.main(["--cflags", "--libs"])
kvx.store([np.zeros((2, 4, 4, 2, 8), np.float32)] * 2, np.zeros((2, 2, 3, 16), np.float32),
          np.arange(3))
blob = kvx.codec.encode(np.ones((2, 2, 3, 16), np.float32))
kvx.codec.decode(blob, as_numpy=True)
kvx.rope.rerotate_keys(np.zeros((3, 2, 8), np.float32), np.arange(3), np.arange(3),
                       np.ones((5, 8), np.float32))
assert "torch" not in sys.modules, "a numpy-only call imported torch"
assert type(kvx.codec.decode(blob)).__module__ == "torch", (
    "decode returns a torch tensor where torch is installed")
"""


def test_numpy_calls_and_the_cli_do_not_import_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
