"""kvx: portable KV-cache kernels for LLM serving (transfer, CacheGen codec, RoPE)."""
from ._errors import KvxError
# codec: package import (issue 3)
# rope: package import (issue 4)
