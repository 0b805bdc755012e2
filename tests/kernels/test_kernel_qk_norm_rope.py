"""Fused qk RMSNorm + RoPE + cache write: Triton (interpreted on CPU) vs reference vs the model's ops."""
import pytest
import torch

from streamgen.kernels.qk_norm_rope import qk_norm_rope_cache_write, qk_norm_rope_cache_write_reference
from streamgen.models.norms import rms_norm
from streamgen.models.rope import apply_rope

EPS = 1e-6


def _inputs(dtype, b=2, length=5, h=3, d=16, slots=13, layers=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, length, h, d, generator=g).to(dtype) for _ in range(3))
    qw, kw = (1 + 0.3 * torch.randn(h * d, generator=g)).to(dtype), (1 + 0.3 * torch.randn(h * d, generator=g)).to(dtype)
    ang = 3 * torch.randn(length, d // 2, generator=g, dtype=torch.float64)
    cos, sin = ang.cos().float(), ang.sin().float()
    k_cache = torch.randn(layers, b, slots, h, d, generator=g).to(dtype)  # sentinels outside the written slots
    v_cache = torch.randn(layers, b, slots, h, d, generator=g).to(dtype)
    return q, k, v, qw, kw, cos, sin, k_cache, v_cache


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rotate_k", [True, False])
@pytest.mark.parametrize("norm", [True, False])
def test_matches_reference(interpreted, tol, dtype, rotate_k, norm):
    q, k, v, qw, kw, cos, sin, kc, vc = _inputs(dtype)
    if not norm:
        qw = kw = None
    kc_ref, vc_ref = kc.clone(), vc.clone()
    out = qk_norm_rope_cache_write(q, k, v, qw, kw, cos, sin, kc, vc, layer=1, slot_start=6, rotate_k=rotate_k, eps=EPS)
    ref = qk_norm_rope_cache_write_reference(q, k, v, qw, kw, cos, sin, kc_ref, vc_ref, 1, 6, rotate_k, EPS)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    torch.testing.assert_close(out.float(), ref.float(), **tol[dtype])
    torch.testing.assert_close(kc.float(), kc_ref.float(), **tol[dtype])
    assert torch.equal(vc, vc_ref)  # v is copied, bit for bit, and nothing else moved


def test_odd_sizes_and_untouched_slots(interpreted, tol):
    # 7 heads x D 10 = 70 channels (35 pairs, padded to a block of 64); 3 tokens into slots 9..11 of 12.
    q, k, v, qw, kw, cos, sin, kc, vc = _inputs(torch.float32, b=1, length=3, h=7, d=10, slots=12, layers=3)
    before_k, before_v = kc.clone(), vc.clone()
    qk_norm_rope_cache_write(q, k, v, qw, kw, cos, sin, kc, vc, layer=2, slot_start=9, rotate_k=True, eps=EPS)
    written = torch.zeros_like(kc, dtype=torch.bool)
    written[2, :, 9:12] = True
    assert torch.equal(kc[~written], before_k[~written]) and torch.equal(vc[~written], before_v[~written])
    assert not torch.equal(kc[written], before_k[written])
    torch.testing.assert_close(vc[2, :, 9:12], v)


def test_non_contiguous_projection_views(interpreted, tol):
    # q, k, v as slices of one fused QKV projection [B, L, 3 * C]: token rows strided by 3 * C.
    b, length, h, d = 2, 4, 2, 16
    qkv = torch.randn(b, length, 3 * h * d)
    q, k, v = (t.view(b, length, h, d) for t in qkv.split(h * d, dim=-1))  # [B, L, H, D] views
    _, _, _, qw, kw, _, _, kc, vc = _inputs(torch.float32, b=b, length=length, h=h, d=d)
    ang = torch.randn(length, d // 2)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    out = qk_norm_rope_cache_write(q, k, v, qw, kw, ang.cos(), ang.sin(), kc, vc, layer=0, slot_start=0, rotate_k=True, eps=EPS)
    ref = qk_norm_rope_cache_write_reference(q, k, v, qw, kw, ang.cos(), ang.sin(), kc_ref, vc_ref, 0, 0, True, EPS)
    torch.testing.assert_close(out, ref, **tol[torch.float32])
    torch.testing.assert_close(kc, kc_ref, **tol[torch.float32])


def test_reference_equals_model_ops():
    # The kernel's reference restates streamgen.models' rms_norm + apply_rope: they must agree exactly.
    q, k, v, qw, kw, cos, sin, kc, vc = _inputs(torch.float32)
    b, length, h, d = q.shape
    out = qk_norm_rope_cache_write_reference(q, k, v, qw, kw, cos, sin, kc, vc, 0, 2, True, EPS)
    expect_q = apply_rope(rms_norm(q.reshape(b, length, h * d), qw, EPS).view(b, length, h, d), cos, sin)
    expect_k = apply_rope(rms_norm(k.reshape(b, length, h * d), kw, EPS).view(b, length, h, d), cos, sin)
    assert torch.equal(out, expect_q)
    assert torch.equal(kc[0, :, 2 : 2 + length], expect_k)


def test_opcheck(interpreted):
    q, k, v, qw, kw, cos, sin, kc, vc = _inputs(torch.float32, b=1, length=3, h=2, d=16, slots=6, layers=1)
    for weights in ((qw, kw), (None, None)):
        torch.library.opcheck(
            torch.ops.streamgen.qk_norm_rope_cache_write.default,
            (q, k, v, *weights, cos, sin, kc, vc, 0, 1, True, EPS),
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layer=5, slot_start=0), "layer 5"),
        (dict(layer=0, slot_start=11), r"slots \[11, 16\)"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    q, k, v, qw, kw, cos, sin, kc, vc = _inputs(torch.float32)
    with pytest.raises(ValueError, match=match):
        qk_norm_rope_cache_write(q, k, v, qw, kw, cos, sin, kc, vc, rotate_k=True, eps=EPS, **kwargs)
    with pytest.raises(ValueError, match=r"cos / sin must be \[L, D/2\]"):
        qk_norm_rope_cache_write(q, k, v, qw, kw, cos[:2], sin[:2], kc, vc, layer=0, slot_start=0, rotate_k=True, eps=EPS)
