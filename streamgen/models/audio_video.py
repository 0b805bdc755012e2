"""Joint audio-video generation (OmniForcing-style) on the same ``DiTBlock`` as the video model.

An audio token stream runs beside the video stream: one token per audio latent frame, its own embedding,
its own stack of ``DiTBlock``s (same class, same width) and its own head. In every layer both streams
attend in **one** attention over the union of their keys (masks in :mod:`streamgen.models.av_masks`),
with cross-modal RoPE on physical time (:mod:`streamgen.models.av_rope`). A block spans the same seconds
in both modalities (``ModelConfig.block_seconds``: e.g. 2 video latents and 8 audio latents).

Streaming keeps one :class:`RollingKVCache` per modality, each with its own window and sink: a block
writes its video K/V into the video cache and its audio K/V into the audio cache, then video queries
read ``[video cache | audio cache]`` and audio queries ``[sinks | video cache | audio cache]``. Because
each cache holds exactly what its modality's window rule allows, no mask is needed. The learnable audio
sink tokens (identity RoPE, timestep 0) attend only to themselves, so their per-layer K/V depend on the
weights and the prompt only: :func:`sink_kv` computes them once per prompt.

The functions here take the video model (a ``CausalDiT``, which owns the :class:`AudioStream`) and use
only its public pieces (``embed_video``, ``embed_time``, ``unpatchify``, ``blocks``, ``layer_stack``, ``head``,
``backend``); ``dit.py`` imports this module, never the other way round.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from streamgen.config import ModelConfig
from streamgen.models.av_rope import relative_shift_blocks, shifted
from streamgen.models.init import INIT_STD
from streamgen.models.kv_cache import CacheWrite, RollingKVCache
from streamgen.models.layers import DiTBlock, apply_rope_rows, cat_rows, stack_rope
from streamgen.models.norms import layer_norm_modulate
from streamgen.models.rope import apply_rope

KV = tuple[torch.Tensor, torch.Tensor]


class AudioStream(nn.Module):
    """Audio embedding, audio blocks, audio head and sink tokens of a joint model."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        a, dim = config.audio, config.dim
        self.eps = config.eps
        self.embedding = nn.Linear(a.channels, dim)
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.num_layers))
        self.head = nn.Linear(dim, a.channels)
        self.head_modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)
        self.sink = nn.Parameter(torch.randn(1, a.sink_tokens, dim) * INIT_STD) if a.sink_tokens else None

    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """audio ``[B, Fa, Ca]`` -> tokens ``[B, Fa, 1, C]`` (one token per frame)."""
        return self.embedding(audio)[:, :, None]

    def out(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """h ``[B, Fa, 1, C]``, e ``[B, Fa, C]`` -> velocity ``[B, Fa, Ca]``."""
        mod = (self.head_modulation.float()[:, None] + e.float()[:, :, None]).unbind(dim=2)  # 2 x [B, Fa, C]
        return self.head(layer_norm_modulate(h, mod[0], mod[1], self.eps))[:, :, 0]


def new_audio_cache(config: ModelConfig, *, batch: int = 1, dtype=torch.float32, device="cpu") -> RollingKVCache:
    """The audio modality's rolling cache: one token per frame, its own window and sink."""
    window, sink = config.audio_cache_frames()
    audio_view = config.with_(
        latent_height=config.patch[1], latent_width=config.patch[2], frames_per_block=config.audio_frames_per_block,
        window_frames=window, sink_frames=sink, audio=None, actions=None,
    )
    return RollingKVCache(audio_view, batch=batch, dtype=dtype, device=device)


def joint_layer(model: nn.Module, i: int, hv, ha, mv, ma, text_kv, attend: Callable, actions):
    """One layer over both streams: hv ``[B, Fv, T, C]``, ha ``[B, Fa, 1, C]``."""
    vblk, ablk = model.blocks[i], model.audio.blocks[i]
    b, fv, tv, c = hv.shape
    fa = ha.shape[1]
    qv, kv, vv = vblk.self_attn.qkv(vblk.attn_input(hv, mv).reshape(b, fv * tv, c))  # 3 x [B, Lv, H, D]
    qa, ka, va = ablk.self_attn.qkv(ablk.attn_input(ha, ma).reshape(b, fa, c))  # 3 x [B, La, H, D]
    ov, oa = attend(i, qv, kv, vv, qa, ka, va)
    yv = vblk.self_attn.o(ov.reshape(b, fv * tv, c)).view(b, fv, tv, c)  # [B, Fv, T, C]
    ya = ablk.self_attn.o(oa.reshape(b, fa, c)).view(b, fa, 1, c)  # [B, Fa, 1, C]
    num_layers = model.config.num_layers
    hv = vblk.finish(hv, yv, mv, text_kv[i], actions)
    ha = ablk.finish(ha, ya, ma, text_kv[num_layers + i])
    return hv, ha


def run_joint(model: nn.Module, x, t, audio, audio_t, text_kv, attend, actions, sinks: int):
    """Embed both streams (with ``sinks`` sink tokens before the audio), run all layers, apply both heads."""
    hv = model.embed_video(x)  # [B, Fv, T, C]
    ev, ev0 = model.embed_time(t)
    ha = model.audio.embed(audio)  # [B, Fa, 1, C]
    ea, ea0 = model.embed_time(audio_t)
    if sinks:
        b = ha.shape[0]
        sink = model.audio.sink.to(ha.dtype)[:, :, None].expand(b, sinks, 1, ha.shape[-1])  # [B, S, 1, C]
        ha = torch.cat([sink, ha], dim=1)
        _, es0 = model.embed_time(torch.zeros(b, sinks, device=audio_t.device))
        ea0 = torch.cat([es0, ea0], dim=1)
    hv, ha = model.layer_stack(lambda i, h: joint_layer(model, i, *h, model.blocks[i].modulations(ev0),
                                                        model.audio.blocks[i].modulations(ea0), text_kv, attend, actions),
                               (hv, ha))
    return model.unpatchify(model.head(hv, ev)), model.audio.out(ha[:, sinks:], ea)


def joint_forward(model, x, t, audio, audio_t, text_kv, *, positions, audio_positions, mask, actions):
    """Full-sequence joint forward; ``mask`` is the joint token mask (``av_masks``) or None (bidirectional).

    Returns (video velocity ``[B, Fv, C, H, W]``, audio velocity ``[B, Fa, Ca]``).
    """
    sinks = model.config.audio.sink_tokens
    rope_v = model.rope.for_positions(positions)
    rope_a = model.audio_rope.for_frames(audio_positions, sinks)
    backend = model.backend

    def attend(i, qv, kv, vv, qa, ka, va):
        lv = qv.shape[1]
        q = torch.cat([apply_rope(qv, *rope_v), apply_rope(qa, *rope_a)], dim=1)  # [B, Lv+La, H, D]
        k = torch.cat([apply_rope(kv, *rope_v), apply_rope(ka, *rope_a)], dim=1)  # [B, Lv+La, H, D]
        v = torch.cat([vv, va], dim=1)  # [B, Lv+La, H, D]
        out = backend(q, k, v, mask)
        return out[:, :lv], out[:, lv:]

    return run_joint(model, x, t, audio, audio_t, text_kv, attend, actions, sinks)


@torch.no_grad()
def sink_kv(model: nn.Module, text_kv, batch: int = 1) -> list[KV]:
    """Per-layer K / V ``[B, S, H, D]`` of the audio sink tokens under a prompt (they attend only to themselves)."""
    stream = model.audio
    if stream.sink is None:
        return []
    sinks = stream.sink.shape[1]
    h = stream.sink[:, :, None].expand(batch, sinks, 1, stream.sink.shape[-1])  # [B, S, 1, C]
    _, e0 = model.embed_time(torch.zeros(batch, sinks, device=h.device))
    out: list[KV] = []
    num_layers = model.config.num_layers
    for i, blk in enumerate(stream.blocks):
        mod = blk.modulations(e0)
        # identity RoPE on the sinks: q, k are used un-rotated
        q, k, v = blk.self_attn.qkv(blk.attn_input(h, mod).reshape(batch, sinks, -1))  # 3 x [B, S, H, D]
        out.append((k, v))
        y = model.backend(q, k, v)  # [B, S, H, D]
        y = blk.self_attn.o(y.reshape(batch, sinks, -1)).view(h.shape)  # [B, S, 1, C]
        h = blk.finish(h, y, mod, text_kv[num_layers + i])
    return out


def joint_forward_cached(
    model, x, t, audio, audio_t, text_kv, caches: list[RollingKVCache], starts: list[int],
    audio_caches: list[RollingKVCache], audio_starts: list[int], sinks: list[list[KV]], actions,
):
    """One streaming block of both modalities; writes each modality's K / V into its own cache.

    One entry per row of the batch in ``caches``, ``starts``, ``audio_caches``, ``audio_starts`` and
    ``sinks`` (batched sessions, ``streamgen.batch_step``), or a single entry for the whole batch: each
    row writes and reads its own caches at its own positions (in one attention call for all rows when
    they read as many slots); everything else runs on the stacked batch.
    """
    rows = [JointRow.plan(model, x.shape[1], audio.shape[1], *row)
            for row in zip(caches, starts, audio_caches, audio_starts, sinks)]
    if len({(r.plan_v.valid_tokens, r.plan_a.valid_tokens) for r in rows}) == 1:
        attend = _attend_rows(model, rows)
    else:  # rows reading different numbers of slots (some sessions still filling their windows)
        per_row = [_attend_rows(model, [r]) for r in rows]

        def attend(i, *qkv):  # each of qv, kv, vv, qa, ka, va split by row: [1, L, H, D]
            outs = [a(i, *(u[r : r + 1] for u in qkv)) for r, a in enumerate(per_row)]
            return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])  # [B, Lv / La, H, D]
    return run_joint(model, x, t, audio, audio_t, text_kv, attend, actions, 0)


@dataclass
class JointRow:
    """One stream's block over its own caches: plans and RoPE of both modalities, its sinks' K / V."""

    cache: RollingKVCache
    audio_cache: RollingKVCache
    plan_v: CacheWrite
    plan_a: CacheWrite
    rope_v: tuple[torch.Tensor, torch.Tensor]
    rope_a: tuple[torch.Tensor, torch.Tensor]
    key_rope_v: tuple[torch.Tensor, torch.Tensor] | None  # relative mode: keys rotated on read
    key_rope_a: tuple[torch.Tensor, torch.Tensor] | None
    sinks: list[KV]

    @staticmethod
    def plan(model, nv: int, na: int, cache: RollingKVCache, start_frame: int, audio_cache: RollingKVCache,
             audio_start: int, sinks: list[KV]) -> "JointRow":
        """Place a block of ``nv`` video / ``na`` audio frames in the stream's caches."""
        c = model.config
        plan_v = cache.plan(start_frame, nv)
        plan_a = audio_cache.plan(audio_start, na)
        key_rope_v = key_rope_a = None
        if c.rope_mode == "relative":  # keys stored un-rotated, rotated on read at window-relative positions
            blocks = relative_shift_blocks(c, start_frame // c.frames_per_block)
            sv, sa = blocks * c.frames_per_block, blocks * c.audio_frames_per_block
            rope_v = model.rope.for_positions(shifted(range(start_frame, start_frame + nv), cache.sink, sv))
            rope_a = model.audio_rope.for_frames(shifted(range(audio_start, audio_start + na), audio_cache.sink, sa))
            key_rope_v = model.rope.for_positions(shifted(cache.frame_at_slot[: cache.valid_frames], cache.sink, sv))
            key_rope_a = model.audio_rope.for_frames(shifted(audio_cache.frame_at_slot[: audio_cache.valid_frames], audio_cache.sink, sa))
        else:
            rope_v = model.rope.for_frames(start_frame, nv)
            rope_a = model.audio_rope.for_frames(tuple(range(audio_start, audio_start + na)))
        return JointRow(cache, audio_cache, plan_v, plan_a, rope_v, rope_a, key_rope_v, key_rope_a, sinks)


def _attend_rows(model, rows: list[JointRow]) -> Callable:
    """The joint attention of the batch whose row r is ``rows[r]`` (one row: the whole batch), all rows
    reading as many slots: per row cache writes and reads, one attention call per modality."""
    relative = model.config.rope_mode == "relative"
    rope_v, rope_a = stack_rope([r.rope_v for r in rows]), stack_rope([r.rope_a for r in rows])
    if relative:
        key_rope_v, key_rope_a = stack_rope([r.key_rope_v for r in rows]), stack_rope([r.key_rope_a for r in rows])
    backend = model.backend
    one = len(rows) == 1

    def attend(i, qv, kv, vv, qa, ka, va):
        if not relative:  # absolute mode stores rotated keys
            kv, ka = apply_rope_rows(kv, rope_v), apply_rope_rows(ka, rope_a)
        for r, row in enumerate(rows):
            pick = (lambda u: u) if one else (lambda u: u[r : r + 1])
            row.cache.write(i, row.plan_v, pick(kv), pick(vv))
            row.audio_cache.write(i, row.plan_a, pick(ka), pick(va))
        reads_v = [row.cache.read(i, row.plan_v) for row in rows]
        reads_a = [row.audio_cache.read(i, row.plan_a) for row in rows]
        kv_v, vv_v = cat_rows([k for k, _ in reads_v]), cat_rows([v for _, v in reads_v])  # [B, Nv, H, D]
        kv_a, vv_a = cat_rows([k for k, _ in reads_a]), cat_rows([v for _, v in reads_a])  # [B, Na, H, D]
        if relative:
            kv_v, kv_a = apply_rope_rows(kv_v, key_rope_v), apply_rope_rows(kv_a, key_rope_a)
        keys, values = torch.cat([kv_v, kv_a], dim=1), torch.cat([vv_v, vv_a], dim=1)  # [B, Nv+Na, H, D]
        ov = backend(apply_rope_rows(qv, rope_v), keys, values)
        if rows[0].sinks:
            sink_k = cat_rows([r.sinks[i][0] for r in rows]).to(keys.dtype)  # [B, S, H, D]
            sink_v = cat_rows([r.sinks[i][1] for r in rows]).to(values.dtype)
            keys = torch.cat([sink_k, keys], dim=1)  # [B, S+Nv+Na, H, D]
            values = torch.cat([sink_v, values], dim=1)
        oa = backend(apply_rope_rows(qa, rope_a), keys, values)
        return ov, oa

    return attend
