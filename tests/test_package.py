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


def test_split_modules_keep_their_public_names():
    """kvx.codec and kvx.rope are the public modules; the code behind them lives in private
    modules (_codec_lowlevel, _codec_container, _codec_arrays, _rope_cache) and every name they
    offered before stays reachable from them."""
    from kvx import codec, rope

    assert codec.__all__ == [
        "CodecInfo",
        "calculate_cdf",
        "decode",
        "decode_fast_new",
        "decode_fast_prefsum",
        "default_bins",
        "default_rotated_bins",
        "dequantize",
        "encode",
        "encode_fast_new",
        "encode_streams",
        "inspect",
        "quantize",
        "stream_bound",
    ]
    assert rope.__all__ == [
        "apply_rotary",
        "build_cos_sin_cache",
        "rerotate_keys",
        "rotary_embedding",
        "rotary_embedding_k_fused",
    ]
    for module in (codec, rope):
        for name in module.__all__:
            assert getattr(module, name).__doc__, f"{module.__name__}.{name}"
    assert (codec.DEFAULT_CHUNK_TOKENS, codec.DEFAULT_MAX_RATIO) == (256, 1024)
    assert codec.Bins is not None and codec.BytesLike is not None


def test_every_module_of_the_source_tree_is_installed():
    """python/meson.build lists the package's files one by one: a module left out of it works
    from a checkout and is missing from the wheel."""
    repo = Path(__file__).resolve().parent.parent
    listed = (repo / "python" / "meson.build").read_text()
    package = repo / "python" / "kvx"
    missing = [
        str(p.relative_to(package.parent))
        for p in sorted(package.rglob("*.py"))
        if f"'{p.relative_to(package.parent)}'" not in listed
        and f"'{p.relative_to(package)}'" not in listed
    ]
    assert not missing, f"not in python/meson.build: {missing}"
    benches = [p.name for p in sorted((repo / "bench").glob("*.py"))]
    assert [b for b in benches if f"'../bench/{b}'" not in listed] == []
