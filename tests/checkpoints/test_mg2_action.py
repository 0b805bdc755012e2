"""Matrix-Game 2.0's action module streamed block by block over its caches equals a plain reference of the
release's math: per token location, a mouse temporal attention, and a keyboard attention, each over the last
``local_attn_size`` frames up to the end of the query's block (its training mask), q and k RMS-normalised
per head (weight not applied) and rotated by the absolute frame index on the first ``rope_dims[0]`` dims."""
import math

import torch

from streamgen.config import ActionConfig, ModelConfig
from streamgen.models.action_modules import ActionInput
from streamgen.models.mg2_action import Mg2ActionCaches, Mg2ActionModule, Mg2ActionStep

BLOCK, WINDOW, BLOCKS = 3, 6, 4  # four blocks: the caches roll twice


def _config(**action) -> ModelConfig:
    return ModelConfig(name="mg2-action", dim=32, ffn_dim=64, num_heads=2, num_layers=1, latent_height=4, latent_width=4,
                       frames_per_block=BLOCK, window_frames=WINDOW, sink_frames=0,
                       actions=ActionConfig(module="matrix-game-2", window_frames=3, heads=2, hidden_size=8,
                                            mouse_hidden_dim=32, keyboard_hidden_dim=32, rope_dims=(8, 4, 4), **action))


def _rotate(x: torch.Tensor, frames: torch.Tensor, time_dims: int, theta: float) -> torch.Tensor:
    """x ``[..., F, H, D]`` rotated pairwise (2i, 2i+1) by angle frame * theta^(-2i / time_dims), i < time_dims / 2."""
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())  # [..., F, H, D/2]
    i = torch.arange(pairs.shape[-1], dtype=torch.float64)
    freq = torch.where(i < time_dims // 2, theta ** (-2 * i / time_dims), torch.zeros_like(i))
    angle = frames.double()[:, None, None] * freq  # [F, 1, D/2]
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angle), angle)).flatten(-2).float()


def _rms(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def _attend(q, k, v, allowed):
    """q ``[Fq, H, D]``, k / v ``[Fk, H, D]``, allowed ``[Fq, Fk]`` bool."""
    logits = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    logits = logits.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hqk,khd->qhd", logits.softmax(-1), v)


def reference(m: Mg2ActionModule, x, windows: ActionInput, config: ModelConfig) -> torch.Tensor:
    b, f, t, c = x.shape
    a = config.actions
    frames = torch.arange(f)
    ends = (frames // BLOCK + 1) * BLOCK
    allowed = (frames[None] < ends[:, None]) & (frames[None] >= ends[:, None] - WINDOW)  # [Fq, Fk]
    out = x.clone()
    h = a.heads
    if m.num_axes:
        for s in range(t):  # each token location on its own
            inp = torch.cat([x[0, :, s], windows.mouse[0].flatten(1)], dim=-1)  # [F, C + R*M]
            q, k, v = m.t_qkv(m.mouse_mlp(inp)).view(f, 3, h, -1).unbind(1)
            q, k = (_rotate(_rms(z), frames, a.rope_dims[0], a.rope_theta) for z in (q, k))
            out[0, :, s] += m.proj_mouse(_attend(q, k, v, allowed).reshape(f, -1))
    if m.num_keys:
        kv = m.keyboard_attn_kv(m.keyboard_embed(windows.keyboard[0]).flatten(1))  # [F, 2 * Ck]
        k, v = kv.view(f, 2, h, -1).unbind(1)
        k = _rotate(_rms(k), frames, a.rope_dims[0], a.rope_theta)
        base = out.clone()
        for s in range(t):
            q = _rotate(_rms(m.mouse_attn_q(base[0, :, s]).view(f, h, -1)), frames, a.rope_dims[0], a.rope_theta)
            out[0, :, s] += m.proj_keyboard(_attend(q, k, v, allowed).reshape(f, -1))
    return out


def _check(**action):
    config = _config(**action)
    torch.manual_seed(0)
    m = Mg2ActionModule(config, 0).eval()
    for p in m.parameters():  # every weight random, the zero-initialised projections too
        torch.nn.init.normal_(p, std=0.3)
    f, t = BLOCK * BLOCKS, config.tokens_per_frame
    x = torch.randn(1, f, t, config.dim)
    rows = m.window_rows
    windows = ActionInput((torch.rand(1, f, rows, m.num_keys) > 0.5).float(), torch.randn(1, f, rows, m.num_axes))
    caches = Mg2ActionCaches(config)
    streamed = []
    with torch.no_grad():
        for blk in range(BLOCKS):
            sl = slice(blk * BLOCK, (blk + 1) * BLOCK)
            w = ActionInput(windows.keyboard[:, sl], windows.mouse[:, sl])
            m(torch.randn_like(x[:, sl]), caches.step(w, blk * BLOCK, BLOCK))  # a denoising step, overwritten below
            streamed.append(m(x[:, sl], caches.step(w, blk * BLOCK, BLOCK)))
        expected = reference(m, x, windows, config)
        got = torch.cat(streamed, dim=1)
        full = m(x[:, :BLOCK], Mg2ActionStep(ActionInput(windows.keyboard[:, :BLOCK], windows.mouse[:, :BLOCK])))
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert (full - expected[:, :BLOCK]).abs().max() <= 1e-4 * expected.abs().max()  # no cache: over the given frames
    assert (got - x).abs().max() > 1e-2  # the module did something


def test_streamed_keyboard_and_mouse_equal_the_reference():
    _check()


def test_keyboard_only_equals_the_reference():  # templerun: no mouse
    _check(mouse_axes=())
