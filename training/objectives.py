"""One objective per recipe: which networks it trains and what one training step does.

Steps call ``trainer.update(name, loss)`` (backward, gradient averaging, clipping, optimiser step, EMA)
and return their losses as floats. Randomness comes from the trainer's generators only: ``shared``
(identical on every rank: the exit step of the rollout) and ``local`` (per rank: noise, timesteps).
"""
from __future__ import annotations

import torch

from streamgen.models.masks import expand_to_tokens, teacher_forcing_mask
from streamgen.samplers import add_noise
from streamgen.training.conditioning import Cond, drop_text, frame_timesteps, make_cond, velocity
from streamgen.training.losses import critic_loss, dmd_generator_loss, flow_matching_loss, sample_timesteps
from streamgen.training.ode import ode_regression_loss, teacher_trajectory
from streamgen.training.rollout import sample_exit_index, self_forcing_rollout


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


class TeacherObjective(Objective):
    """Bidirectional flow matching: one timestep per clip, text dropped with ``cfg_dropout``."""

    causal = False

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.networks["student"] = trainer.build_network(self.cfg.init.student, trainable=True)
        self.lrs["student"] = self.cfg.train.lr

    def step(self, step: int) -> dict[str, float]:
        tr, model = self.trainer, self.networks["student"]
        batch = drop_text(tr.batch(step), self.cfg.data.cfg_dropout, tr.generators["local"])
        x0 = batch["latents"]
        b, f = x0.shape[:2]
        t = frame_timesteps(self._t(b), b, f, x0.device)  # [B, F]
        noise = self._noise(x0)
        loss = flow_matching_loss(velocity(model, add_noise(x0, noise, t), t, self.cond(model, batch)), x0, noise)
        tr.update("student", loss)
        return {"loss": float(loss.detach())}


class ARTeacherObjective(TeacherObjective):
    """Teacher forcing: ``[clean | noisy]`` under the teacher-forcing mask, a random timestep per block."""

    causal = True

    def step(self, step: int) -> dict[str, float]:
        tr, model = self.trainer, self.networks["student"]
        cfg = tr.model_config
        batch = drop_text(tr.batch(step), self.cfg.data.cfg_dropout, tr.generators["local"])
        x0 = batch["latents"]
        b, f = x0.shape[:2]
        n = cfg.frames_per_block
        t = self._t(b * (f // n)).view(b, f // n).repeat_interleave(n, dim=1).to(x0.device)  # [B, F]
        noise = self._noise(x0)
        seq = torch.cat([x0, add_noise(x0, noise, t)], dim=1)  # [B, 2F, C, H, W]
        tt = torch.cat([torch.full_like(t, cfg.context_noise), t], dim=1)  # [B, 2F]
        mask = expand_to_tokens(teacher_forcing_mask(f, n), cfg.tokens_per_frame).to(x0.device)  # [2F*T, 2F*T]
        cond = self.cond(model, _doubled(batch, self.cfg.data.frame_keys))
        out = velocity(model, seq, tt, cond, positions=tuple(range(f)) * 2, mask=mask)[:, f:]  # [B, F, C, H, W]
        loss = flow_matching_loss(out, x0, noise)
        tr.update("student", loss)
        return {"loss": float(loss.detach())}


def _doubled(batch: dict, frame_keys) -> dict:
    """Per-frame conditioning repeated for the clean and the noisy half of a teacher-forcing sequence."""
    out = dict(batch)
    for k in frame_keys:
        if k in out and torch.is_tensor(out[k]) and out[k].dim() >= 2:
            out[k] = torch.cat([out[k], out[k]], dim=1)  # [B, 2*F*r, ...]
    out["latents"] = torch.cat([batch["latents"]] * 2, dim=1)  # only its frame count is read
    return out


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
        tr, teacher, ode = self.trainer, self.networks["teacher"], self.cfg.ode
        g = torch.Generator().manual_seed(self.cfg.train.seed * 7919 + tr.dist.rank)
        rows: list[dict] = []
        i = 0
        while sum(r["latents"].shape[0] for r in rows) < ode.num_pairs:
            batch = tr.batch(-1 - i)
            i += 1
            noise = torch.randn(batch["latents"].shape, generator=g).to(batch["latents"])
            traj = teacher_trajectory(
                teacher, noise, self.cond(teacher, batch), self.cond(teacher, batch, uncond=True),
                student_steps=tr.timesteps, substeps=ode.substeps, scale=ode.guidance_scale,
                shift=tr.model_config.shift, causal=ode.teacher_kind == "causal",
            )  # [S+1, B, F, C, H, W]
            row = {k: v for k, v in batch.items() if k != "latents"}
            row["trajectory"] = traj.transpose(0, 1).contiguous()  # [B, S+1, F, C, H, W]
            row["latents"] = traj[-1]
            rows.append(row)
        return {k: torch.cat([r[k] for r in rows])[: ode.num_pairs].cpu() for k in rows[0]}

    def step(self, step: int) -> dict[str, float]:
        tr, model = self.trainer, self.networks["student"]
        pick = torch.randint(self.pool["latents"].shape[0], (self.cfg.train.batch,), generator=tr.generators["local"])
        batch = {k: v[pick].to(tr.device) for k, v in self.pool.items()}
        traj = batch.pop("trajectory").transpose(0, 1).to(tr.dtype)  # [S+1, B, F, C, H, W]
        loss = ode_regression_loss(model, traj, self.cond(model, batch), student_steps=tr.timesteps, generator=tr.generators["local"])
        tr.update("student", loss)
        return {"loss": float(loss.detach())}


class SelfForcingObjective(Objective):
    """Self-Forcing DMD: the student's own rollout, frozen teacher (real score, CFG), trainable critic."""

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        init = self.cfg.init
        self.networks["student"] = trainer.build_network(init.student, trainable=True)
        self.networks["critic"] = trainer.build_network(init.critic or init.teacher, trainable=True, role="critic")
        self.networks["teacher"] = trainer.build_network(init.teacher, trainable=False, role="teacher")
        self.frozen.add("teacher")
        self.lrs = {"student": self.cfg.train.lr, "critic": self.cfg.dmd.critic_lr}

    def rollout_frames(self, batch) -> int:
        return batch["latents"].shape[1]

    def dmd_window(self, x: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        """The frames the scores judge (all of them here; long tuning keeps the teacher's window)."""
        return x, batch

    def step(self, step: int) -> dict[str, float]:
        tr, dmd = self.trainer, self.cfg.dmd
        student, critic, teacher = (self.networks[k] for k in ("student", "critic", "teacher"))
        batch = tr.batch(step)
        b, frames = batch["latents"].shape[0], self.rollout_frames(batch)
        kw = dict(generator=tr.generators["local"], shift=dmd.shift, min_t=dmd.min_t, max_t=dmd.max_t)
        losses, x = {}, None
        if step % dmd.critic_steps == 0:
            exit_index = sample_exit_index(len(tr.timesteps), tr.generators["shared"], dmd.last_step_only)
            roll = self_forcing_rollout(student, self.cond(student, batch), batch=b, num_frames=frames, timesteps=tr.timesteps,
                                        exit_index=exit_index, noise_generator=tr.generators["local"])
            xw, bw = self.dmd_window(roll.latents, batch)
            with torch.no_grad():
                c_real, u_real, c_fake = self.cond(teacher, bw), self.cond(teacher, bw, uncond=True), self.cond(critic, bw)
            loss, extra = dmd_generator_loss(xw, teacher, critic, c_real, u_real, c_fake, scale=dmd.guidance_scale, **kw)
            tr.update("student", loss)
            losses.update(dmd=float(loss.detach()), exit_step=exit_index, **extra)
            x = roll.latents.detach() if dmd.reuse_rollout else None
        if x is None:
            exit_index = sample_exit_index(len(tr.timesteps), tr.generators["shared"], dmd.last_step_only)
            with torch.no_grad():
                x = self_forcing_rollout(student, self.cond(student, batch), batch=b, num_frames=frames, timesteps=tr.timesteps,
                                         exit_index=exit_index, noise_generator=tr.generators["local"], grad=False).latents
        xw, bw = self.dmd_window(x, batch)
        loss_c = critic_loss(xw, critic, self.cond(critic, bw), **kw)
        tr.update("critic", loss_c)
        losses["critic"] = float(loss_c.detach())
        return losses


class LongTuningObjective(SelfForcingObjective):
    """LongLive-style: the rollout runs past the teacher's window on the rolling cache (sinks included,
    as at inference); DMD judges the last teacher window of frames. Clips come with
    ``long.rollout_frames`` frames (the trainer asks the source for that many)."""

    def dmd_window(self, x: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        f = x.shape[1]
        w = min(self.cfg.long.teacher_frames or self.trainer.model_config.window_frames, f)
        out = dict(batch)
        for k in self.cfg.data.frame_keys:
            if k in out and torch.is_tensor(out[k]) and out[k].dim() >= 2:
                r = out[k].shape[1] // f
                out[k] = out[k][:, (f - w) * r :]  # [B, w*r, ...]
        out["latents"] = x[:, -w:]
        return x[:, -w:], out  # [B, w, C, H, W]


OBJECTIVES = {
    "teacher": TeacherObjective,
    "ar_teacher": ARTeacherObjective,
    "ode_init": ODEObjective,
    "self_forcing": SelfForcingObjective,
    "long_tuning": LongTuningObjective,
}
