"""The C side: cffi declarations vs the C compiler's view of kvx.h, exported symbols, a C consumer
built through pkg-config, `python -m kvx --cflags --libs` and CMake's find_package (from the wheel
and from a plain `meson install`), the library's SONAME and what consumers record, and bad
arguments at the C level."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import kvx
import pytest
from kvx import _native
from kvx._native import ffi, lib
from machine import CC, compile_and_run, dynamic_entries, exported_symbols

REPO = Path(__file__).resolve().parent.parent
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on this machine")


def _tool(name: str) -> str | None:
    """A build tool, preferring the one pip installed beside this interpreter (the `test` extra
    brings cmake, ninja and meson) to whatever PATH has."""
    scripts = Path(sysconfig.get_path("scripts")) / name
    return str(scripts) if scripts.is_file() and os.access(scripts, os.X_OK) else shutil.which(name)


def _rpath(path: Path) -> list[str]:
    """Where the program looks for its libraries: DT_RUNPATH, or DT_RPATH with old linker
    defaults."""
    return dynamic_entries(path, "RUNPATH") or dynamic_entries(path, "RPATH")


def test_installed_header_is_the_source_header():
    assert _native.header_path().read_text() == (REPO / "libkvx" / "include" / "kvx.h").read_text()


@needs_cc
def test_cffi_layouts_and_constants_match_the_compiler(tmp_path):
    """Every struct's size and field offsets, and every enum value, as cffi parsed them from the
    header, must equal what the C compiler computes from the same header."""
    checks = []
    for name in ("kvx_paged_desc", "kvx_dense_desc", "kvx_stream"):
        checks.append((f"sizeof({name})", ffi.sizeof(name)))
        for field, _ in ffi.typeof(name).fields:
            checks.append((f"offsetof({name}, {field})", ffi.offsetof(name, field)))
    for name in dir(lib):
        if name.startswith("KVX_"):
            checks.append((f"(long long)({name})", getattr(lib, name)))
    body = "\n".join(f'    printf("%lld\\n", (long long)({expr}));' for expr, _ in checks)
    source = (
        "#include <stddef.h>\n#include <stdio.h>\n#include <kvx.h>\n"
        f"int main(void) {{\n{body}\n    return 0;\n}}\n"
    )
    out = compile_and_run(source, tmp_path, [f"-I{_native.header_path().parent}"])
    got = [int(v) for v in out.split()]
    mismatches = [
        (expr, want, c) for (expr, want), c in zip(checks, got, strict=False) if want != c
    ]
    assert len(got) == len(checks) and not mismatches, mismatches
    assert len(checks) > 60  # the structs' fields and all enum constants were really compared


def test_exported_symbols_are_exactly_the_declared_functions():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    exported = exported_symbols(_native.library_path(), nm, kinds="TW")
    declared = {name for name in dir(lib) if name.startswith("kvx_")}
    assert exported == declared


def _version_nodes() -> dict[str, set[str]]:
    """libkvx.map's version nodes and the symbols each lists by name."""
    text = re.sub(r"/\*.*?\*/", "", (REPO / "libkvx" / "libkvx.map").read_text(), flags=re.S)
    nodes = {}
    for name, body in re.findall(r"(KVX_[\d.]+)\s*\{(.*?)\}", text, flags=re.S):
        exported = body.split("local:")[0].replace("global:", "")
        nodes[name] = {sym.strip() for sym in exported.split(";") if sym.strip()}
    return nodes


def test_version_script_lists_every_function_once_by_name():
    """Each KVX_API function is in exactly one node of the map, named (no wildcard), and the
    built library exports each with that node's version."""
    nodes = _version_nodes()
    listed = [sym for symbols in nodes.values() for sym in symbols]
    declared = {name for name in dir(lib) if name.startswith("kvx_")}
    assert sorted(listed) == sorted(declared)
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run(
        [nm, "-D", "--defined-only", str(_native.library_path())],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    versions = dict(line.split()[-1].split("@@") for line in out.splitlines() if "@@KVX_" in line)
    node_of = {sym: node for node, symbols in nodes.items() for sym in symbols}
    assert versions == node_of


def _pkg_config_flags(pc_dir: str) -> list[str]:
    env = dict(os.environ, PKG_CONFIG_PATH=pc_dir)
    out = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "kvx"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return out.split()


needs_pkg_config = pytest.mark.skipif(
    shutil.which("pkg-config") is None, reason="pkg-config is not installed"
)


@needs_cc
@needs_pkg_config
def test_c_consumer_against_the_wheel(tmp_path):
    pc_dir = subprocess.run(
        [sys.executable, "-m", "kvx", "--pkgconfig-dir"], check=True, capture_output=True, text=True
    ).stdout.strip()
    flags = _pkg_config_flags(pc_dir)
    assert (
        compile_and_run((REPO / "tests" / "c" / "consumer.c").read_text(), tmp_path, flags)
        == "ok\n"
    )
    assert "libkvx.so.0" in dynamic_entries(tmp_path / "prog", "NEEDED")


@needs_cc
def test_cli_flags_build_a_consumer(tmp_path):
    flags = subprocess.run(
        [sys.executable, "-m", "kvx", "--cflags", "--libs"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert (
        compile_and_run((REPO / "tests" / "c" / "consumer.c").read_text(), tmp_path, flags)
        == "ok\n"
    )
    assert "libkvx.so.0" in dynamic_entries(tmp_path / "prog", "NEEDED")


def test_wheel_library_is_versioned_by_soname():
    """The wheel ships the library as libkvx.so.0 with SONAME libkvx.so.0 (as a meson install does),
    and the cffi loader loads that file; there is no unversioned copy beside it."""
    library = Path(kvx.get_library())
    assert library == _native.library_path()
    if "KVX_LIBRARY" not in os.environ:
        assert library.name == "libkvx.so.0" and library.parent == Path(kvx.__file__).parent
        assert not (library.parent / "libkvx.so").exists()
    assert dynamic_entries(library, "SONAME") == ["libkvx.so.0"]


def _tool_env() -> dict[str, str]:
    """The environment for build tools: this interpreter's scripts folder first on PATH (meson runs
    ninja, cmake runs the compiler and ninja), no inherited CMake search hints."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CMAKE_PREFIX_PATH", "kvx_DIR", "CMAKE_GENERATOR")
    }
    env["PATH"] = sysconfig.get_path("scripts") + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="module")
def meson_prefix(tmp_path_factory) -> Path:
    """`meson setup && meson install` of the library into a temporary prefix (libdir: lib)."""
    meson = _tool("meson")
    if meson is None or _tool("ninja") is None:
        pytest.skip("meson or ninja is not installed")
    tmp = tmp_path_factory.mktemp("meson_install")
    build, prefix = tmp / "build", tmp / "prefix"
    for args in (
        ["setup", str(build), str(REPO), f"--prefix={prefix}", "--libdir=lib"],
        ["install", "-C", str(build)],
    ):
        result = subprocess.run([meson, *args], capture_output=True, text=True, env=_tool_env())
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return prefix


@needs_cc
@needs_pkg_config
def test_plain_meson_install(meson_prefix, tmp_path):
    """`meson setup && meson install` gives kvx.h, a versioned libkvx.so, kvx.pc and the CMake
    package."""
    prefix = meson_prefix
    assert (prefix / "include" / "kvx.h").exists()
    library = prefix / "lib" / f"libkvx.so.0.{kvx.version().split('.', 1)[1]}"
    assert library.exists() and dynamic_entries(library, "SONAME") == ["libkvx.so.0"]
    for name in ("kvxConfig.cmake", "kvxConfigVersion.cmake"):
        assert (prefix / "lib" / "cmake" / "kvx" / name).exists()
    flags = _pkg_config_flags(str(prefix / "lib" / "pkgconfig")) + [f"-Wl,-rpath,{prefix / 'lib'}"]
    assert (
        compile_and_run((REPO / "tests" / "c" / "consumer.c").read_text(), tmp_path, flags)
        == "ok\n"
    )
    assert "libkvx.so.0" in dynamic_entries(tmp_path / "prog", "NEEDED")


CMAKE_CONSUMER = REPO / "tests" / "cmake_consumer"


def _cmake(tmp_path: Path, *defines: str) -> subprocess.CompletedProcess:
    """Configures (and, when that works, builds) tests/cmake_consumer with these -D definitions."""
    cmake = _tool("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed (pip install cmake)")
    ninja, make = _tool("ninja"), shutil.which("make")
    if ninja is not None:
        generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    elif make is not None:
        generator = ["-G", "Unix Makefiles"]
    else:
        pytest.skip("neither ninja nor make is installed for cmake to build with")
    build = tmp_path / "cmake_build"
    env = _tool_env()
    configure = subprocess.run(
        [
            cmake,
            "-S",
            str(CMAKE_CONSUMER),
            "-B",
            str(build),
            *generator,
            f"-DCMAKE_C_COMPILER={CC}",
            *defines,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if configure.returncode != 0:
        return configure
    return subprocess.run([cmake, "--build", str(build)], capture_output=True, text=True, env=env)


def _check_cmake_consumer(tmp_path: Path, *defines: str) -> Path:
    """find_package(kvx) works, kvx::kvx links, the program runs (from its build tree: CMake's
    rpath) and records NEEDED libkvx.so.0. Returns the program."""
    result = _cmake(tmp_path, *defines)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    exe = tmp_path / "cmake_build" / "consumer"
    assert subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout == "ok\n"
    assert "libkvx.so.0" in dynamic_entries(exe, "NEEDED")
    return exe


def _wheel_cmake_dir() -> str:
    return subprocess.run(
        [sys.executable, "-m", "kvx", "--cmake-dir"], check=True, capture_output=True, text=True
    ).stdout.strip()


@needs_cc
@pytest.mark.parametrize("how", ["kvx_DIR", "CMAKE_PREFIX_PATH"])
def test_cmake_consumer_against_the_wheel(tmp_path, how):
    """-Dkvx_DIR=$(python -m kvx --cmake-dir), or the package folder on CMAKE_PREFIX_PATH (CMake
    looks in its lib/cmake/kvx); asking for this very version."""
    cmake_dir = Path(_wheel_cmake_dir())
    assert (cmake_dir / "kvxConfig.cmake").is_file() and (
        cmake_dir / "kvxConfigVersion.cmake"
    ).is_file()
    where = (
        f"-Dkvx_DIR={cmake_dir}"
        if how == "kvx_DIR"
        else f"-DCMAKE_PREFIX_PATH={Path(kvx.__file__).parent}"
    )
    _check_cmake_consumer(tmp_path, where, f"-DKVX_WANTED_VERSION={kvx.version()}")


@needs_cc
@pytest.mark.parametrize("wanted", ["next_major", "next_minor"])
def test_cmake_package_refuses_an_incompatible_version(tmp_path, wanted):
    """SameMajorVersion: find_package(kvx X.Y) fails for another major version, or a newer minor."""
    major, minor = (int(part) for part in kvx.version().split(".")[:2])
    version = f"{major + 1}.0" if wanted == "next_major" else f"{major}.{minor + 1}"
    result = _cmake(tmp_path, f"-Dkvx_DIR={_wheel_cmake_dir()}", f"-DKVX_WANTED_VERSION={version}")
    assert result.returncode != 0
    assert "kvxConfig.cmake" in result.stderr and kvx.version() in result.stderr, result.stderr[
        -4000:
    ]


@needs_cc
def test_cmake_consumer_against_a_plain_meson_install(meson_prefix, tmp_path):
    """The meson install's CMake package, found through CMAKE_PREFIX_PATH; and from a copy of the
    prefix elsewhere, it names the copy's library (its paths are relative to the config file)."""
    exe = _check_cmake_consumer(tmp_path, f"-DCMAKE_PREFIX_PATH={meson_prefix}")
    assert _rpath(exe) == [str(meson_prefix / "lib")]
    moved = tmp_path / "moved"
    shutil.copytree(meson_prefix, moved, symlinks=True)
    exe = _check_cmake_consumer(tmp_path / "from_moved", f"-DCMAKE_PREFIX_PATH={moved}")
    assert _rpath(exe) == [str(moved / "lib")]
