"""Attention over the rolling cache: Triton (interpreted on CPU, 16x16 tiles) vs reference vs the
model's attention + RoPE. Odd Lq / Lk leave ragged tiles; D 24 and 40 pad the head dim."""
import pytest
import torch

from streamgen.kernels.cache_attention import cache_attention, cache_attention_reference
from streamgen.models.attention import attention_reference
from streamgen.models.rope import apply_rope


def _inputs(dtype, b=2, lq=19, lk=37, slots=50, h=3, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, lq, h, d, generator=g).to(dtype)
    k_cache = torch.randn(b, slots, h, d, generator=g).to(dtype)
    v_cache = torch.randn(b, slots, h, d, generator=g).to(dtype)
    ang = 4 * torch.randn(lk, d // 2, generator=g, dtype=torch.float64)
    # Keys / values as the model reads them: a prefix view of a larger slot buffer.
    return q, k_cache[:, :lk], v_cache[:, :lk], ang.cos().float(), ang.sin().float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("d", [16, 24, 64])
def test_matches_reference(interpreted, tol, dtype, relative, d):
    q, k, v, cos, sin = _inputs(dtype, b=2 if d == 16 else 1, h=3 if d == 16 else 2, d=d)
    rel = dict(key_cos=cos, key_sin=sin) if relative else {}
    out = cache_attention(q, k, v, **rel)
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out.float(), cache_attention_reference(q, k, v, **rel).float(), **tol[dtype])


@pytest.mark.parametrize("lq, lk", [(1, 1), (16, 32), (5, 65), (40, 7)])
def test_tile_edges(interpreted, tol, lq, lk):
    q, k, v, cos, sin = _inputs(torch.float32, b=1, lq=lq, lk=lk, h=2, d=32)
    torch.testing.assert_close(cache_attention(q, k, v), cache_attention_reference(q, k, v), **tol[torch.float32])


def test_head_dim_128_and_batch_expanded_keys(interpreted, tol):
    # Text cross-attention passes K / V expanded over the batch (stride 0).
    q, k, v, *_ = _inputs(torch.float16, b=1, lq=9, lk=20, h=1, d=128)
    q2 = torch.cat([q, -q])  # [2, Lq, H, D]
    k2, v2 = k.expand(2, *k.shape[1:]), v.expand(2, *v.shape[1:])  # [2, Lk, H, D], stride 0 on B
    out = cache_attention(q2, k2, v2)
    torch.testing.assert_close(out.float(), cache_attention_reference(q2, k2, v2).float(), **tol[torch.float16])


def test_reference_equals_model_attention():
    q, k, v, cos, sin = _inputs(torch.float32)
    assert torch.equal(cache_attention_reference(q, k, v), attention_reference(q, k, v))
    rotated = apply_rope(k, cos, sin)
    assert torch.equal(cache_attention_reference(q, k, v, key_cos=cos, key_sin=sin), attention_reference(q, rotated, v))


def test_opcheck(interpreted):
    q, k, v, cos, sin = _inputs(torch.float32, b=1, lq=5, lk=7, h=2, d=16)
    torch.library.opcheck(torch.ops.streamgen.cache_attention.default, (q, k, v, None, None, None))
    torch.library.opcheck(torch.ops.streamgen.cache_attention.default, (q, k, v, cos, sin, 0.3))


def test_bad_arguments_are_named():
    q, k, v, cos, sin = _inputs(torch.float32)
    with pytest.raises(ValueError, match="head dim 8"):
        cache_attention(q[..., :8], k[..., :8], v[..., :8])
    with pytest.raises(ValueError, match="dtypes must match"):
        cache_attention(q, k.half(), v)
    with pytest.raises(ValueError, match="both key_cos and key_sin"):
        cache_attention(q, k, v, key_cos=cos)
    with pytest.raises(ValueError, match=r"key_cos / key_sin must be \[Lk, D/2\]"):
        cache_attention(q, k, v, key_cos=cos[:3], key_sin=sin[:3])
