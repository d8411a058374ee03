"""The RoPE part of the C ABI from C itself: struct layouts and enum values as the compiler sees
them equal what cffi parsed, and a small C program re-rotates keys through the loaded libkvx."""

from __future__ import annotations

import pytest
from kvx import _native
from kvx._native import ffi, lib
from machine import CC, compile_and_run

pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler")


def test_rope_struct_layouts_and_enums_match_the_compiler(tmp_path):
    checks = []
    for name in ("kvx_rope_tensor", "kvx_rope_cache"):
        checks.append((f"sizeof({name})", ffi.sizeof(name)))
        for field, _ in ffi.typeof(name).fields:
            checks.append((f"offsetof({name}, {field})", ffi.offsetof(name, field)))
    checks += [("KVX_ROPE_NEOX", lib.KVX_ROPE_NEOX), ("KVX_ROPE_GPTJ", lib.KVX_ROPE_GPTJ)]
    body = "\n".join(f'    printf("%lld\\n", (long long)({expr}));' for expr, _ in checks)
    out = compile_and_run(
        f"#include <stddef.h>\n#include <stdio.h>\n#include <kvx.h>\n"
        f"int main(void) {{\n{body}\n    return 0;\n}}\n",
        tmp_path,
        [f"-I{_native.header_path().parent}"],
    )
    got = [int(v) for v in out.split()]
    assert got == [want for _, want in checks]
    assert (
        ffi.sizeof("kvx_rope_tensor") == 64 and ffi.sizeof("kvx_rope_cache") == 40
    )  # no hidden padding


_CONSUMER = r"""
#include <math.h>
#include <stdio.h>
#include <kvx.h>

/* 2 tokens x 1 head x 4 dims (rot_dim 4, NeoX), float32 cache of 8 positions, angles p * f_r. */
int main(void) {
    float cache[8][4];
    for (int p = 0; p < 8; p++)
        for (int r = 0; r < 2; r++) {
            double f = pow(100.0, -2.0 * r / 4);
            cache[p][r] = (float)cos(p * f);
            cache[p][2 + r] = (float)sin(p * f);
        }
    float keys[2][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}};
    int64_t old_pos[2] = {0, 0}, new_pos[2] = {3, 5};
    kvx_rope_tensor k = {sizeof k, KVX_DTYPE_FLOAT32, 1, 1, 4, 0, 2, keys, 0, 4, 4};
    kvx_rope_cache c = {sizeof c, KVX_DTYPE_FLOAT32, 4, KVX_ROPE_NEOX, 8, 4, cache};
    int32_t rc = kvx_rope_rerotate(&k, &c, old_pos, new_pos, KVX_DTYPE_INT64, NULL);
    if (rc != KVX_OK) { printf("error %s\n", kvx_last_error()); return 1; }
    /* token 0: pair 0 = (x0, x2) rotated by 3 rad; token 1: pair 1 = (x1, x3) by 5 * 0.1 rad */
    int ok = fabsf(keys[0][0] - (float)cos(3.0)) < 1e-6f &&
             fabsf(keys[0][2] - (float)sin(3.0)) < 1e-6f &&
             fabsf(keys[1][1] - (float)cos(0.5)) < 1e-6f &&
             fabsf(keys[1][3] - (float)sin(0.5)) < 1e-6f;
    new_pos[1] = 8;  /* one past the cache: rejected, nothing changed */
    float before = keys[0][0];
    rc = kvx_rope_rerotate(&k, &c, old_pos, new_pos, KVX_DTYPE_INT64, NULL);
    ok = ok && rc == KVX_ERR_INVALID_ARGUMENT && keys[0][0] == before;
    printf("%s\n", ok ? "ok" : "wrong");
    return 0;
}
"""


def test_c_program_rerotates_through_the_library(tmp_path):
    lib_path = _native.library_path()
    include = f"-I{_native.header_path().parent}"
    out = compile_and_run(
        _CONSUMER, tmp_path, [include, str(lib_path), f"-Wl,-rpath,{lib_path.parent}", "-lm"]
    )
    assert out == "ok\n"
