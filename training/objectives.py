"""One objective per recipe: which networks it trains and what one training step does.

Steps call ``trainer.update(name, loss)`` (backward, gradient averaging, clipping, optimiser step, EMA)
and return their losses as floats. Samples are dicts of generated streams (video, and audio for joint
models; ``modalities.py``). Randomness comes from the trainer's generators only: ``shared``
(identical on every rank: the exit step of the rollout) and ``local`` (per rank: noise, timesteps).
"""
from __future__ import annotations

import torch

from streamgen.samplers import add_noise
from streamgen.training.conditioning import Cond, drop_text, frame_timesteps, make_cond
from streamgen.training.losses import (
    critic_loss, dmd_generator_loss, rollout_regression_loss, sample_timesteps, streams_flow_loss,
)
from streamgen.training.modalities import (
    VIDEO, block_frames, new_caches, predict, predict_teacher_forcing, sample_of, stream_frames, stream_shape, stream_t,
    streams, teacher_forcing_token_mask,
)
from streamgen.training.ode import ode_regression_loss, teacher_trajectory
from streamgen.training.seeds import ode_pool_seed
from streamgen.training.rollout import TrainingKVCache, recache, sample_exit_index, self_forcing_rollout


class Objective:
    causal = True  # the trained network streams block by block (samples go through a Session)

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.cfg = trainer.config
        self.networks: dict[str, torch.nn.Module] = {}  # name -> module; frozen ones have no optimiser
        self.frozen: set[str] = set()
        self.lrs: dict[str, float] = {}

    def _noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.trainer.generators["local"], dtype=like.dtype).to(like.device)

    def _t(self, n: int) -> torch.Tensor:
        return sample_timesteps(n, self.trainer.generators["local"], shift=self.trainer.model_config.shift)

    def cond(self, model, batch, **kw) -> Cond:
        return make_cond(model, batch, frame_keys=self.cfg.data.frame_keys, **kw)

    def add_scores(self) -> None:
        """The DMD scores: a frozen teacher (``init.teacher``, the real score) and a trainable critic (the fake
        score, from ``init.critic`` or the teacher) at ``dmd.critic_lr``."""
        init, tr = self.cfg.init, self.trainer
        self.networks["critic"] = tr.build_network(init.critic or init.teacher, trainable=True, role="critic")
        self.networks["teacher"] = tr.build_network(init.teacher, trainable=False, role="teacher")
        self.frozen.add("teacher")
        self.lrs["critic"] = self.cfg.dmd.critic_lr

    def _score_kw(self) -> dict:
        dmd = self.cfg.dmd
        return dict(generator=self.trainer.generators["local"], shift=dmd.shift, min_t=dmd.min_t, max_t=dmd.max_t)

    def dmd_loss(self, xs: dict, batch: dict) -> tuple[torch.Tensor, dict]:
        """DMD generator loss of generated streams ``xs`` judged under ``batch``'s conditioning."""
        critic, teacher = self.networks["critic"], self.networks["teacher"]
        with torch.no_grad():
            c_real, u_real, c_fake = self.cond(teacher, batch), self.cond(teacher, batch, uncond=True), self.cond(critic, batch)
        return dmd_generator_loss(xs, teacher, critic, c_real, u_real, c_fake, scale=self.cfg.dmd.guidance_scale,
                                  **self._score_kw())

    def critic_step(self, xs: dict, batch: dict) -> float:
        """One critic update on (detached) generated streams; returns its loss."""
        critic = self.networks["critic"]
        loss = critic_loss({k: x.detach() for k, x in xs.items()}, critic, self.cond(critic, batch), **self._score_kw())
        self.trainer.update("critic", loss)
        return float(loss.detach())


class TeacherObjective(Objective):
    """Bidirectional flow matching: one timestep per clip, text dropped with ``cfg_dropout``."""

    causal = False

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.networks["student"] = trainer.build_network(self.cfg.init.student, trainable=True)
        self.lrs["student"] = self.cfg.train.lr

    def _noised(self, x0: dict, t: torch.Tensor) -> tuple[dict, dict]:
        noise, ts = {k: self._noise(x) for k, x in x0.items()}, stream_t(self.trainer.model_config, t)
        return {k: add_noise(x0[k], noise[k], ts[k]) for k in x0}, noise

    def step(self, step: int) -> dict[str, float]:
        tr, model = self.trainer, self.networks["student"]
        batch = drop_text(tr.batch(step), self.cfg.data.cfg_dropout, tr.generators["local"])
        x0 = sample_of(batch)
        b, f = x0[VIDEO].shape[:2]
        t = frame_timesteps(self._t(b), b, f, x0[VIDEO].device)  # [B, F]
        x_t, noise = self._noised(x0, t)
        loss = streams_flow_loss(predict(model, x_t, t, self.cond(model, batch)), x0, noise,
                                 motion_weight=self.cfg.train.motion_weight)
        tr.update("student", loss)
        return {"loss": float(loss.detach())}


class ARTeacherObjective(TeacherObjective):
    """Teacher forcing: ``[clean | noisy]`` under the teacher-forcing mask, a random timestep per block."""

    causal = True

    def step(self, step: int) -> dict[str, float]:
        tr, model = self.trainer, self.networks["student"]
        cfg = tr.model_config
        batch = drop_text(tr.batch(step), self.cfg.data.cfg_dropout, tr.generators["local"])
        x0 = sample_of(batch)
        b, f = x0[VIDEO].shape[:2]
        n = cfg.frames_per_block
        t = self._t(b * (f // n)).view(b, f // n).repeat_interleave(n, dim=1).to(x0[VIDEO].device)  # [B, F]
        noisy, noise = self._noised(x0, t)
        mask = teacher_forcing_token_mask(cfg, f, t.device)
        out = predict_teacher_forcing(model, x0, noisy, t, self.cond(model, batch), mask)
        loss = streams_flow_loss(out, x0, noise, motion_weight=self.cfg.train.motion_weight)
        tr.update("student", loss)
        return {"loss": float(loss.detach())}


class ODEObjective(Objective):
    """Regression of the causal student onto a pool of teacher trajectories (computed once)."""

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        init = self.cfg.init
        self.networks["student"] = trainer.build_network(init.student, trainable=True)
        self.networks["teacher"] = trainer.build_network(init.teacher, trainable=False, role="teacher")
        self.frozen.add("teacher")
        self.lrs["student"] = self.cfg.train.lr
        self.pool = trainer.cached(f"ode_pairs_rank{trainer.dist.rank}", self._make_pool)

    @torch.no_grad()
    def _make_pool(self) -> dict[str, torch.Tensor]:
        tr, teacher, ode, cfg = self.trainer, self.networks["teacher"], self.cfg.ode, self.trainer.model_config
        g = torch.Generator().manual_seed(ode_pool_seed(self.cfg.train.seed, tr.dist.rank))
        rows: list[dict] = []
        i = 0
        while sum(r[VIDEO].shape[0] for r in rows) < ode.num_pairs:
            batch = tr.batch(-1 - i)
            i += 1
            b, f = batch[VIDEO].shape[:2]
            noise = {k: torch.randn(stream_shape(cfg, k, b, f), generator=g).to(batch[VIDEO]) for k in streams(cfg)}
            traj = teacher_trajectory(
                teacher, noise, self.cond(teacher, batch), self.cond(teacher, batch, uncond=True),
                student_steps=tr.timesteps, substeps=ode.substeps, scale=ode.guidance_scale,
                shift=cfg.shift, causal=ode.teacher_kind == "causal",
            )  # per stream [S+1, B, F, ...]
            row = {k: v for k, v in batch.items() if k not in noise}
            for k, v in traj.items():
                row[f"trajectory:{k}"] = v.transpose(0, 1).contiguous()  # [B, S+1, F, ...]
                row[k] = v[-1]
            rows.append(row)
        return {k: torch.cat([r[k] for r in rows])[: ode.num_pairs].cpu() for k in rows[0]}

    def step(self, step: int) -> dict[str, float]:
        tr, model = self.trainer, self.networks["student"]
        pick = torch.randint(self.pool[VIDEO].shape[0], (self.cfg.train.batch,), generator=tr.generators["local"])
        batch = {k: v[pick].to(tr.device) for k, v in self.pool.items()}
        traj = {k.split(":", 1)[1]: batch.pop(k).transpose(0, 1).to(tr.dtype) for k in list(batch) if k.startswith("trajectory:")}
        loss = ode_regression_loss(model, traj, self.cond(model, batch), student_steps=tr.timesteps, generator=tr.generators["local"])
        tr.update("student", loss)
        return {"loss": float(loss.detach())}


class SelfForcingObjective(Objective):
    """Self-Forcing DMD: the student's own rollout, frozen teacher (real score, CFG), trainable critic."""

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.networks["student"] = trainer.build_network(self.cfg.init.student, trainable=True)
        self.lrs["student"] = self.cfg.train.lr
        self.add_scores()

    def dmd_window(self, xs: dict, batch: dict) -> tuple[dict, dict]:
        """The frames the scores judge (all of them here; long tuning keeps the teacher's window)."""
        return xs, batch

    def grad_from_block(self, frames: int) -> int:
        """The first block whose output a loss looks at (earlier blocks roll out without grad)."""
        return 0

    def prompt_switch(self, batch: dict, step: int) -> tuple[int, dict] | None:
        """(block, batch with the new prompt) when this rollout switches prompt; None here."""
        return None

    def _rollout(self, batch: dict, grad: bool, switch: tuple[int, dict] | None = None):
        tr, dmd, student = self.trainer, self.cfg.dmd, self.networks["student"]
        b, frames = batch[VIDEO].shape[:2]
        exit_index = sample_exit_index(len(tr.timesteps), tr.generators["shared"], dmd.last_step_only)
        with torch.set_grad_enabled(grad):
            new = (switch[0], self.cond(student, switch[1])) if switch is not None else None
            return self_forcing_rollout(student, self.cond(student, batch), batch=b, num_frames=frames, timesteps=tr.timesteps,
                                        exit_index=exit_index, noise_generator=tr.generators["local"], grad=grad,
                                        grad_from_block=self.grad_from_block(frames), switch=new)

    def step(self, step: int) -> dict[str, float]:
        tr, dmd = self.trainer, self.cfg.dmd
        batch = tr.batch(step)
        switch = self.prompt_switch(batch, step)
        judged = switch[1] if switch is not None else batch  # the conditioning in force for the judged frames
        losses, xs = {}, None
        if step % dmd.critic_steps == 0:
            roll = self._rollout(batch, grad=True, switch=switch)
            loss, extra = self.dmd_loss(*self.dmd_window(roll.streams, judged))
            tr.update("student", loss)
            losses.update(dmd=float(loss.detach()), exit_step=roll.exit_index, **extra)
            xs = {k: v.detach() for k, v in roll.streams.items()} if dmd.reuse_rollout else None
        if xs is None:
            xs = self._rollout(batch, grad=False, switch=switch).streams
        losses["critic"] = self.critic_step(*self.dmd_window(xs, judged))
        return losses


SWITCH_OFFSET = 1 << 40  # batches of these (never trained on) steps supply the switched-to prompts


class LongTuningObjective(SelfForcingObjective):
    """LongLive-style: the rollout runs past the teacher's window on the rolling caches (sinks included,
    as at inference); DMD judges the last teacher window of frames, under the prompt in force there
    after an optional prompt switch with re-caching. Clips come with ``long.rollout_frames`` frames (the
    trainer asks the source for that many)."""

    def _window(self, f: int) -> int:
        cfg = self.trainer.model_config
        return min(self.cfg.long.teacher_frames or cfg.window_frames, f) // cfg.frames_per_block * cfg.frames_per_block

    def grad_from_block(self, frames: int) -> int:
        return (frames - self._window(frames)) // self.trainer.model_config.frames_per_block

    def prompt_switch(self, batch: dict, step: int) -> tuple[int, dict] | None:
        """With ``long.switch_prob``, a new prompt (the text of another batch) from a block in
        ``[1, first judged block]``; drawn from the shared generator, so every rank switches alike."""
        g = self.trainer.generators["shared"]
        frames = batch[VIDEO].shape[1]
        last = self.grad_from_block(frames)
        u, block = float(torch.rand(1, generator=g)), int(torch.randint(1, max(last, 1) + 1, (1,), generator=g))
        if "text" not in batch or last < 1 or u >= self.cfg.long.switch_prob:
            return None
        new = dict(batch)
        new["text"] = self.trainer.batch(step + SWITCH_OFFSET)["text"]
        return block, new

    def dmd_window(self, xs: dict, batch: dict) -> tuple[dict, dict]:
        return last_frames(self.trainer.model_config, xs, batch, self._window(xs[VIDEO].shape[1]), self.cfg.data.frame_keys)


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


class RolloutRegressionObjective(Objective):
    """The student primed with the clip's first ``regression.context_blocks`` real blocks (clean, in its
    caches, as ``Session.prime`` writes them) generates the rest of the clip under the clip's own actions
    with Self-Forcing's rollout (one gradient-carrying forward per block at a shared random step, detached
    refill); every generated block regresses onto the real one. With ``regression.dmd_weight > 0`` DMD
    judges the last window of generated frames too (a frozen teacher, a critic updated once per step)."""

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.networks["student"] = trainer.build_network(self.cfg.init.student, trainable=True)
        self.lrs["student"] = self.cfg.train.lr
        if self.cfg.regression.dmd_weight > 0:
            self.add_scores()

    def rollout(self, batch: dict, exit_index: int, grad: bool = True) -> tuple[dict, dict]:
        """(the generated streams after the real context, the clip's real frames at the same places)."""
        tr, reg, student = self.trainer, self.cfg.regression, self.networks["student"]
        cfg = tr.model_config
        real = sample_of(batch)
        b, f = real[VIDEO].shape[:2]
        n, ctx = cfg.frames_per_block, reg.context_blocks
        if ctx >= f // n:
            raise ValueError(f"regression.context_blocks={ctx} leaves no block to generate in clips of {f // n} blocks")
        with torch.set_grad_enabled(grad):
            cond = self.cond(student, batch)
            caches = new_caches(student, b, TrainingKVCache)
            recache(student, caches, cond, [{k: x[:, i * block_frames(cfg, k) : (i + 1) * block_frames(cfg, k)]
                                             for k, x in real.items()} for i in range(ctx)])
            roll = self_forcing_rollout(student, cond, batch=b, num_frames=f - ctx * n, timesteps=tr.timesteps,
                                        exit_index=exit_index, noise_generator=tr.generators["local"], grad=grad,
                                        caches=caches, start_frame=ctx * n)
        return roll.streams, {k: x[:, stream_frames(cfg, k, ctx * n) :] for k, x in real.items()}

    def step(self, step: int) -> dict[str, float]:
        tr, reg, dmd = self.trainer, self.cfg.regression, self.cfg.dmd
        batch = tr.batch(step)
        exit_index = sample_exit_index(len(tr.timesteps), tr.generators["shared"], dmd.last_step_only)
        generated, target = self.rollout(batch, exit_index)
        loss = rollout_regression_loss(generated, target, motion_weight=self.cfg.train.motion_weight,
                                       audio_weight=reg.audio_weight, focus_cols=reg.focus_cols,
                                       focus_weight=reg.focus_weight, audio_change_weight=reg.audio_change_weight)
        losses = {"regression": float(loss.detach()), "exit_step": exit_index}
        if reg.dmd_weight > 0:
            cfg = tr.model_config
            n = cfg.frames_per_block
            w = min(cfg.window_frames, generated[VIDEO].shape[1]) // n * n
            xw, bw = last_frames(cfg, generated, batch, w, self.cfg.data.frame_keys)
            loss_d, extra = self.dmd_loss(xw, bw)
            loss = loss + reg.dmd_weight * loss_d
            losses.update(dmd=float(loss_d.detach()), **extra)
        tr.update("student", loss)
        losses["loss"] = float(loss.detach())
        if reg.dmd_weight > 0:
            losses["critic"] = self.critic_step(xw, bw)
        return losses


OBJECTIVES = {
    "teacher": TeacherObjective,
    "ar_teacher": ARTeacherObjective,
    "ode_init": ODEObjective,
    "self_forcing": SelfForcingObjective,
    "long_tuning": LongTuningObjective,
    "rollout_regression": RolloutRegressionObjective,
}
