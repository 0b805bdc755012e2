"""The objectives built on the Self-Forcing rollout beyond plain DMD: LongLive-style long tuning, and
rollout regression (a world's recorded continuation as the target, DMD optional). Same contract as
``objectives.py``: what they need comes in a ``StepContext``.
"""
from __future__ import annotations

import torch

from streamgen.training.losses import rollout_regression_loss
from streamgen.training.modalities import VIDEO, sample_of, stream_frames
from streamgen.training.objectives import Objective, SelfForcingObjective, last_frames
from streamgen.training.step_context import StepContext

SWITCH_OFFSET = 1 << 40  # batches of these (never trained on) steps supply the switched-to prompts


class LongTuningObjective(SelfForcingObjective):
    """LongLive-style: the rollout runs past the teacher's window on the rolling caches (sinks included,
    as at inference); DMD judges the last teacher window of frames, under the prompt in force there
    after an optional prompt switch with re-caching. Clips come with ``long.rollout_frames`` frames."""

    @classmethod
    def clip_frames(cls, config, model_config) -> int:
        return config.long.rollout_frames

    def judged_frames(self, frames: int) -> int:
        cfg = self.ctx.model_config
        return min(self.cfg.long.teacher_frames or cfg.window_frames, frames) // cfg.frames_per_block * cfg.frames_per_block

    def prompt_switch(self, batch: dict, step: int) -> tuple[int, dict] | None:
        """With ``long.switch_prob``, a new prompt (the text of another batch) from a block in
        ``[1, first judged block]``; drawn from the shared generator, so every rank switches alike."""
        g = self.ctx.generators["shared"]
        frames = batch[VIDEO].shape[1]
        last = self.grad_from_block(frames)
        u, block = float(torch.rand(1, generator=g)), int(torch.randint(1, max(last, 1) + 1, (1,), generator=g))
        if "text" not in batch or last < 1 or u >= self.cfg.long.switch_prob:
            return None
        new = dict(batch)
        new["text"] = self.ctx.batch(step + SWITCH_OFFSET)["text"]
        return block, new


class RolloutRegressionObjective(Objective):
    """The student primed with the clip's first ``regression.context_blocks`` real blocks (clean, in its
    caches, as ``Session.prime`` writes them) generates the rest of the clip under the clip's own actions
    with Self-Forcing's rollout (one gradient-carrying forward per block, detached refill); every
    generated block regresses onto the real one. With ``regression.dmd_weight > 0`` DMD judges the last
    window of generated frames too (a frozen teacher, a critic updated once per step)."""

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx)
        self.networks["student"] = ctx.build_network(self.cfg.init.student, trainable=True)
        self.lrs["student"] = self.cfg.train.lr
        if self.cfg.regression.dmd_weight > 0:
            self.add_scores()

    def rollout(self, batch: dict, exit_index, grad: bool = True) -> tuple[dict, dict]:
        """(the generated streams after the real context, the clip's real frames at the same places);
        ``exit_index``: one step index for every block, or one per generated block."""
        cfg, ctx_blocks = self.ctx.model_config, self.cfg.regression.context_blocks
        roll = self.primed_rollout(self.networks["student"], batch, ctx_blocks, exit_index, grad=grad)
        real = sample_of(batch)
        return roll.streams, {k: x[:, stream_frames(cfg, k, ctx_blocks * cfg.frames_per_block) :] for k, x in real.items()}

    def step(self, step: int) -> dict[str, float]:
        ctx, reg = self.ctx, self.cfg.regression
        batch = ctx.batch(step)
        n = ctx.model_config.frames_per_block
        exits = self.exit_indices(batch[VIDEO].shape[1] // n - reg.context_blocks)
        generated, target = self.rollout(batch, exits)
        loss = rollout_regression_loss(generated, target, motion_weight=self.cfg.train.motion_weight,
                                       audio_weight=reg.audio_weight, focus_cols=reg.focus_cols,
                                       focus_weight=reg.focus_weight, audio_change_weight=reg.audio_change_weight)
        losses = {"regression": float(loss.detach()), "exit_step": sum(exits) / len(exits)}
        if reg.dmd_weight > 0:
            cfg = ctx.model_config
            w = min(cfg.window_frames, generated[VIDEO].shape[1]) // n * n
            xw, bw = last_frames(cfg, generated, batch, w, self.cfg.data.frame_keys)
            loss_d, extra = self.dmd_loss(xw, bw)
            loss = loss + reg.dmd_weight * loss_d
            losses.update(dmd=float(loss_d.detach()), **extra)
        ctx.update("student", loss)
        losses["loss"] = float(loss.detach())
        if reg.dmd_weight > 0:
            losses["critic"] = self.critic_step(xw, bw)
        return losses
