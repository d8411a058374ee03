"""The GPU backend compiles in both flavours from one source (CUDA with nvcc, HIP with hipcc), with
no warnings, exports only the public API, and reports itself compiled but unavailable (with the
reason) on a machine without a GPU. Its kernels and the vendor runtime live in a module libkvx
opens at first use: a GPU build loads, and its CPU backend works, where the runtime is missing.
These run without a GPU (the kernels themselves run in host execution: tests/gpu_target.py)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from machine import dynamic_entries, exported_symbols

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import kvx, numpy as np
state = {b.name: b for b in kvx.backends()}[{name!r}]
x = np.ones((1, 4, 8), np.float32)  # the CPU backend still works
symbols, scales = kvx.codec.quantize(x, [16])
assert symbols.shape == (1, 4, 8)
print(state.compiled, state.available, state.reason)
"""


def _build(tmp_path: Path, option: str, *options: str) -> Path:
    build = tmp_path / option
    setup = subprocess.run(
        ["meson", "setup", str(build), str(REPO), f"-D{option}=enabled", "--werror", *options],
        capture_output=True,
        text=True,
    )
    assert setup.returncode == 0, setup.stdout[-4000:] + setup.stderr[-4000:]
    compile_ = subprocess.run(["ninja", "-C", str(build)], capture_output=True, text=True)
    assert compile_.returncode == 0, compile_.stdout[-6000:]
    assert "warning" not in compile_.stdout.lower(), compile_.stdout[-6000:]
    return build / "libkvx" / "libkvx.so"


def _probe(library: Path, name: str) -> list[str]:
    env = dict(os.environ, KVX_LIBRARY=str(library))
    out = subprocess.run(
        [sys.executable, "-c", PROBE.replace("{name!r}", repr(name))],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split(" ", 2)


def _needed(library: Path) -> list[str]:
    return dynamic_entries(library, "NEEDED")


NVCC = pytest.mark.skipif(
    shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not installed"
)
HIPCC = pytest.mark.skipif(
    shutil.which("hipcc") is None,
    reason="hipcc is not installed (apt-get install hipcc libamdhip64-dev)",
)


@NVCC
def test_cuda_flavour_builds_and_needs_only_the_driver(tmp_path):
    """Two targets keep the build short; the default list is checked below."""
    library = _build(tmp_path, "cuda", "-Dsm_targets=75,90")
    module = library.parent / "libkvx_cuda.so"
    # CUDA's static runtime: neither file needs libcudart, whose absence cannot then matter;
    # libcuda.so.1 (the driver) is opened by the runtime when first asked for a device.
    assert not [n for n in _needed(library) + _needed(module) if "cuda" in n], _needed(module)
    compiled, available, reason = _probe(library, "cuda")
    assert compiled == "True"
    assert available == "True" or "cuda:" in reason  # no GPU here: unavailable, and it says why


@NVCC
def test_default_cuda_targets_run_from_sm_75_to_the_newest(tmp_path):
    setup = subprocess.run(
        ["meson", "setup", str(tmp_path / "b"), str(REPO), "-Dcuda=enabled"],
        capture_output=True,
        text=True,
    )
    assert setup.returncode == 0, setup.stdout[-4000:]
    listed = subprocess.run(["nvcc", "--list-gpu-arch"], capture_output=True, text=True).stdout
    newest = max(int(a.split("_")[1]) for a in listed.split())
    line = next(x for x in setup.stdout.splitlines() if "CUDA targets:" in x)
    assert "sm_75, " in line and f"sm_{newest} and PTX of {newest}" in line, line


def _copy_with_hidden_runtime(library: Path, folder: Path, flavour: str, runtime: str) -> Path:
    """libkvx and its GPU module copied into `folder`, the module asking for `runtime` under a
    name no system has (same length, so only that string of the file changes)."""
    folder.mkdir()
    shutil.copy(library.resolve(), folder / "libkvx.so")
    module = (library.parent / f"libkvx_{flavour}.so").read_bytes()
    hidden = runtime[:-1] + "X"
    assert runtime.encode() + b"\0" in module
    (folder / f"libkvx_{flavour}.so").write_bytes(
        module.replace(runtime.encode() + b"\0", hidden.encode() + b"\0")
    )
    return folder / "libkvx.so"


@HIPCC
def test_hip_flavour_builds(tmp_path):
    library = _build(tmp_path, "hip")
    exported = exported_symbols(library)
    assert "kvx_transfer" in exported and all(name.startswith("kvx_") for name in exported)
    # hipcc's objects come from a meson generator: their header dependencies must be recorded,
    # or editing a shared header (gpu_device.h) would leave stale kernels in the library.
    build = library.parent.parent
    transfer_object = "libkvx/libkvx_hip.so.p/transfer.o"
    deps = subprocess.run(
        ["ninja", "-C", str(build), "-t", "deps", transfer_object], capture_output=True, text=True
    ).stdout
    assert "gpu_device.h" in deps, deps[-2000:]

    # Without the HIP runtime (its library hidden) or without the module, libkvx loads and its
    # CPU backend works; the hip backend is unavailable and says why.
    runtime = next(n for n in _needed(library.parent / "libkvx_hip.so") if "amdhip64" in n)
    hidden = _copy_with_hidden_runtime(library, tmp_path / "hidden", "hip", runtime)
    compiled, available, reason = _probe(hidden, "hip")
    assert (compiled, available) == ("True", "False")
    assert "cannot load the GPU module" in reason and runtime[:-1] + "X" in reason, reason
    (hidden.parent / "libkvx_hip.so").unlink()
    compiled, available, reason = _probe(hidden, "hip")
    assert (compiled, available) == ("True", "False")
    assert "libkvx_hip.so" in reason and "No such file" in reason, reason
