"""Train the avatar's video autoencoder on the synthesised faces (video only: the avatar's sound is its input).

``python -m streamgen.training.avatar_ae --data data/avatar --out runs/avatar/ae --steps 3000``

The same model (``VideoAutoencoder``: 64x64 -> 4 x 16 x 16 per 2 frames) and the same loss, schedule,
crops, checkpoints and export as the Atari world's (``training/autoencoder.py``: ``video_loss`` with its
motion and object weights, which here weigh the mouth, the eyes and the face against the flat
background); only the clips come from the avatar set. Writes ``log.jsonl``, ``ckpt_latest.safetensors``
(resumed from on restart) and at the end ``video_ae.safetensors`` with the latent statistics.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from streamgen.decoders.video_autoencoder import VideoAEConfig, VideoAutoencoder, frames_to_unit

from .autoencoder import AETrainConfig, crop_clips, load_checkpoint, lr_at, save_checkpoint, video_loss
from .data.avatar import load_clip
from .seeds import autoencoder_step_seed


class AvatarFrames:
    """Every clip's frames of one split in memory (uint8 ``[T, 3, 64, 64]`` each), and the reference images."""

    def __init__(self, root: str | Path, split: str = "train", clip_steps: int = 4) -> None:
        files = sorted((Path(root) / split).glob("clip_*.npz"))
        if not files:
            raise FileNotFoundError(f"no clip_*.npz in {Path(root) / split}")
        clips = [load_clip(f) for f in files]
        self.frames = [np.ascontiguousarray(c["frames"].transpose(0, 3, 1, 2)) for c in clips]  # [T, 3, H, W]
        self.clip_steps = clip_steps
        self.starts = np.array([(i, s) for i, f in enumerate(self.frames) for s in range(len(f) - clip_steps + 1)])

    def sample(self, batch: int, rng: np.random.Generator) -> torch.Tensor:
        """uint8 ``[B, L, 3, H, W]``."""
        picks = self.starts[rng.integers(0, len(self.starts), size=batch)]
        return torch.from_numpy(np.stack([self.frames[i][s : s + self.clip_steps] for i, s in picks]))


def train(cfg: AETrainConfig, progress: bool = True) -> VideoAutoencoder:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = AvatarFrames(cfg.data, "train", cfg.clip_steps)
    torch.manual_seed(cfg.seed)
    model = VideoAutoencoder(VideoAEConfig(**cfg.video))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    ckpt = out / "ckpt_latest.safetensors"
    step = load_checkpoint(ckpt, {"video": model}, {"video": opt}) if ckpt.exists() else 0
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    t0, s0 = time.time(), step
    with open(out / "log.jsonl", "a") as log:
        while step < cfg.steps:
            rng = np.random.default_rng([cfg.seed, step])
            gen = torch.Generator().manual_seed(autoencoder_step_seed(cfg.seed, step))
            frames = crop_clips(clips.sample(cfg.batch, rng), cfg.train_crop, model.cfg.spatial, cfg.motion_crop, rng)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            loss, info = video_loss(model, frames, cfg, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            loss = float(loss.detach())
            if not math.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {step}: {info}")
            if step % cfg.log_every == 0 or step == cfg.steps:
                dt = time.time() - t0
                rec = {"step": step, "loss": round(loss, 6), **info, "seconds": round(dt, 1),
                       "eta_s": round((cfg.steps - step) * dt / max(step - s0, 1))}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if progress:
                    print(json.dumps(rec), flush=True)
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save_checkpoint(ckpt, step, cfg, {"video": model}, {"video": opt})
    export(model, clips, cfg)
    return model


@torch.no_grad()
def export(model: VideoAutoencoder, clips: AvatarFrames, cfg: AETrainConfig) -> None:
    """Per-channel latent mean / std of training clips into the model's buffers; write ``video_ae.safetensors``."""
    rng = np.random.default_rng(cfg.seed)
    zs = [model.encode(frames_to_unit(clips.sample(16, rng))).transpose(1, 2).flatten(2)  # [B, C, F*h*w]
          for _ in range(max(1, cfg.stats_clips // 16))]
    z = torch.cat(zs, dim=2).transpose(0, 1).flatten(1)  # [B, C, N] -> [C, B*N]
    model.latent_mean.copy_(z.mean(dim=1))
    model.latent_std.copy_(z.std(dim=1).clamp_min(1e-4))
    model.save(Path(cfg.out) / "video_ae.safetensors")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the avatar's video autoencoder.")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=25)
    a = p.parse_args(argv)
    # Faces fill the frame, so crops of 32x32 centred on moving pixels (mouth, eyes) suit them as they suit Pong.
    cfg = AETrainConfig(data=a.data, out=a.out, steps=a.steps, batch=a.batch, seed=a.seed, threads=a.threads,
                        ckpt_every=a.ckpt_every, log_every=a.log_every)
    train(cfg)
    print(f"done: {cfg.out}/video_ae.safetensors", flush=True)


if __name__ == "__main__":
    main()
