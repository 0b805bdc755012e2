"""GPU checks (``pytest -m gpu tests/kernels`` with ``TRITON_INTERPRET=0``; run by
``benchmarks/gpu_check.sh``): compiled kernels against their references in bf16 and fp32 at
wan2.1-1.3b-like shapes, and a ``torch.compile``d block step that neither recompiles nor syncs with
the host across rolling steps."""
import pytest
import torch

from streamgen.kernels.adaln import (
    gated_residual,
    gated_residual_reference,
    layer_norm_modulate,
    layer_norm_modulate_reference,
)
from streamgen.kernels.cache_attention import cache_attention, cache_attention_reference
from streamgen.kernels.qk_norm_rope import qk_norm_rope_cache_write, qk_norm_rope_cache_write_reference

pytestmark = pytest.mark.gpu

# GPU tolerances: fp32 kernels use IEEE dots; bf16 outputs are rounded (RNE) once more than the reference.
GPU_TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rotate_k", [True, False])
def test_qk_norm_rope_cuda(cuda_compiled, dtype, rotate_k):
    g = torch.Generator(device="cuda").manual_seed(0)
    b, length, h, d, slots = 1, 3 * 1560, 12, 128, 12 * 1560
    q, k, v = (torch.randn(b, length, h, d, device="cuda", generator=g).to(dtype) for _ in range(3))
    qw, kw = (1 + 0.2 * torch.randn(h * d, device="cuda", generator=g)).to(dtype), torch.ones(h * d, device="cuda", dtype=dtype)
    ang = 5 * torch.rand(length, d // 2, device="cuda", generator=g)
    kc = torch.zeros(2, b, slots, h, d, device="cuda", dtype=dtype)
    vc = torch.zeros_like(kc)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    args = (q, k, v, qw, kw, ang.cos(), ang.sin())
    out = qk_norm_rope_cache_write(*args, kc, vc, layer=1, slot_start=4680, rotate_k=rotate_k, eps=1e-6)
    ref = qk_norm_rope_cache_write_reference(*args, kc_ref, vc_ref, 1, 4680, rotate_k, 1e-6)
    torch.testing.assert_close(out, ref, **GPU_TOL[dtype])
    torch.testing.assert_close(kc, kc_ref, **GPU_TOL[dtype])
    assert torch.equal(vc, vc_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 3, 1560, 1536), (2, 3, 77, 200)])
def test_adaln_cuda(cuda_compiled, dtype, shape):
    g = torch.Generator(device="cuda").manual_seed(0)
    b, f, t, c = shape
    x = torch.randn(shape, device="cuda", generator=g).to(dtype)
    y = torch.randn(shape, device="cuda", generator=g).to(dtype)
    shift, scale, gate = (0.3 * torch.randn(b, f, c, device="cuda", generator=g) for _ in range(3))
    torch.testing.assert_close(layer_norm_modulate(x, shift, scale, 1e-6), layer_norm_modulate_reference(x, shift, scale, 1e-6), **GPU_TOL[dtype])
    torch.testing.assert_close(gated_residual(x, y, gate), gated_residual_reference(x, y, gate), **GPU_TOL[dtype])
    # backward through the op (training path) against the reference's autograd
    xs = [x.clone().requires_grad_(), shift.clone().requires_grad_(), scale.clone().requires_grad_()]
    xr = [t_.detach().clone().requires_grad_() for t_ in xs]
    go = torch.randn(shape, device="cuda", generator=g).to(dtype)
    layer_norm_modulate(*xs, 1e-6).backward(go)
    layer_norm_modulate_reference(*xr, 1e-6).backward(go)
    for got, want in zip(xs, xr):
        torch.testing.assert_close(got.grad.float(), want.grad.float(), rtol=5e-2, atol=5e-2 if dtype == torch.bfloat16 else 1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("lq, lk, d", [(1560, 6240, 128), (77, 301, 64), (130, 1000, 80), (33, 47, 16)])
def test_cache_attention_cuda(cuda_compiled, dtype, relative, lq, lk, d):
    g = torch.Generator(device="cuda").manual_seed(0)
    h = 4
    q = torch.randn(1, lq, h, d, device="cuda", generator=g).to(dtype)
    kc = torch.randn(1, lk + 17, h, d, device="cuda", generator=g).to(dtype)
    vc = torch.randn(1, lk + 17, h, d, device="cuda", generator=g).to(dtype)
    k, v = kc[:, :lk], vc[:, :lk]  # prefix views, as the cache hands them out
    rel = {}
    if relative:
        ang = 6 * torch.rand(lk, d // 2, device="cuda", generator=g)
        rel = dict(key_cos=ang.cos(), key_sin=ang.sin())
    torch.testing.assert_close(cache_attention(q, k, v, **rel), cache_attention_reference(q, k, v, **rel), **GPU_TOL[dtype])


def _block_step_setup(rope_mode: str):
    from streamgen.presets import preset
    from streamgen.models.dit import CausalDiT
    from streamgen.models.kv_cache import RollingKVCache

    # Small but GPU-shaped: head dim 64, 2 layers, 3-frame blocks, window 12 (sink 3).
    config = preset("tiny").with_(dim=256, num_heads=4, ffn_dim=512, latent_height=8, latent_width=8,
                                  frames_per_block=3, window_frames=12, sink_frames=3, rope_mode=rope_mode)
    torch.manual_seed(0)
    model = CausalDiT(config).to("cuda", torch.bfloat16).eval()
    model.attention_backend = "triton"
    cache = RollingKVCache(config, dtype=torch.bfloat16, device="cuda")
    kv = model.encode_text(torch.randn(1, config.text_len, config.text_dim, device="cuda", dtype=torch.bfloat16))
    return model, cache, kv


@pytest.mark.parametrize("rope_mode", ["absolute"])
def test_compiled_block_step_no_recompile_no_sync(cuda_compiled, rope_mode):
    from torch._dynamo.testing import CompileCounterWithBackend

    from streamgen.models.layers import AttnContext

    torch._dynamo.reset()
    model, cache, kv = _block_step_setup(rope_mode)
    c = model.config
    n = c.frames_per_block
    counter = CompileCounterWithBackend("inductor")
    step = torch.compile(model.run_blocks, backend=counter)
    steps = 12  # sink block + 3 ring blocks + two more ring cycles
    x = torch.randn(1, n, c.in_channels, c.latent_height, c.latent_width, device="cuda", dtype=torch.bfloat16)
    t = torch.full((1, n), 500.0, device="cuda")
    ropes = [model.rope.for_frames(i * n, n) for i in range(steps)]  # built ahead: building one copies host -> device
    compiles = []
    with torch.no_grad():
        for i in range(steps):
            plan = cache.plan(i * n, n)
            ctx = AttnContext(rope=ropes[i], cache=cache, plan=plan)
            if i >= 3:  # warmed up (compiled, autotuned): the step must not sync with the host
                torch.cuda.set_sync_debug_mode("error")
            try:
                out = step(x, t, kv, ctx)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            compiles.append(counter.frame_count)
    torch.cuda.synchronize()
    assert torch.isfinite(out.float()).all()
    assert compiles[1:] == [compiles[1]] * (steps - 1) and compiles[1] <= 2, f"frame compiles per step: {compiles}"
    torch._dynamo.reset()
