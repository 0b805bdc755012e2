"""The training loop shared by every recipe: networks, optimisers, EMA, progress, sample videos,
checkpoints and exact resume. What one step does is the recipe's objective (``objectives.py``).

Determinism: model init draws from the global RNG seeded identically on every rank; batches are pure
functions of ``(seed, rank, step)``; the rest draws from two generators saved with each checkpoint
(``shared``: identical on all ranks, ``local``: per rank). Resuming from step N therefore reproduces
the uninterrupted run exactly.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from streamgen.checkpoints.io import load_safetensors, save_safetensors
from streamgen.config import ModelConfig
from streamgen.models.dit import CausalDiT
from streamgen.pipeline import model_config
from streamgen.samplers import warped_timesteps
from streamgen.training.config import RunConfig
from streamgen.training.distributed import DistInfo, average_gradients, barrier, pick_device, seed_everything, wrap
from streamgen.training.ema import EMA
from streamgen.training.recipes import OBJECTIVES
from streamgen.training.schedule import warmup_cosine
from streamgen.training.seeds import local_seed, role_seed, shared_seed
from streamgen.training.sources import make_source
from streamgen.training.step_context import StepContext
from streamgen.training.state import (
    load_training_checkpoint, model_state, resolve_checkpoint, resolve_weights, save_training_checkpoint,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
COMPILED_METHODS = ("forward", "forward_teacher_forcing")  # whole-clip forwards (train.compile)


def model_config_for(cfg: RunConfig) -> ModelConfig:
    """The architecture: a preset, a shipped model's or a checkpoint folder's config, with ``model_overrides`` on top."""
    return model_config(cfg.model, cfg.model_overrides)


def lr_factor(t, step: int) -> float:
    """The multiplier of the base learning rate at ``step`` (0-based) under ``TrainConfig`` ``t``."""
    return warmup_cosine(step, warmup=t.warmup, steps=t.steps, floor=t.min_lr_ratio, cosine=t.lr_schedule == "cosine")


class Trainer:
    def __init__(self, config: RunConfig, out_dir: str | Path, *, dist: DistInfo | None = None, progress: bool = True) -> None:
        self.config, self.out_dir = config, Path(out_dir)
        self.dist = dist or DistInfo(device=pick_device(config.train.device))
        self.dist.strategy = config.parallel
        # Weights, optimiser states and EMA stay fp32; bfloat16 is the autocast compute dtype.
        self.device, self.dtype = self.dist.device, torch.float32
        self.compute_dtype = DTYPES[config.train.dtype]
        self.progress = progress and self.dist.is_main
        self.model_config = model_config_for(config)
        self.timesteps = warped_timesteps(self.model_config.denoising_steps, self.model_config.shift)
        t = config.train
        seed_everything(t.seed)
        self.generators = {
            "shared": torch.Generator().manual_seed(shared_seed(t.seed)),
            "local": torch.Generator().manual_seed(local_seed(t.seed, self.dist.rank)),
        }
        n = self.model_config.frames_per_block
        objective_cls = OBJECTIVES[config.recipe]
        self.wake_random_init = objective_cls.wake_random_init
        frames = objective_cls.clip_frames(config, self.model_config)
        if frames % n:
            raise ValueError(f"clips of {frames} latent frames are not a multiple of frames_per_block={n}")
        self.source = make_source(config.data.source, self.model_config, num_frames=frames, batch=t.batch, seed=t.seed, rank=self.dist.rank)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.dist)
        self.objective = objective_cls(StepContext(
            config=config, model_config=self.model_config, timesteps=self.timesteps, generators=self.generators,
            rank=self.dist.rank, device=self.device, dtype=self.dtype, batch=self.batch, update=self.update,
            cached=self.cached, build_network=self.build_network))
        nets = self.objective.networks
        self.trainable = {k: m for k, m in nets.items() if k not in self.objective.frozen}
        opt_cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        self.optimizers = {
            k: opt_cls(m.parameters(), lr=self.objective.lrs[k], betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)
            for k, m in self.trainable.items()
        }
        self.ema = EMA(nets["student"], t.ema_decay, t.ema_start) if t.ema_decay > 0 else None
        self.step = 0
        self.last_losses: dict[str, float] = {}

    # ----- what the objectives get passed in (StepContext) ----------------------------------------
    def build_network(self, init: str | None, *, trainable: bool, role: str = "student") -> torch.nn.Module:
        """A ``CausalDiT`` from a checkpoint folder, or randomly initialised from the run's seed."""
        if init is None:
            torch.manual_seed(role_seed(self.config.train.seed, role))
            model = CausalDiT(self.model_config)
            if self.wake_random_init:
                # Smoke runs of distillation recipes: a zero head would make every score zero.
                model.wake_outputs(actions=False)
        else:
            from streamgen.checkpoints.folders import load_checkpoint_dir

            init = str(resolve_weights(init))
            loaded_cfg, model = load_checkpoint_dir(init, device="cpu")
            if (loaded_cfg.dim, loaded_cfg.num_layers, loaded_cfg.in_channels) != (self.model_config.dim, self.model_config.num_layers, self.model_config.in_channels):
                raise ValueError(f"checkpoint {init} has dim={loaded_cfg.dim}, layers={loaded_cfg.num_layers}, "
                                 f"channels={loaded_cfg.in_channels}; the run's model is {self.model_config.name!r}")
            model.config = self.model_config  # streaming settings of this run (window, steps) apply
        model = model.to(self.device, self.dtype)
        if not trainable:
            model.requires_grad_(False).eval()
        model = wrap(model, self.dist, trainable=trainable)
        if trainable and self.config.train.compile:
            for method in COMPILED_METHODS:  # instance attributes shadow the class's methods
                setattr(model, method, torch.compile(getattr(model, method)))
        return model

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in self.source.batch_at(step).items():
            if torch.is_tensor(v):
                v = v.to(self.device)
                v = v.to(self.dtype) if v.is_floating_point() else v
            out[k] = v
        return out

    def cached(self, name: str, make) -> dict[str, torch.Tensor]:
        """Tensors computed once per run (e.g. ODE pairs), kept under the run folder."""
        path = self.out_dir / f"{name}.safetensors"
        if path.is_file():
            return load_safetensors(path)
        data = make()
        save_safetensors(data, path)
        return data

    def update(self, name: str, loss: torch.Tensor) -> None:
        """Backward, average gradients over ranks, clip, optimiser step, EMA of the student."""
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {self.step}: {name} loss is {float(loss)}")
        opt, params = self.optimizers[name], list(self.trainable[name].parameters())
        factor = lr_factor(self.config.train, self.step)
        for group in opt.param_groups:
            group["lr"] = self.objective.lrs[name] * factor
        opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=False):
            loss.backward()
        average_gradients(params, self.dist)
        if self.config.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.config.train.grad_clip)
        opt.step()
        if name == "student" and self.ema is not None:
            self.ema.update(self.step)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32)

    def barrier(self) -> None:
        barrier(self.dist)

    # ----- loop ----------------------------------------------------------------------------------
    def train(self, until: int | None = None) -> dict[str, float]:
        """Run to ``until`` (default: ``train.steps``); checkpoint on the interval and at the end."""
        t = self.config.train
        end = min(until or t.steps, t.steps)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=t.steps, initial=self.step, desc=self.config.recipe, unit="step", file=sys.stderr, dynamic_ncols=True)
        start_step, t0 = self.step, time.perf_counter()
        while self.step < end:
            with self.autocast():
                losses = self.objective.step(self.step)
            self.step += 1
            self.last_losses.update(losses)
            losses = self.last_losses
            elapsed = time.perf_counter() - t0
            done = self.step - start_step
            rate = done * t.batch * self.dist.world / max(elapsed, 1e-9)
            eta = (t.steps - self.step) * elapsed / max(done, 1)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items() if isinstance(v, float)}, refresh=False)
            if self.dist.is_main and (self.step % max(t.log_every, 1) == 0 or self.step == end):
                self._log(dict(step=self.step, samples_per_s=rate, eta_s=eta, seconds=round(elapsed, 3), **losses), bar)
            if t.sample_every and self.step % t.sample_every == 0:
                self.write_sample()
            out_of_time = bool(t.time_limit_s) and self._agree(elapsed >= t.time_limit_s) and self.step < end
            if (t.checkpoint_every and self.step % t.checkpoint_every == 0) or self.step == t.steps or out_of_time:
                self.save()
            if out_of_time:
                if self.dist.is_main:
                    self._log(dict(step=self.step, stopped="time_limit_s", seconds=elapsed, samples_per_s=rate), bar)
                break
        if bar is not None:
            bar.close()
        return self.last_losses

    def _agree(self, flag: bool) -> bool:
        """True on every rank when it is true on any (ranks' clocks differ; checkpoints are collective)."""
        if not self.dist.enabled:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def _log(self, record: dict, bar) -> None:
        with open(self.out_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        line = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
        (bar.write if bar is not None else lambda s: print(s, file=sys.stderr))(line)

    # ----- samples and checkpoints -------------------------------------------------------------
    def write_sample(self) -> Path | None:
        """An mp4 of the EMA (or current) student, on rank 0 (the weights gathering is collective)."""
        from streamgen.training.sampling import write_sample

        state = self.ema.state() if self.ema is not None else model_state(self.objective.networks["student"])
        path = None
        if self.dist.is_main:
            folder = self.out_dir / "samples"
            folder.mkdir(parents=True, exist_ok=True)
            text = self.source.batch_at(0).get("text")
            path = write_sample(folder / f"step_{self.step:08d}.mp4", self.model_config, {k: v.float() for k, v in state.items()},
                                causal=self.objective.causal, blocks=self.config.train.sample_blocks,
                                text=None if text is None else text[:1].float(), device=self.device,
                                decoder_from=self.config.train.sample_decoder)
        self.barrier()
        return path

    def save(self) -> Path:
        if self.dist.is_main:
            (self.out_dir / "run_config.json").write_text(self.config.to_json())
        return save_training_checkpoint(self, self.out_dir / "checkpoints")

    def resume(self, path: str | Path) -> int:
        folder = resolve_checkpoint(path)
        load_training_checkpoint(self, folder)
        return self.step
