"""One objective per recipe: which networks it trains and what one training step does.

An objective gets what it needs passed in (``StepContext``: configs, generators, batches, network
building and ``update(name, loss)``: backward, gradient averaging, clipping, optimiser step, EMA); it never
sees the trainer. Steps return their losses as floats. Samples are dicts of generated streams (video,
and audio for joint models; ``modalities.py``). Randomness comes from the context's generators only:
``shared`` (identical on every rank: the exit steps of the rollout) and ``local`` (per rank: noise,
timesteps). Rollout-regression and long-tuning objectives: ``objectives_rollout.py``; the recipe ->
objective table: ``recipes.OBJECTIVES``.
"""
from __future__ import annotations

import torch

from streamgen.samplers import add_noise
from streamgen.training.conditioning import (
    Cond, drop_actions, drop_audio, drop_text, frame_timesteps, make_cond, null_actions, null_audio,
)
from streamgen.training.losses import (
    critic_loss, dmd_generator_loss, rollout_regression_loss, sample_timesteps, streams_flow_loss,
)
from streamgen.training.modalities import (
    VIDEO, block_frames, new_caches, predict, predict_teacher_forcing, sample_of, stream_frames, stream_shape, stream_t,
    streams,
)
from streamgen.training.ode import ode_regression_loss, teacher_trajectory
from streamgen.training.rollout import Rollout, TrainingKVCache, recache, sample_exit_indices, self_forcing_rollout
from streamgen.training.seeds import ode_pool_seed
from streamgen.training.step_context import StepContext
from streamgen.training.teacher_record import (
    BIDIRECTIONAL, TEACHER_FORCING, ode_teacher_kind, teacher_attention, training_mask,
)


class Objective:
    causal = True  # the trained network streams block by block (samples go through a Session)
    wake_random_init = True  # randomly initialised networks get non-zero heads (distillation smoke runs)

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.networks: dict[str, torch.nn.Module] = {}  # name -> module; frozen ones have no optimiser
        self.frozen: set[str] = set()
        self.lrs: dict[str, float] = {}

    @classmethod
    def clip_frames(cls, config, model_config) -> int:
        """Latent frames of the clips this objective trains on (``data.num_frames``, default the window)."""
        return config.data.num_frames or model_config.window_frames

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.ctx.generators["local"], dtype=like.dtype).to(like.device)

    def _t(self, n: int) -> torch.Tensor:
        return sample_timesteps(n, self.ctx.generators["local"], shift=self.ctx.model_config.shift)

    def cond(self, model, batch, **kw) -> Cond:
        return make_cond(model, batch, frame_keys=self.cfg.data.frame_keys, **kw)

    def add_scores(self) -> None:
        """The DMD scores: a frozen teacher (``init.teacher``, the real score, called under the attention it
        was trained with) and a trainable critic (the fake score, from ``init.critic`` or the teacher) at
        ``dmd.critic_lr``."""
        init, ctx = self.cfg.init, self.ctx
        self.teacher_attention = teacher_attention(self.cfg.dmd.teacher_attention, init.teacher)
        self.networks["critic"] = ctx.build_network(init.critic or init.teacher, trainable=True, role="critic")
        self.networks["teacher"] = ctx.build_network(init.teacher, trainable=False, role="teacher")
        self.frozen.add("teacher")
        self.lrs["critic"] = self.cfg.dmd.critic_lr

    def _score_kw(self) -> dict:
        dmd = self.cfg.dmd
        return dict(generator=self.ctx.generators["local"], shift=dmd.shift, min_t=dmd.min_t, max_t=dmd.max_t)

    def dmd_loss(self, xs: dict, batch: dict) -> tuple[torch.Tensor, dict]:
        """DMD generator loss of generated streams ``xs`` judged under ``batch``'s conditioning; the real
        score's unconditional branch drops the text and, with ``dmd.guide_actions``, the actions."""
        critic, teacher = self.networks["critic"], self.networks["teacher"]
        unguided = null_actions(teacher.config, batch) if self.cfg.dmd.guide_actions else batch
        unguided = null_audio(unguided) if self.cfg.dmd.guide_audio else unguided
        with torch.no_grad():
            c_real, u_real = self.cond(teacher, batch), self.cond(teacher, unguided, uncond=True)
            c_fake = self.cond(critic, batch)
        return dmd_generator_loss(xs, teacher, critic, c_real, u_real, c_fake, scale=self.cfg.dmd.guidance_scale,
                                  attention=self.teacher_attention, **self._score_kw())

    def critic_step(self, xs: dict, batch: dict) -> float:
        """One critic update on (detached) generated streams; returns its loss."""
        critic = self.networks["critic"]
        loss = critic_loss({k: x.detach() for k, x in xs.items()}, critic, self.cond(critic, batch), **self._score_kw())
        self.ctx.update("critic", loss)
        return float(loss.detach())

    def exit_indices(self, num_blocks: int) -> tuple[int, ...]:
        """The gradient-carrying step of each generated block (``dmd.exit_per``, ``dmd.last_step_only``)."""
        dmd = self.cfg.dmd
        return sample_exit_indices(len(self.ctx.timesteps), num_blocks, self.ctx.generators["shared"],
                                   per=dmd.exit_per, last_step_only=dmd.last_step_only)

    def primed_rollout(self, student, batch: dict, context_blocks: int, exits, *, grad: bool, grad_from_block: int = 0,
                       switch: tuple[int, Cond] | None = None) -> Rollout:
        """The student's rollout after the clip's first ``context_blocks`` real blocks, written clean into
        its caches as ``Session.prime`` writes them (none: from noise)."""
        cfg = self.ctx.model_config
        real = sample_of(batch)
        b, f = real[VIDEO].shape[:2]
        n = cfg.frames_per_block
        if context_blocks >= f // n:
            raise ValueError(f"context_blocks={context_blocks} leaves no block to generate in clips of {f // n} blocks")
        with torch.set_grad_enabled(grad):
            cond = self.cond(student, batch)
            caches = new_caches(student, b, TrainingKVCache)
            recache(student, caches, cond, [{k: x[:, i * block_frames(cfg, k) : (i + 1) * block_frames(cfg, k)]
                                             for k, x in real.items()} for i in range(context_blocks)])
            return self_forcing_rollout(student, cond, batch=b, num_frames=f - context_blocks * n,
                                        timesteps=self.ctx.timesteps, exit_index=exits,
                                        noise_generator=self.ctx.generators["local"], grad=grad, caches=caches,
                                        start_frame=context_blocks * n, grad_from_block=grad_from_block, switch=switch)


class TeacherObjective(Objective):
    """Bidirectional flow matching: one timestep per clip, no mask (``training_mask``), text dropped with
    ``data.cfg_dropout`` and actions with ``data.action_dropout`` (classifier-free guidance by either)."""

    causal = False
    wake_random_init = False
    attention = BIDIRECTIONAL

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx)
        self.networks["student"] = ctx.build_network(self.cfg.init.student, trainable=True)
        self.lrs["student"] = self.cfg.train.lr

    def _noised(self, x0: dict, t: torch.Tensor) -> tuple[dict, dict]:
        noise, ts = {k: self._noise(x) for k, x in x0.items()}, stream_t(self.ctx.model_config, t)
        return {k: add_noise(x0[k], noise[k], ts[k]) for k in x0}, noise

    def dropped_batch(self, step: int) -> dict:
        """The step's batch with its text and its actions dropped per sample (CFG dropout)."""
        ctx, data = self.ctx, self.cfg.data
        batch = drop_text(ctx.batch(step), data.cfg_dropout, ctx.generators["local"])
        batch = drop_actions(ctx.model_config, batch, data.action_dropout, ctx.generators["local"])
        return drop_audio(batch, data.audio_dropout, ctx.generators["local"])

    def step(self, step: int) -> dict[str, float]:
        model = self.networks["student"]
        batch = self.dropped_batch(step)
        x0 = sample_of(batch)
        b, f = x0[VIDEO].shape[:2]
        t = frame_timesteps(self._t(b), b, f, x0[VIDEO].device)  # [B, F]
        x_t, noise = self._noised(x0, t)
        mask = training_mask(self.attention, self.ctx.model_config, f, t.device)
        loss = streams_flow_loss(predict(model, x_t, t, self.cond(model, batch), mask=mask), x0, noise,
                                 motion_weight=self.cfg.train.motion_weight)
        self.ctx.update("student", loss)
        return {"loss": float(loss.detach())}


class ARTeacherObjective(TeacherObjective):
    """Teacher forcing: ``[clean | noisy]`` under the teacher-forcing mask (``training_mask``), a random
    timestep per block; text and actions dropped as the bidirectional teacher's."""

    causal = True
    attention = TEACHER_FORCING

    def step(self, step: int) -> dict[str, float]:
        model, cfg = self.networks["student"], self.ctx.model_config
        batch = self.dropped_batch(step)
        x0 = sample_of(batch)
        b, f = x0[VIDEO].shape[:2]
        n = cfg.frames_per_block
        t = self._t(b * (f // n)).view(b, f // n).repeat_interleave(n, dim=1).to(x0[VIDEO].device)  # [B*F/n] -> [B, F]
        noisy, noise = self._noised(x0, t)
        mask = training_mask(self.attention, cfg, f, t.device)
        out = predict_teacher_forcing(model, x0, noisy, t, self.cond(model, batch), mask)
        loss = streams_flow_loss(out, x0, noise, motion_weight=self.cfg.train.motion_weight)
        self.ctx.update("student", loss)
        return {"loss": float(loss.detach())}


class ODEObjective(Objective):
    """Regression of the causal student onto a pool of teacher trajectories (computed once)."""

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx)
        init = self.cfg.init
        self.networks["student"] = ctx.build_network(init.student, trainable=True)
        self.networks["teacher"] = ctx.build_network(init.teacher, trainable=False, role="teacher")
        self.frozen.add("teacher")
        self.lrs["student"] = self.cfg.train.lr
        self.teacher_kind = ode_teacher_kind(self.cfg.ode.teacher_kind, init.teacher)
        self.pool = ctx.cached(f"ode_pairs_rank{ctx.rank}", self._make_pool)

    @torch.no_grad()
    def _make_pool(self) -> dict[str, torch.Tensor]:
        ctx, teacher, ode, cfg = self.ctx, self.networks["teacher"], self.cfg.ode, self.ctx.model_config
        g = torch.Generator().manual_seed(ode_pool_seed(self.cfg.train.seed, ctx.rank))
        rows: list[dict] = []
        i = 0
        while sum(r[VIDEO].shape[0] for r in rows) < ode.num_pairs:
            batch = ctx.batch(-1 - i)
            i += 1
            b, f = batch[VIDEO].shape[:2]
            noise = {k: torch.randn(stream_shape(cfg, k, b, f), generator=g).to(batch[VIDEO]) for k in streams(cfg)}
            traj = teacher_trajectory(
                teacher, noise, self.cond(teacher, batch),
                self.cond(teacher, null_audio(batch) if self.cfg.dmd.guide_audio else batch, uncond=True),
                student_steps=ctx.timesteps, substeps=ode.substeps, scale=ode.guidance_scale,
                shift=cfg.shift, causal=self.teacher_kind == "causal",
            )  # per stream [S+1, B, F, ...]
            row = {k: v for k, v in batch.items() if k not in noise}
            for k, v in traj.items():
                row[f"trajectory:{k}"] = v.transpose(0, 1).contiguous()  # [S+1, B, F, ...] -> [B, S+1, F, ...]
                row[k] = v[-1]
            rows.append(row)
        return {k: torch.cat([r[k] for r in rows])[: ode.num_pairs].cpu() for k in rows[0]}

    def step(self, step: int) -> dict[str, float]:
        ctx, model = self.ctx, self.networks["student"]
        pick = torch.randint(self.pool[VIDEO].shape[0], (self.cfg.train.batch,), generator=ctx.generators["local"])
        batch = {k: v[pick].to(ctx.device) for k, v in self.pool.items()}
        traj = {k.split(":", 1)[1]: batch.pop(k).transpose(0, 1).to(ctx.dtype)  # [B, S+1, F, ...] -> [S+1, B, F, ...]
                for k in list(batch) if k.startswith("trajectory:")}
        loss = ode_regression_loss(model, traj, self.cond(model, batch), student_steps=ctx.timesteps,
                                   generator=ctx.generators["local"])
        ctx.update("student", loss)
        return {"loss": float(loss.detach())}


class SelfForcingObjective(Objective):
    """Self-Forcing DMD: the student's own rollout (after ``dmd.context_blocks`` real blocks; the exit step
    drawn per block by default, so every denoising step is trained), a frozen teacher as the real score
    (called as it was trained, guided by text and actions), a trainable critic updated every step on a
    fresh rollout of the current student."""

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx)
        self.networks["student"] = ctx.build_network(self.cfg.init.student, trainable=True)
        self.lrs["student"] = self.cfg.train.lr
        self.add_scores()

    def judged_frames(self, frames: int) -> int:
        """Frames at the end of the clip the scores judge: all of them from noise; after real context the
        teacher's window (the frames a clip of its training length covers), as long tuning does."""
        cfg = self.ctx.model_config
        if not self.cfg.dmd.context_blocks:
            return frames
        return min(cfg.window_frames, frames) // cfg.frames_per_block * cfg.frames_per_block

    def dmd_window(self, xs: dict, batch: dict) -> tuple[dict, dict]:
        """The clip's last ``judged_frames`` frames and the batch cut to them (``last_frames``)."""
        w = self.judged_frames(xs[VIDEO].shape[1])
        if w == xs[VIDEO].shape[1]:
            return xs, batch
        return last_frames(self.ctx.model_config, xs, batch, w, self.cfg.data.frame_keys)

    def grad_from_block(self, frames: int) -> int:
        """The first generated block a loss looks at (earlier blocks roll out without grad)."""
        n = self.ctx.model_config.frames_per_block
        return max(0, frames - self.cfg.dmd.context_blocks * n - self.judged_frames(frames)) // n

    def prompt_switch(self, batch: dict, step: int) -> tuple[int, dict] | None:
        """(block, batch with the new prompt) when this rollout switches prompt; None here."""
        return None

    def clip(self, batch: dict, grad: bool, switch: tuple[int, dict] | None = None) -> tuple[dict, tuple[int, ...]]:
        """The whole clip: its real context blocks (``dmd.context_blocks``) then the student's rollout."""
        student, n, ctx_blocks = self.networks["student"], self.ctx.model_config.frames_per_block, self.cfg.dmd.context_blocks
        frames = batch[VIDEO].shape[1]
        exits = self.exit_indices(frames // n - ctx_blocks)
        new = (switch[0], self.cond(student, switch[1])) if switch is not None else None
        roll = self.primed_rollout(student, batch, ctx_blocks, exits, grad=grad, switch=new,
                                   grad_from_block=self.grad_from_block(frames))
        if not ctx_blocks:
            return roll.streams, roll.exit_indices
        cfg = self.ctx.model_config
        real = {k: batch[k][:, : stream_frames(cfg, k, ctx_blocks * n)] for k in roll.streams}
        return {k: torch.cat([real[k], x], dim=1) for k, x in roll.streams.items()}, roll.exit_indices  # [B, F, ...]

    def anchor_loss(self, xs: dict, batch: dict) -> torch.Tensor:
        """``dmd.regression_weight``'s term: the generated blocks of clip ``xs`` (after the real context)
        against the recording's same frames (blocks rolled out without gradient add a constant)."""
        cfg = self.ctx.model_config
        start = self.cfg.dmd.context_blocks * cfg.frames_per_block
        real = sample_of(batch)
        cut = {k: stream_frames(cfg, k, start) for k in xs}
        return rollout_regression_loss({k: x[:, cut[k]:] for k, x in xs.items()}, {k: real[k][:, cut[k]:] for k in xs},
                                       motion_weight=self.cfg.train.motion_weight,
                                       audio_weight=self.cfg.regression.audio_weight)

    def step(self, step: int) -> dict[str, float]:
        ctx, dmd = self.ctx, self.cfg.dmd
        batch = ctx.batch(step)
        switch = self.prompt_switch(batch, step)
        judged = switch[1] if switch is not None else batch  # the conditioning in force for the judged frames
        losses = {}
        if step % dmd.critic_steps == 0:
            xs, exits = self.clip(batch, grad=True, switch=switch)
            loss, extra = self.dmd_loss(*self.dmd_window(xs, judged))
            if dmd.regression_weight > 0:
                anchor = self.anchor_loss(xs, batch)
                loss = loss + dmd.regression_weight * anchor
                extra["regression"] = float(anchor.detach())
            ctx.update("student", loss)
            losses.update(dmd=float(loss.detach()), exit_step=sum(exits) / len(exits), **extra)
        fresh, _ = self.clip(batch, grad=False, switch=switch)  # the critic tracks the current student
        losses["critic"] = self.critic_step(*self.dmd_window(fresh, judged))
        return losses


def last_frames(cfg, xs: dict, batch: dict, w: int, frame_keys: tuple[str, ...]) -> tuple[dict, dict]:
    """The last ``w`` video frames' blocks of streams ``xs`` (which end where the batch's clip ends) and the
    batch cut to the same frames, the streams replaced by them (what the scores judge)."""
    f = batch[VIDEO].shape[1]
    out = dict(batch)
    for k in frame_keys + ("keyboard", "mouse"):
        if k in out and torch.is_tensor(out[k]) and out[k].dim() >= 2:
            r = out[k].shape[1] // f
            out[k] = out[k][:, (f - w) * r :]  # [B, w*r, ...]
    win = {k: x[:, x.shape[1] - stream_frames(cfg, k, w) :] for k, x in xs.items()}  # the last w video frames' blocks
    out.update(win)
    return win, out
