"""Fused qk RMSNorm + RoPE + rolling-cache K / V write (op ``streamgen::qk_norm_rope_cache_write``)."""
from streamgen.kernels.qk_norm_rope.op import qk_norm_rope_cache_write
from streamgen.kernels.qk_norm_rope.reference import qk_norm_rope_cache_write_reference

__all__ = ["qk_norm_rope_cache_write", "qk_norm_rope_cache_write_reference"]
