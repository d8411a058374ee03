"""Loads libkvx with cffi (ABI mode) from the copy shipped inside the package.

The declarations come from the package's own copy of ``kvx.h``: cffi reads no preprocessor
directives, so :func:`header_to_cdef` evaluates the header's few conditionals, keeps integer
``#define`` constants and drops the rest. ``KVX_LIBRARY`` and ``KVX_HEADER`` override which
library and header are used (the sanitizer tests load an ASan build; developers can run the
package from the source tree against a plain meson build).
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import cffi

from ._errors import ERROR_BY_STATUS, InternalError

_DIRECTIVE = re.compile(r"^\s*#\s*(\w+)\s*(.*)$")
_INT_DEFINE = re.compile(r"^(\w+)\s+(-?\d+)\s*$")


def _condition_holds(kind: str, expression: str, defined: set[str]) -> bool:
    if kind == "ifdef":
        return expression.strip() in defined
    if kind == "ifndef":
        return expression.strip() not in defined
    # `#if`: only `defined(X)` terms joined by && / || / ! occur in kvx.h.
    python_expr = re.sub(
        r"defined\s*\(\s*(\w+)\s*\)", lambda m: str(m.group(1) in defined), expression
    )
    python_expr = python_expr.replace("&&", " and ").replace("||", " or ").replace("!", " not ")
    if not re.fullmatch(r"[\sA-Za-z()]*", python_expr):
        raise ValueError(f"kvx.h: unsupported #if expression {expression!r}")
    return bool(eval(python_expr, {"__builtins__": {}}, {}))  # vetted above


def header_to_cdef(text: str) -> str:
    """Returns the declarations of ``kvx.h`` as cffi can parse them (C mode, not C++)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    defined: set[str] = set()
    active = [True]  # one entry per open conditional; the top says whether lines are kept
    out: list[str] = []
    for line in text.splitlines():
        directive = _DIRECTIVE.match(line)
        if not directive:
            if all(active):
                out.append(line)
            continue
        kind, rest = directive.groups()
        if kind in ("if", "ifdef", "ifndef"):
            active.append(_condition_holds(kind, rest, defined))
        elif kind == "else":
            active[-1] = not active[-1]
        elif kind == "endif":
            active.pop()
        elif kind == "define" and all(active):
            name = rest.split()[0].split("(")[0]
            defined.add(name)
            constant = _INT_DEFINE.match(rest)
            if constant:
                out.append(f"#define {constant.group(1)} {constant.group(2)}")
    cdef = "\n".join(out)
    return re.sub(r"\bKVX_API\b", "", cdef)


# The wheel's library file, named by its SONAME (libkvx/meson.build: soversion). Wheels cannot hold
# the usual libkvx.so -> libkvx.so.0 symlink, so this is the only name the library has there.
LIBRARY_NAME = "libkvx.so.0"


def package_file(*parts: str) -> Path:
    """Path of a file inside the installed ``kvx`` package."""
    return Path(str(resources.files("kvx").joinpath(*parts)))


def header_path() -> Path:
    """Path of the ``kvx.h`` installed with the package (or ``KVX_HEADER``)."""
    override = os.environ.get("KVX_HEADER")
    return Path(override) if override else package_file("include", "kvx.h")


def library_path() -> Path:
    """Path of the libkvx shared library this process loads."""
    override = os.environ.get("KVX_LIBRARY")
    return Path(override) if override else package_file(LIBRARY_NAME)


ffi = cffi.FFI()
ffi.cdef(header_to_cdef(header_path().read_text()))
lib: Any = ffi.dlopen(str(library_path()))


def last_error() -> str:
    """The message libkvx recorded for this thread's last failed call."""
    return ffi.string(lib.kvx_last_error()).decode("utf-8", "replace")


def check(status: int) -> None:
    """Raises the matching :class:`kvx.KvxError` subclass when ``status`` is not KVX_OK."""
    if status == 0:
        return
    cls = ERROR_BY_STATUS.get(status, InternalError)
    name = ffi.string(lib.kvx_status_name(status)).decode()
    raise cls(f"{last_error() or 'no message'} [{name}]", status)
