"""pytest plugin for LMCache's test process: LMCache's torch ops copy host memory on the CPU.

LMCache's pointer helpers (``lmcache.v1.platform.torch_ops._tensor_from_ptr``) copy through
libcudart's ``cudaMemcpy`` whenever that library loads. Here and in CI it loads (a CUDA toolkit
without a driver) and every copy then fails with CUDA error 35, so its ``_copy_lib`` is cleared
and the helpers take their CPU path, as on a machine without CUDA at all.
"""

from __future__ import annotations

import sys

import lmcache.v1.platform.torch_ops  # noqa: F401  (loads the submodule below)

# The package star-imports a function of the same name over the submodule attribute, so the
# submodule is reached through sys.modules.
sys.modules["lmcache.v1.platform.torch_ops._tensor_from_ptr"]._copy_lib = None
