"""What the Ascend and CNRT backends share about finding their runtime
(src/runtime/runtime_loader.c), on the stub runtimes: not available without it (and why), found on
LD_LIBRARY_PATH, and an already-loaded copy preferred (RTLD_NOLOAD)."""

import device_stub_cases as dsc
import pytest
from kvx._native import lib as klib

BACKENDS = ["ascend", "cnrt"]
pytestmark = pytest.mark.skipif(
    dsc.compiler() is None, reason="no C compiler to build the stub runtimes"
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unavailable_without_runtime_says_why(backend):
    dsc.check_unavailable_without_runtime(backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_loads_runtime_from_library_path(backend):
    dsc.check_loads_from_library_path(backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_prefers_the_loaded_copy(backend):
    """Preloaded under its soname from a directory not on any search path: RTLD_NOLOAD finds it."""
    dsc.stub(backend)
    assert klib.kvx_backend_available(dsc.DEVICE_TYPE[backend]) == 1
