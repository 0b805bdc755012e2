"""Attention over the valid slots of the rolling KV cache (op ``streamgen::cache_attention``), with
optional in-kernel rotation of un-rotated keys for the relative RoPE mode."""
from streamgen.kernels.cache_attention.op import cache_attention
from streamgen.kernels.cache_attention.reference import cache_attention_reference

__all__ = ["cache_attention", "cache_attention_reference"]
