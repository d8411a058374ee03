"""The command line: info, the demo (the README's main job), the benchmark's plumbing, --version,
C flags and the folders of the pkg-config and CMake files."""

import subprocess
import sys
from pathlib import Path


def _run(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "kvx", *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_info_lists_backends_and_threads():
    out = _run("info")
    assert "cpu     available" in out and "CPU threads:" in out and "devices:" in out
    assert "LMCache plugin: " in out  # LMCache itself is optional (tests/test_lmcache_ops.py)
    import platform

    assert (
        f"CPU: {platform.machine()}, " in out
    )  # the machine's ISA line, quoted with benchmark figures


def test_info_into_a_closed_pipe_is_quiet():
    """`python -m kvx info | head -1`: the reader leaves early; no traceback."""
    script = f"{sys.executable} -m kvx info | head -1"
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {script}"], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.startswith("kvx ") and result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr, result.stderr


def test_demo_verifies_every_step():
    out = _run("demo", "--tokens", "300")
    assert "bit-identical, no other slot touched" in out  # transfer
    assert "bits/element" in out and "relative L2 error" in out  # codec
    assert "matches a float64 re-rotation" in out  # RoPE
    assert (
        "verified: transfers bit-identical, codec equal to the reference quantizer, "
        "RoPE within fp16 rounding" in out
    )


def test_transfer_benchmark_runs_and_prints_its_table():
    out = _run("bench", "transfer", "--layers", "2", "--tokens", "256", "--repeats", "1")
    assert "libc memcpy (baseline)" in out and "token pool BS=1" in out


def test_cflags_and_libs():
    """-I the folder of kvx.h; the library's folder on -L and the rpath, and the versioned file by
    name (the wheel has no libkvx.so for -lkvx). tests/test_c_api.py builds and runs a program
    with these flags."""
    import kvx

    include, library = Path(kvx.get_include()), Path(kvx.get_library())
    assert _run("--cflags", "--libs").split() == [
        f"-I{include}",
        f"-L{library.parent}",
        f"-Wl,-rpath,{library.parent}",
        f"-l:{library.name}",
    ]


def test_version():
    import kvx

    result = subprocess.run(
        [sys.executable, "-m", "kvx", "--version"], capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, f"kvx {kvx.version()}\n", "")
    assert kvx.version() == kvx.__version__


def test_pkgconfig_and_cmake_dirs():
    """The folders of the wheel's kvx.pc and kvxConfig.cmake, both inside the installed package."""
    import kvx

    package = Path(kvx.__file__).parent
    assert Path(_run("--pkgconfig-dir").strip()) == package / "lib" / "pkgconfig"
    cmake_dir = Path(_run("--cmake-dir").strip())
    assert cmake_dir == package / "lib" / "cmake" / "kvx"
    assert {p.name for p in cmake_dir.iterdir()} == {"kvxConfig.cmake", "kvxConfigVersion.cmake"}


def test_every_benchmark_is_installed():
    """Each name `python -m kvx bench` offers is a module of the installed package."""
    import importlib

    from kvx.cli import BENCHMARKS, ON_DEMAND

    for name in BENCHMARKS + ON_DEMAND:
        assert callable(importlib.import_module(f"kvx.bench.{name}").run), name


def test_gpu_codec_benchmark_runs_or_says_why_not():
    """On a GPU it prints its table; without one it says so and exits 2 (no traceback)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvx",
            "bench",
            "codec_gpu",
            "--layers",
            "2",
            "--tokens",
            "64",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode == 2:
        assert result.stdout.startswith("no GPU:") or "needs torch" in result.stdout, (
            result.stdout + result.stderr
        )
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert (
            "torch copy_ device->device (baseline)" in result.stdout
            and "kvx decode" in result.stdout
        )


def test_bench_all_skips_what_cannot_run_here(monkeypatch, capsys):
    """`python -m kvx bench` runs every benchmark: those that cannot run on this machine (status
    2: the GPU ones without a GPU) are listed as skipped and do not fail the run; a failure does."""
    from kvx import cli

    outcomes = {"ok": 0, "no_gpu": cli.CANNOT_RUN, "broken": 1}
    fake = {
        name: type("Bench", (), {"run": staticmethod(lambda argv, s=status: s)})
        for name, status in outcomes.items()
    }
    monkeypatch.setattr(cli, "BENCHMARKS", ("ok", "no_gpu"))
    monkeypatch.setattr(cli.importlib, "import_module", lambda path: fake[path.rsplit(".", 1)[1]])
    assert cli.main(["bench"]) == 0
    assert "1 ran; skipped (cannot run here, see above): no_gpu" in capsys.readouterr().out
    monkeypatch.setattr(cli, "BENCHMARKS", ("ok", "no_gpu", "broken"))
    assert cli.main(["bench"]) == 1
    assert "FAILED: broken" in capsys.readouterr().out
    assert (
        cli.main(["bench", "all", "--tokens", "5"]) == cli.CANNOT_RUN
    )  # options name one benchmark


def test_gpu_benchmarks_on_this_machine_run_or_cannot():
    """Each GPU benchmark either runs or exits 2 saying why (what `bench all` counts as skipped)."""
    for name in ("transfer_gpu", "rope_gpu"):
        result = subprocess.run(
            [sys.executable, "-m", "kvx", "bench", name, "--tokens", "64", "--repeats", "1"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode in (0, 2), result.stdout + result.stderr
        assert (
            result.returncode == 0
            or result.stdout.startswith("no GPU:")
            or "needs torch" in result.stdout
        )


def test_device_plan_benchmark_runs_from_a_checkout():
    """From the top of a checkout the installed kvx.bench.device_plan finds tests/stubs and runs."""
    checkout = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvx",
            "bench",
            "device_plan",
            "--layers",
            "2",
            "--tokens",
            "64",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=checkout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ascend" in result.stdout and "cnrt" in result.stdout
