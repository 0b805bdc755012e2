"""Batched sessions: the next blocks of several sessions of one pipeline in one batched forward per step.

``step_batch(sessions, actions_list)`` returns one :class:`~streamgen.session.Chunk` per session, each
exactly the chunk that session's own ``step(actions)`` would have returned (fp32: equal to ~1e-6). It
runs the one block loop (``streamgen.block_loop.run_block``) once for the whole batch:

- ``forward`` stacks the sessions' latents ``[N, n, C, H, W]`` (and audio ``[N, na, Ca]``) and calls
  ``CausalDiT.forward_cached`` with one cache and start frame per row: the patch embedding, time
  embedding, norms, linears, MLP, action modules and head run on the stacked batch; the cached
  self-attention runs row by row, each row writing and reading its own session's cache with its own
  plan and RoPE (sessions may be at different stream positions, some still filling their window, some
  rolling); text cross-attention is shared when the sessions' prompts are the same, stacked when their
  K / V have the same length, row by row otherwise;
- ``noise()`` concatenates each session's own draw (video, then audio), so a session's noises are the
  ones it draws alone;
- per session, before the forwards: ``Session.begin_block`` (its action windows, the ``recompute``
  rebuild); after them: ``Session.finish_block`` (keep the clean latents, advance its counters, emit the
  chunk). Prompt switches (``Session.set_prompt``) happen before the step.

The block is decoded beside the refill, every session's row with its own decoder state, the rows in one
call of each decoder (``streamgen.block_decode``: the same decode path as a session stepped alone). A
batch of one is ``Session.step`` itself; sessions with an image condition,
Matrix-Game 2.0's action caches or speech input, and those of a pipeline with a feature cache, step one by
one (``batchable``).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch

from streamgen import block_loop
from streamgen.block_decode import Decoded, beside_refill, decode_sessions
from streamgen.models.action_modules import ActionInput
from streamgen.session import Chunk, Session


def step_batch(sessions: Sequence[Session], actions_list: Sequence[Any] | None = None) -> list[Chunk]:
    """One block of every session in ``sessions`` (same pipeline), ``actions_list[i]`` the wire events of
    session i since its previous block (None: none)."""
    t0 = time.perf_counter()
    actions_list = [None] * len(sessions) if actions_list is None else list(actions_list)
    if len(actions_list) != len(sessions):
        raise ValueError(f"{len(actions_list)} action lists for {len(sessions)} sessions")
    check_batch(sessions)
    acts = [s.begin_block(a) for s, a in zip(sessions, actions_list)]
    return run_batch(sessions, acts, t0)


def check_batch(sessions: Sequence[Session]) -> None:
    """Raise unless ``sessions`` can step together: at least one, all open, distinct, of one pipeline."""
    if not sessions:
        raise ValueError("step_batch() needs at least one session")
    pipe = sessions[0].pipe
    for s in sessions:
        if s.pipe is not pipe:
            raise ValueError(f"step_batch(): sessions of pipelines {pipe.name!r} and {s.pipe.name!r}; "
                             "batch only sessions of one pipeline")
        if s.closed:
            raise RuntimeError("step_batch() with a closed session")
    if len({id(s) for s in sessions}) != len(sessions):
        raise ValueError("step_batch(): a session appears twice in one batch")


@torch.inference_mode()
def run_batch(sessions: Sequence[Session], acts: Sequence[ActionInput | None], t0: float | None = None) -> list[Chunk]:
    """The blocks begun by ``Session.begin_block`` (``acts``: each one's action windows), generated in one
    batched block loop; ``t0``: when they began (each chunk's ``timings["total"]``)."""
    t0 = time.perf_counter() if t0 is None else t0
    check_batch(sessions)
    if len(sessions) == 1 or not batchable(sessions[0]):
        return [s.run_block(a, t0) for s, a in zip(sessions, acts)]
    pipe = sessions[0].pipe
    timings: dict[str, float] = {}
    decoded: list[Decoded] = []

    def around_refill(x0: block_loop.Streams, refill: Callable[[], None]) -> None:
        decoded.extend(beside_refill(pipe, lambda: decode_sessions(sessions, x0), refill))

    x0 = block_loop.run_block(batched_forward(sessions, acts), lambda: batched_noise(sessions), pipe.timesteps,
                              context_noise=pipe.config.context_noise, timings=timings, around_refill=around_refill)
    chunks = []
    for r, (s, a, d) in enumerate(zip(sessions, acts, decoded)):
        row = {name: x[r : r + 1].clone() for name, x in x0.items()}  # [1, ...]: the session keeps its own copy
        chunks.append(s.finish_block(row, a, timings, t0, decoded=d))
    return chunks


def batchable(session: Session) -> bool:
    """Whether sessions of this one's pipeline step in one batched forward: not yet those with per-session
    conditioning (an image condition, Matrix-Game 2.0's action caches) or speech input (avatars), nor
    those of a pipeline with a feature cache (its reuse state is kept per session cache); they step one
    by one."""
    no_feature_cache = getattr(session.pipe, "feature_cache", None) is None
    return session.conditioning is None and session.speech is None and no_feature_cache


def batched_noise(sessions: Sequence[Session]) -> block_loop.Streams:
    """Each session's own draw (video, then audio, in session order), stacked ``[N, ...]`` per stream."""
    draws = [s.block_noise() for s in sessions]
    return {name: torch.cat([d[name] for d in draws]) for name in draws[0]}


def batched_forward(sessions: Sequence[Session], acts: Sequence[ActionInput | None]) -> block_loop.Forward:
    """The model over every session's caches at its own next frame, as the block loop calls it."""
    model = sessions[0].pipe.model
    n = len(sessions)
    caches = [s.cache for s in sessions]
    starts = [s.next_frame for s in sessions]
    text_kv = batch_text_kv([s.text_kv for s in sessions])
    actions = None
    if acts[0] is not None:
        actions = ActionInput(torch.cat([a.keyboard for a in acts]), torch.cat([a.mouse for a in acts]))  # [N, n, R, K/M]
    joint = sessions[0].config.audio is not None
    audio_kw: dict[str, Any] = {}
    if joint:
        audio_kw = dict(audio_cache=[s.audio_cache for s in sessions], sink_kv=[s.sink_kv for s in sessions])

    def forward(xs: block_loop.Streams, t: float) -> block_loop.Streams:
        x = xs["video"]  # [N, n, C, H, W]
        tv = torch.full((n, x.shape[1]), t, device=x.device, dtype=torch.float32)  # [N, n]
        kw = dict(audio_kw, actions=actions)
        if joint:
            kw.update(audio=xs["audio"], audio_t=torch.full((n, xs["audio"].shape[1]), t, device=x.device, dtype=torch.float32))
        out = model.forward_cached(x, tv, text_kv, caches, starts, **kw)
        return {"video": out[0], "audio": out[1]} if joint else {"video": out}
    return forward


def batch_text_kv(per_session: Sequence[list]) -> list:
    """The sessions' per-layer text K / V as one batch: shared when every session holds the same prompt's
    (``[1, ...]``, broadcast), stacked ``[N, Lc, H, D]`` when they have the same length, else per layer a
    list of one ``(k, v)`` per row (cross-attention then runs row by row)."""
    first = per_session[0]
    if all(kv is first for kv in per_session):
        return first
    layers = []
    for i in range(len(first)):
        rows = [kv[i] for kv in per_session]
        if len({tuple(k.shape) for k, _ in rows}) == 1:
            layers.append((torch.cat([k for k, _ in rows]), torch.cat([v for _, v in rows])))  # [N, Lc, H, D]
        else:
            layers.append(list(rows))
    return layers
