"""LayerNorm + adaLN modulate and gated residual: Triton (interpreted on CPU) vs reference, forward
and backward, and equality of the references with ``streamgen.models.norms``."""
import pytest
import torch

from streamgen.kernels.adaln import (
    gated_residual,
    gated_residual_reference,
    layer_norm_modulate,
    layer_norm_modulate_reference,
)
from streamgen.models import norms

EPS = 1e-6
SHAPES = [(2, 3, 5, 48), (1, 2, 3, 70)]  # [B, F, T, C]; 70 channels: a padded, non-power-of-two row


def _inputs(shape, dtype, seed=0, mod_dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    b, f, t, c = shape
    x = (2 * torch.randn(shape, generator=g) + 0.5).to(dtype)
    y = torch.randn(shape, generator=g).to(dtype)
    shift, scale, gate = (0.5 * torch.randn(b, f, c, generator=g).to(mod_dtype) for _ in range(3))
    return x, y, shift, scale, gate


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_forward_matches_reference(interpreted, tol, shape, dtype):
    x, y, shift, scale, gate = _inputs(shape, dtype)
    out = layer_norm_modulate(x, shift, scale, EPS)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), layer_norm_modulate_reference(x, shift, scale, EPS).float(), **tol[dtype])
    res = gated_residual(x, y, gate)
    assert res.dtype == dtype
    torch.testing.assert_close(res.float(), gated_residual_reference(x, y, gate).float(), **tol[dtype])


def test_strided_modulation_vectors(interpreted, tol):
    # The block passes shift / scale / gate as unbind() views of [B, F, 6, C]: strided frames.
    x, y, *_ = _inputs((2, 3, 4, 40), torch.float32)
    mod = torch.randn(2, 3, 6, 40).unbind(dim=2)  # 6 x [B, F, C], frame stride 6 * C
    torch.testing.assert_close(
        layer_norm_modulate(x, mod[0], mod[1], EPS), layer_norm_modulate_reference(x, mod[0], mod[1], EPS), **tol[torch.float32]
    )
    torch.testing.assert_close(gated_residual(x, y, mod[2]), gated_residual_reference(x, y, mod[2]), **tol[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_backward_matches_reference_autograd(interpreted, dtype):
    # The reference differentiated by autograd in float64 is the ground truth for the op's backward.
    x, y, shift, scale, gate = _inputs((2, 2, 3, 24), dtype, mod_dtype=dtype)
    leaves = [t.clone().requires_grad_() for t in (x, y, shift, scale, gate)]
    lx, ly, lsh, lsc, lg = leaves
    g1 = torch.randn(x.shape).to(dtype)
    g2 = torch.randn(x.shape).to(dtype)
    loss = (layer_norm_modulate(lx, lsh, lsc, EPS).float() * g1.float()).sum()
    loss = loss + (gated_residual(lx, ly, lg).float() * g2.float()).sum()
    loss.backward()

    refs = [t.detach().double().requires_grad_() for t in (x, y, shift, scale, gate)]
    rx, ry, rsh, rsc, rg = refs
    ref_loss = (layer_norm_modulate_reference(rx, rsh, rsc, EPS) * g1.double()).sum()
    ref_loss = ref_loss + (gated_residual_reference(rx, ry, rg) * g2.double()).sum()
    ref_loss.backward()
    atol = 1e-4 if dtype == torch.float32 else 3e-2
    for name, got, want in zip(("x", "y", "shift", "scale", "gate"), leaves, refs):
        assert got.grad.dtype == dtype, name
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=atol, atol=atol, msg=lambda m: f"d{name}: {m}")


def test_references_equal_model_norms():
    x, y, shift, scale, gate = _inputs((1, 2, 3, 16), torch.float32)
    assert torch.equal(layer_norm_modulate_reference(x, shift, scale, EPS), norms.layer_norm_modulate(x, shift, scale, EPS))
    assert torch.equal(gated_residual_reference(x, y, gate), norms.gated_residual(x, y, gate))


def test_opcheck(interpreted):
    x, y, shift, scale, gate = _inputs((1, 2, 3, 16), torch.float32)
    for requires_grad in (False, True):
        args = [t.clone().requires_grad_(requires_grad) for t in (x, y, shift, scale, gate)]
        torch.library.opcheck(torch.ops.streamgen.layer_norm_modulate.default, (args[0], args[2], args[3], EPS))
        torch.library.opcheck(torch.ops.streamgen.gated_residual.default, (args[0], args[1], args[4]))


def test_bad_shapes_are_named():
    x, y, shift, scale, gate = _inputs((1, 2, 3, 16), torch.float32)
    with pytest.raises(ValueError, match=r"shift must be \[B, F, C\] = \(1, 2, 16\)"):
        layer_norm_modulate(x, shift[:, :1], scale, EPS)
    with pytest.raises(ValueError, match="y shape"):
        gated_residual(x, y[:, :1], gate)
