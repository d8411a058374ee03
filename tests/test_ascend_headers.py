"""libkvx's own AscendCL declarations (libkvx/src/ascend/acl_api.h) against the real headers
shipped in the torch-npu wheel on PyPI: function types, constants, struct sizes and field
offsets must all match (tests/stubs/acl_header_check.c). Needs the network (pip download) and a
C compiler; skips saying which is missing."""

import subprocess
import zipfile
from pathlib import Path

import device_stub_cases as dsc
import pypi_wheels
import pytest

ROOT = Path(__file__).resolve().parent.parent
ACL_API = ROOT / "libkvx" / "src" / "ascend" / "acl_api.h"
CHECK = ROOT / "tests" / "stubs" / "acl_header_check.c"


@pytest.fixture(scope="module")
def acl_include() -> Path:
    """torch_npu/include from the torch-npu wheel (downloaded once per user into the temp dir)."""
    if dsc.compiler() is None:
        pytest.skip("no C compiler")
    whl = pypi_wheels.wheel("torch-npu", "torch_npu-*.whl")
    out = whl.parent / (whl.stem + "-include")
    if not (out / "torch_npu" / "include" / "acl" / "acl_rt.h").exists():
        with zipfile.ZipFile(whl) as z:
            members = [n for n in z.namelist() if n.startswith("torch_npu/include/acl/")]
            assert "torch_npu/include/acl/acl_rt.h" in members, f"{whl.name} has no acl/acl_rt.h"
            z.extractall(out, members)
    return out / "torch_npu" / "include"


def compile_check(include: Path, api_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    exe = tmp_path / "acl_header_check"
    cmd = [
        dsc.compiler(),
        "-std=gnu11",
        "-Wall",
        "-Wextra",
        "-Werror",
        f"-I{include}",
        f"-I{include / 'acl'}",
        f"-I{api_dir}",
        str(CHECK),
        "-o",
        str(exe),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode == 0:
        r = subprocess.run([str(exe)], capture_output=True, text=True)
    return r


def test_declarations_match_the_real_acl_headers(acl_include, tmp_path):
    r = compile_check(acl_include, ACL_API.parent, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # with aclrtMallocHost/FreeHost and aclrtGetCurrentContext/SetCurrentContext
    assert "17 function types, constants and struct layouts match" in r.stdout


@pytest.mark.parametrize(
    "wrong,right",
    [
        # batch attribute with the source first: the classic mistake
        (
            "kvx_acl_mem_location dst_loc;\n    kvx_acl_mem_location src_loc;",
            "kvx_acl_mem_location src_loc;\n    kvx_acl_mem_location dst_loc;",
        ),
        # a pointer parameter declared by value
        ("size_t *fail_index,", "size_t fail_index,"),
        # a wrong constant
        (
            "KVX_ACL_ERROR_RT_FEATURE_NOT_SUPPORT = 207000",
            "KVX_ACL_ERROR_RT_FEATURE_NOT_SUPPORT = 207001",
        ),
        # the staging allocation's out-parameter by value
        (
            "X(aclrtMallocHost, 0, (void **host_ptr, size_t size))",
            "X(aclrtMallocHost, 0, (void *host_ptr, size_t size))",
        ),
    ],
)
def test_check_catches_a_wrong_declaration(acl_include, tmp_path, wrong, right):
    text = ACL_API.read_text()
    assert wrong in text
    (tmp_path / "acl_api.h").write_text(text.replace(wrong, right))
    r = compile_check(acl_include, tmp_path, tmp_path)
    assert r.returncode != 0
