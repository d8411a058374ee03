"""Versioned output structs: a caller built against an older (smaller) kvx.h passes a smaller
struct_size, and the library writes only the bytes it declares. (An older input struct, read as
far as it goes, is tested with its call in tests/test_transfer_c_errors.py; too small or too large
sizes are refused in each op's error tests.)"""

import kvx
import numpy as np
from kvx._native import ffi, last_error, lib


def test_older_codec_info_gets_only_its_bytes():
    kv = np.random.default_rng(0).standard_normal((2, 2, 8, 16)).astype(np.float32)
    blob = kvx.codec.encode(kv, key_bins=16, value_bins=16, chunk_tokens=4)
    info = ffi.new("kvx_codec_info *")
    ffi.memmove(info, b"\xab" * ffi.sizeof("kvx_codec_info"), ffi.sizeof("kvx_codec_info"))
    declared = ffi.offsetof("kvx_codec_info", "num_tokens")
    info.struct_size = declared
    src = ffi.from_buffer(blob)
    assert lib.kvx_codec_inspect(src, len(blob), info, ffi.NULL, 0) == lib.KVX_OK, last_error()
    raw = bytes(ffi.buffer(info))
    assert info.struct_size == declared and info.num_layers == 2 and info.head_size == 16
    assert raw[declared:] == b"\xab" * (len(raw) - declared)
