"""Command line: ``python -m kvx info | demo | bench NAME... | --version``, and for C/C++ users of
the wheel ``--cflags | --libs | --pkgconfig-dir | --cmake-dir``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from . import _devices, _info, _native, lmcache

BENCHMARKS = (
    "transfer",
    "codec",
    "rope",
    "device_plan",
    "transfer_gpu",
    "rope_gpu",
    "codec_gpu",
    "copy",
    "checksum",
    "lmcache",
    "channel",
)  # each is kvx.bench.NAME with run(argv) -> int
# Run by name only, not by "all": minutes long, and it needs the quality extra (a model).
ON_DEMAND = ("codec_quality",)


def _pkgconfig_dir() -> Path:
    """Folder of the relocatable kvx.pc shipped in the wheel (its paths suit installed wheels)."""
    return _native.package_file("lib", "pkgconfig", "kvx.pc").parent


def _cmake_dir() -> Path:
    """Folder of the wheel's relocatable kvxConfig.cmake: CMake's ``kvx_DIR``. (The package folder
    itself also works as a ``CMAKE_PREFIX_PATH`` entry: CMake looks in its lib/cmake/kvx.)"""
    return _native.package_file("lib", "cmake", "kvx", "kvxConfig.cmake").parent


def _link_flags(library: Path) -> str:
    """Linker flags for ``library``: its folder on the search path and the rpath, and the file by
    its own name (``-l:libkvx.so.0``: the wheel has no ``libkvx.so`` link for ``-lkvx``)."""
    return f"-L{library.parent} -Wl,-rpath,{library.parent} -l:{library.name}"


def _torch_devices() -> list[str]:
    """Accelerators torch can see, when torch and its device plugins are importable."""
    try:
        import torch
    except ImportError:
        return ["(torch not installed: device detection skipped)"]
    found, seen = [], set()
    for kind in _devices.accelerators():
        if kind.torch_type in seen:  # CUDA and HIP devices are both torch.cuda's
            continue
        seen.add(kind.torch_type)
        module = kind.torch_module(torch)
        if module is not None and module.is_available():
            found.append(f"{kind.torch_type}: {module.device_count()} device(s)")
    return found or ["none (CPU only)"]


def _capability_lines(states: list[_info.BackendState]) -> list[str]:
    """The capability matrix: a row per backend, a column per operation, each cell how the build
    runs it there ("native", "staged": through host memory, "-": not at all)."""
    names = [op.name for op in _devices.OPS]
    cell = max(len(word) for word in _devices.SUPPORT_WORDS.values())
    widths = [max(len(name), cell) for name in names]
    lines = [
        f"    {'':<7} "
        + " ".join(f"{name:<{w}}" for name, w in zip(names, widths, strict=True)).rstrip()
    ]
    for state in states:
        cells = " ".join(f"{state.ops[name]:<{w}}" for name, w in zip(names, widths, strict=True))
        lines.append(f"    {state.name:<7} {cells}".rstrip())
    return lines


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of tokens >= 0, got {value}")
    return value


def cmd_info(_: argparse.Namespace) -> int:
    """Version, backends compiled in and usable, CPU threads, where the files are."""
    print(f"kvx {_info.version()} (ABI {_native.lib.kvx_abi_version()})")
    print(f"library: {_info.get_library()}")
    print(f"header:  {_native.header_path()}")
    print(f"CPU: {_info.cpu_isa()}")
    print(f"CPU threads: {_info.get_num_threads()}; kernels: {_info.cpu_kernels()}")
    print(f"devices: {', '.join(_torch_devices())}")
    print(f"LMCache plugin: {lmcache.plugin_status()}")
    states = _info.backends()
    print("backends (state, then the codec and RoPE routes on its devices):")
    for state in states:
        status = (
            "available"
            if state.available
            else ("compiled, unavailable" if state.compiled else "not compiled")
        )
        reason = f" ({state.reason})" if state.compiled and not state.available else ""
        print(f"  {state.name:<7} {status}{reason}")
        if state.compiled:
            print(f"  {'':<7} codec: {state.codec}")
            print(f"  {'':<7} rope:  {state.rope}")
    print(
        "operations each backend runs (native; staged: through host memory, synchronously; "
        "-: none):"
    )
    for line in _capability_lines(states):
        print(line)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(tokens=args.tokens)


# A benchmark's run() returns 0 when it ran, 1 when it failed, CANNOT_RUN when this machine lacks
# what it needs (a GPU, torch, the repository's stub runtimes), after saying what.
CANNOT_RUN = 2


def cmd_bench(args: argparse.Namespace) -> int:
    """One benchmark: its own exit status. All: 0 unless one failed; those that cannot run here
    (the GPU ones on a CPU-only machine) are listed as skipped."""
    if args.name != "all":
        return importlib.import_module(f"kvx.bench.{args.name}").run(args.bench_args)
    if args.bench_args:
        print(
            "python -m kvx bench: options belong to one benchmark "
            "(python -m kvx bench NAME --help)",
            file=sys.stderr,
        )
        return CANNOT_RUN
    failed, skipped = [], []
    for name in BENCHMARKS:
        status = importlib.import_module(f"kvx.bench.{name}").run([])
        if status == CANNOT_RUN:
            skipped.append(name)
        elif status != 0:
            failed.append(name)
    print(
        f"benchmarks: {len(BENCHMARKS) - len(failed) - len(skipped)} ran"
        + (f"; skipped (cannot run here, see above): {', '.join(skipped)}" if skipped else "")
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kvx", description="libkvx: KV-cache kernels for LLM serving"
    )
    parser.add_argument(
        "--cflags", action="store_true", help="print compiler flags for C users of the wheel"
    )
    parser.add_argument(
        "--libs", action="store_true", help="print linker flags for C users of the wheel"
    )
    parser.add_argument(
        "--pkgconfig-dir", action="store_true", help="print the folder holding kvx.pc"
    )
    parser.add_argument(
        "--cmake-dir",
        action="store_true",
        help="print the folder holding kvxConfig.cmake (for -Dkvx_DIR=...)",
    )
    parser.add_argument("--version", action="version", version=f"kvx {_info.version()}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="version, backends, devices, threads").set_defaults(fn=cmd_info)
    demo = sub.add_parser("demo", help="offload and reload a request's KV cache, verify, time it")
    demo.add_argument(
        "--tokens",
        type=_non_negative,
        default=1024,
        help="tokens in the request (default 1024; 0 works)",
    )
    demo.set_defaults(fn=cmd_demo)
    bench = sub.add_parser("bench", help=f"benchmarks: {', '.join(BENCHMARKS + ON_DEMAND)}")
    bench.add_argument(
        "name",
        nargs="?",
        default="all",
        choices=BENCHMARKS + ON_DEMAND + ("all",),
        help=f"default: all (every one but {', '.join(ON_DEMAND)})",
    )
    bench.add_argument(
        "bench_args", nargs=argparse.REMAINDER, help="options for the benchmark (see NAME --help)"
    )
    bench.set_defaults(fn=cmd_bench)
    args = parser.parse_args(argv)

    if args.cflags or args.libs or args.pkgconfig_dir or args.cmake_dir:
        flags = []
        if args.pkgconfig_dir:
            flags.append(str(_pkgconfig_dir()))
        if args.cmake_dir:
            flags.append(str(_cmake_dir()))
        if args.cflags:
            flags.append(f"-I{_info.get_include()}")
        if args.libs:
            flags.append(_link_flags(Path(_info.get_library())))
        print(" ".join(flags))
        return 0
    if not getattr(args, "fn", None):
        parser.print_help()
        return 2
    try:
        return args.fn(args)
    except BrokenPipeError:  # e.g. `python -m kvx info | head -3`: the reader left early
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
