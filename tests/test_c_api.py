"""The C side: cffi declarations vs the C compiler's view of kvx.h, exported symbols, a C consumer
built through pkg-config and `python -m kvx --cflags --libs` (from the wheel and from a plain
`meson install`), the library's SONAME and what consumers record, and bad arguments at the C
level."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kvx
from kvx import _native
from kvx._native import ffi, lib
from machine import exported_symbols

REPO = Path(__file__).resolve().parent.parent
CC = shutil.which("cc") or shutil.which("gcc")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on this machine")


def _dynamic(path: Path, tag: str) -> list[str]:
    """The values of one dynamic-section tag (SONAME, NEEDED) of an ELF file, as readelf shows them."""
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    out = subprocess.run([readelf, "-d", str(path)], check=True, capture_output=True, text=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if f"({tag})" in line]


def _compile_and_run(source: str, tmp_path: Path, flags: list[str]) -> str:
    src = tmp_path / "prog.c"
    src.write_text(source)
    exe = tmp_path / "prog"
    subprocess.run([CC, "-std=c11", "-Wall", "-Wextra", "-Werror", str(src), "-o", str(exe), *flags], check=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout


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
    source = f"#include <stddef.h>\n#include <stdio.h>\n#include <kvx.h>\nint main(void) {{\n{body}\n    return 0;\n}}\n"
    out = _compile_and_run(source, tmp_path, [f"-I{_native.header_path().parent}"])
    got = [int(v) for v in out.split()]
    mismatches = [(expr, want, c) for (expr, want), c in zip(checks, got) if want != c]
    assert len(got) == len(checks) and not mismatches, mismatches
    assert len(checks) > 60  # the structs' fields and all enum constants were really compared


def test_exported_symbols_are_exactly_the_declared_functions():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    exported = exported_symbols(_native.library_path(), nm, kinds="TW")
    declared = {name for name in dir(lib) if name.startswith("kvx_")}
    assert exported == declared


def _pkg_config_flags(pc_dir: str) -> list[str]:
    env = dict(os.environ, PKG_CONFIG_PATH=pc_dir)
    out = subprocess.run(["pkg-config", "--cflags", "--libs", "kvx"], check=True, capture_output=True,
                         text=True, env=env).stdout
    return out.split()


needs_pkg_config = pytest.mark.skipif(shutil.which("pkg-config") is None, reason="pkg-config is not installed")


@needs_cc
@needs_pkg_config
def test_c_consumer_against_the_wheel(tmp_path):
    pc_dir = subprocess.run([sys.executable, "-m", "kvx", "--pkgconfig-dir"], check=True, capture_output=True,
                            text=True).stdout.strip()
    flags = _pkg_config_flags(pc_dir)
    assert _compile_and_run((REPO / "tests" / "c" / "consumer.c").read_text(), tmp_path, flags) == "ok\n"
    assert "libkvx.so.0" in _dynamic(tmp_path / "prog", "NEEDED")


@needs_cc
def test_cli_flags_build_a_consumer(tmp_path):
    flags = subprocess.run([sys.executable, "-m", "kvx", "--cflags", "--libs"], check=True, capture_output=True,
                           text=True).stdout.split()
    assert _compile_and_run((REPO / "tests" / "c" / "consumer.c").read_text(), tmp_path, flags) == "ok\n"
    assert "libkvx.so.0" in _dynamic(tmp_path / "prog", "NEEDED")


def test_wheel_library_is_versioned_by_soname():
    """The wheel ships the library as libkvx.so.0 with SONAME libkvx.so.0 (as a meson install does),
    and the cffi loader loads that file; there is no unversioned copy beside it."""
    library = Path(kvx.get_library())
    assert library == _native.library_path()
    if "KVX_LIBRARY" not in os.environ:
        assert library.name == "libkvx.so.0" and library.parent == Path(kvx.__file__).parent
        assert not (library.parent / "libkvx.so").exists()
    assert _dynamic(library, "SONAME") == ["libkvx.so.0"]


@needs_cc
@needs_pkg_config
@pytest.mark.skipif(shutil.which("meson") is None, reason="meson is not installed")
def test_plain_meson_install(tmp_path):
    """`meson setup && meson install` gives kvx.h, a versioned libkvx.so and kvx.pc."""
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    subprocess.run(["meson", "setup", str(build), str(REPO), f"--prefix={prefix}", "--libdir=lib"], check=True,
                   capture_output=True)
    subprocess.run(["meson", "install", "-C", str(build)], check=True, capture_output=True)
    assert (prefix / "include" / "kvx.h").exists()
    library = prefix / "lib" / f"libkvx.so.0.{kvx.version().split('.', 1)[1]}"
    assert library.exists() and _dynamic(library, "SONAME") == ["libkvx.so.0"]
    flags = _pkg_config_flags(str(prefix / "lib" / "pkgconfig")) + [f"-Wl,-rpath,{prefix / 'lib'}"]
    assert _compile_and_run((REPO / "tests" / "c" / "consumer.c").read_text(), tmp_path, flags) == "ok\n"
    assert "libkvx.so.0" in _dynamic(tmp_path / "prog", "NEEDED")
