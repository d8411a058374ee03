"""The installed Python package as build tools see it: kvx.get_include() and kvx.get_library() (as
numpy.get_include()), and the PEP 561 py.typed marker."""

import inspect
import os
from pathlib import Path

import kvx
from kvx import _native


def test_get_include_is_the_folder_of_the_header():
    include = kvx.get_include()
    assert isinstance(include, str)
    assert (Path(include) / "kvx.h").is_file()
    assert Path(include) / "kvx.h" == _native.header_path()
    if "KVX_HEADER" not in os.environ:
        assert Path(include) == Path(kvx.__file__).parent / "include"


def test_get_library_is_the_loaded_library():
    """The file cffi loaded: the process maps that very file."""
    library = kvx.get_library()
    assert isinstance(library, str) and Path(library).is_file()
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(Path(library).resolve()) in maps.read_text()


def test_exported_with_type_hints_and_docs():
    for fn in (kvx.get_include, kvx.get_library):
        assert fn.__name__ in kvx.__all__
        assert fn.__doc__ and inspect.signature(fn).return_annotation in (str, "str")


def test_package_is_marked_typed():
    assert (Path(kvx.__file__).parent / "py.typed").is_file()
