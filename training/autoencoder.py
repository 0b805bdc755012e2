"""Train the small causal video and audio autoencoders on a recorded Atari dataset.

``python -m streamgen.training.autoencoder --game pong --steps 20000 --out runs/ae_pong``

Both autoencoders train in one process on the same clips (one CPU thread by default, so the rest of
the machine stays free). Every ``ckpt_every`` steps the models, the optimiser states and the step
go into ``<out>/ckpt_latest.safetensors`` (written to a temporary file, then renamed); a restart
with the same ``--out`` resumes from it. Batches and noise are drawn from generators seeded by
(seed, step), so a resumed run computes exactly what an uninterrupted one does. At the end the
latent statistics are measured and the two models are exported to ``video_ae.safetensors`` and
``audio_ae.safetensors`` (see ``ae_eval.py`` for held-out PSNR and decode speed).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

from streamgen.checkpoints.io import save_safetensors

from streamgen.decoders.audio_autoencoder import AudioAEConfig, AudioAutoencoder, console_to_unit
from streamgen.decoders.video_autoencoder import VideoAEConfig, VideoAutoencoder, frames_to_unit

from .data.clips import AtariClips
from .schedule import warmup_cosine
from .seeds import autoencoder_step_seed


@dataclass(kw_only=True)
class AETrainConfig:
    """Settings of one autoencoder training run."""

    data: str = "data/atari/pong"
    out: str = "runs/ae_pong"
    steps: int = 4500
    # 8 clips x 4 steps = 32 frames (and 8 x 8192 audio samples) per step: ~1 s/step on one thread.
    batch: int = 8
    # A multiple of the video temporal factor; 4 steps give the causal temporal layers context.
    clip_steps: int = 4
    # Small convnets without norms train stably at 1e-3 with a short warm-up and cosine decay to 10 %.
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1
    ckpt_every: int = 500
    log_every: int = 50
    # Video trains on crops of this size (a multiple of the spatial factor; 0 = whole frames): the
    # convnet is translation-equivariant, so 32x32 crops teach it the same at a quarter of the cost.
    # Crops are centred on a moving pixel (ball, paddles) with probability ``motion_crop``.
    train_crop: int = 32
    motion_crop: float = 0.75
    # Video loss: pixels that changed since the previous frame (ball, paddles) weigh 1 + this, so the
    # few moving pixels are not drowned by the flat background.
    motion_weight: float = 20.0
    # Pixels whose colour differs from the frame's background (its per-channel median: paddles,
    # ball, score) weigh 1 + this as well: they are ~1 % of a Pong frame and otherwise get dropped
    # first (at step 500 of a run without it, paddles and ball were gone from reconstructions).
    object_weight: float = 10.0
    # Gaussian noise added to the latents before decoding (training only), relative to each
    # channel's RMS over the batch (so scaling the latents up cannot escape it): the decoder learns
    # to tolerate the imprecise latents a world model generates.
    latent_noise: float = 0.1
    # A tiny L2 on the latents only keeps their scale from drifting (the noise is relative); larger
    # values (1e-3) competed with the paddles' share of the reconstruction error.
    latent_l2: float = 1e-6
    # Audio loss: ``wave_weight`` x squared error on the waveform + ``stft_weight`` x a
    # multi-resolution log-spectrum L1 with floor ``stft_floor``. Measured on Pong (400 steps, error
    # RMS on held-out frames with sound, signal RMS 0.33): squared error alone 0.14, with 0.05 x
    # spectrum 0.16, L1 + spectrum 0.28 (the beeps came out as faint noise: L1 and log spectra give
    # the phase of a square wave almost no gradient).
    wave_weight: float = 20.0
    stft_weight: float = 0.0
    stft_floor: float = 1e-2
    # Share of audio clips drawn among clips that hold sound (else most clips are silent).
    loud_clips: float = 0.75
    # Clips encoded to measure the latent mean / std written into the exported models.
    stats_clips: int = 256
    video: dict = field(default_factory=dict)  # VideoAEConfig overrides
    audio: dict = field(default_factory=dict)  # AudioAEConfig overrides

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch < 1 or self.ckpt_every < 1:
            raise ValueError(f"bad steps={self.steps} / batch={self.batch} / ckpt_every={self.ckpt_every}")


AE_MIN_LR_RATIO = 0.1  # the cosine ends at a tenth of the base rate


def lr_at(cfg: AETrainConfig, step: int) -> float:
    return cfg.lr * warmup_cosine(step, warmup=cfg.warmup, steps=cfg.steps, floor=AE_MIN_LR_RATIO)


def crop_clips(frames: torch.Tensor, size: int, multiple: int, motion_p: float, rng: np.random.Generator):
    """Per-clip crops [B, L, 3, H, W] -> [B, L, 3, size, size], often centred on moving pixels."""
    b, _, _, h, w = frames.shape
    if size <= 0 or (size >= h and size >= w):
        return frames
    moving = (frames[:, 1:] != frames[:, :-1]).any(dim=2).any(dim=1)  # [B, L-1, 3, H, W] -> [B, H, W]
    out = []
    for i in range(b):
        ys, xs = np.nonzero(moving[i].numpy())
        if len(ys) and rng.random() < motion_p:
            j = int(rng.integers(len(ys)))
            cy, cx = int(ys[j]) - size // 2, int(xs[j]) - size // 2
        else:
            cy, cx = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        cy = min(max(cy // multiple * multiple, 0), h - size)
        cx = min(max(cx // multiple * multiple, 0), w - size)
        out.append(frames[i, :, :, cy:cy + size, cx:cx + size])
    return torch.stack(out)


def relative_noise(z: torch.Tensor, scale: float, gen: torch.Generator, dims: tuple[int, ...]) -> torch.Tensor:
    """Gaussian noise of ``scale`` times each channel's RMS over ``dims`` (not differentiated)."""
    rms = z.detach().pow(2).mean(dim=dims, keepdim=True).sqrt()
    return torch.randn(z.shape, generator=gen) * scale * rms


def loud_audio(clips: AtariClips, n: int, share: float, rng: np.random.Generator) -> torch.Tensor:
    """Audio of ``n`` clips [n, L*spp], a ``share`` of them drawn among clips that hold sound."""
    cand = rng.integers(0, len(clips), size=4 * n)
    loud = [int(i) for i in cand if clips.clip(int(i))["audio"].std() > 0]
    quiet = [int(i) for i in cand if int(i) not in set(loud)]
    k = min(len(loud), int(round(share * n)))
    pick = loud[:k] + (quiet + loud[k:])[: n - k]
    return clips.batch(pick)["audio"]


def video_loss(model: VideoAutoencoder, frames: torch.Tensor, cfg: AETrainConfig, gen: torch.Generator):
    x = frames_to_unit(frames)  # [B, L, 3, H, W] (H, W: the crop's)
    z = model.encode(x)
    y = model.decode(z + relative_noise(z, cfg.latent_noise, gen, dims=(0, 1, 3, 4)))
    motion = torch.zeros_like(x[:, :, :1])  # [B, L, 1, H, W]
    motion[:, 1:] = (x[:, 1:] - x[:, :-1]).abs().amax(dim=2, keepdim=True)
    bg = x.flatten(3).median(dim=3).values[..., None, None]  # [B, L, 3, H*W] -> [B, L, 3, 1, 1]
    obj = (x - bg).abs().amax(dim=2, keepdim=True)  # [B, L, 1, H, W]
    w = 1.0 + cfg.motion_weight * (motion > 0.02).float() + cfg.object_weight * (obj > 0.05).float()
    err = y - x
    rec = (w * err.pow(2)).mean() + 0.5 * (w * err.abs()).mean()
    return rec + cfg.latent_l2 * z.pow(2).mean(), {"v_mse": float(err.detach().pow(2).mean())}


def stft_loss(y: torch.Tensor, x: torch.Tensor, floor: float) -> torch.Tensor:
    total = y.new_zeros(())
    for n_fft in (128, 512, 2048):
        win = torch.hann_window(n_fft)
        sy = torch.stft(y, n_fft, n_fft // 4, window=win, return_complex=True).abs()
        sx = torch.stft(x, n_fft, n_fft // 4, window=win, return_complex=True).abs()
        total = total + (torch.log(sy + floor) - torch.log(sx + floor)).abs().mean()
    return total / 3


def audio_loss(model: AudioAutoencoder, audio: torch.Tensor, cfg: AETrainConfig, gen: torch.Generator):
    x = console_to_unit(audio)  # [B, N]
    z = model.encode(x)
    y = model.decode(z + relative_noise(z, cfg.latent_noise, gen, dims=(0, 1)))  # z: [B, Fa, C]
    l1 = (y - x).abs().mean()
    loss = cfg.wave_weight * (y - x).pow(2).mean() + cfg.latent_l2 * z.pow(2).mean()
    if cfg.stft_weight:
        loss = loss + cfg.stft_weight * stft_loss(y, x, cfg.stft_floor)
    return loss, {"a_l1": float(l1.detach())}


# ---------------------------------------------------------------- checkpoints -----------------
def _opt_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().clone()
    return tensors, json.dumps(sd["param_groups"])


def _load_opt(opt: torch.optim.Optimizer, prefix: str, f, groups: str) -> None:
    state: dict[int, dict] = {}
    for key in f.keys():
        if key.startswith(prefix + "."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = f.get_tensor(key)
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups)})


def save_checkpoint(path: Path, step: int, cfg: AETrainConfig, models: dict, opts: dict) -> None:
    tensors, meta = {}, {"step": str(step), "config": json.dumps(asdict(cfg))}
    for name, m in models.items():
        tensors.update({f"{name}.model.{k}": v.detach().clone().contiguous() for k, v in m.state_dict().items()})
        t, groups = _opt_tensors(f"{name}_opt", opts[name])
        tensors.update(t)
        meta[f"{name}_opt_groups"] = groups
    save_safetensors(tensors, path, meta)


def load_checkpoint(path: Path, models: dict, opts: dict) -> int:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        for name, m in models.items():
            pre = f"{name}.model."
            m.load_state_dict({k[len(pre):]: f.get_tensor(k) for k in f.keys() if k.startswith(pre)})
            _load_opt(opts[name], f"{name}_opt", f, meta[f"{name}_opt_groups"])
    return int(meta["step"])


# ---------------------------------------------------------------- training --------------------
def build_models(cfg: AETrainConfig, meta: dict) -> dict[str, torch.nn.Module]:
    h, w = meta["record"]["height"], meta["record"]["width"]
    torch.manual_seed(cfg.seed)
    video = VideoAutoencoder(VideoAEConfig(**{"height": h, "width": w, **cfg.video}))
    audio = AudioAutoencoder(AudioAEConfig(**{"sample_rate": meta["sample_rate"], **cfg.audio}))
    return {"video": video, "audio": audio}


@torch.no_grad()
def measure_latent_stats(models: dict, clips: AtariClips, n: int, seed: int = 0) -> None:
    """Per-channel mean / std of the training latents, stored in the models' buffers."""
    rng = np.random.default_rng(seed)
    zs_v, zs_a = [], []
    for _ in range(max(1, n // 16)):
        b = clips.sample(min(16, n), rng)
        zs_v.append(models["video"].encode(frames_to_unit(b["frames"])).transpose(1, 2).flatten(2))  # [B,C,F*h*w]
        zs_a.append(models["audio"].encode(console_to_unit(b["audio"])).transpose(1, 2))  # [B, C, Fa]
    for key, zs in (("video", zs_v), ("audio", zs_a)):
        z = torch.cat(zs, dim=2).transpose(0, 1).flatten(1)  # [B, C, N] -> [C, B*N]
        models[key].latent_mean.copy_(z.mean(dim=1))
        models[key].latent_std.copy_(z.std(dim=1).clamp_min(1e-4))


def train(cfg: AETrainConfig, *, progress: bool = True, stop_at: int | None = None) -> dict[str, torch.nn.Module]:
    """Train (or resume) to ``cfg.steps``; ``stop_at`` ends early right after that step's checkpoint
    (what a kill after a checkpoint leaves behind), without exporting."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = AtariClips(cfg.data, "train", cfg.clip_steps)
    models = build_models(cfg, clips.meta)
    if cfg.clip_steps % models["video"].cfg.temporal:
        raise ValueError(f"clip_steps={cfg.clip_steps} must be a multiple of temporal={models['video'].cfg.temporal}")
    opts = {k: torch.optim.AdamW(m.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
            for k, m in models.items()}
    ckpt = out / "ckpt_latest.safetensors"
    step = load_checkpoint(ckpt, models, opts) if ckpt.exists() else 0
    if step and progress:
        print(f"resumed from {ckpt} at step {step}", flush=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    log = open(out / "log.jsonl", "a")
    t0, s0, frames_per_step = time.time(), step, cfg.batch * cfg.clip_steps
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step])
        gen = torch.Generator().manual_seed(autoencoder_step_seed(cfg.seed, step))
        batch = clips.sample(cfg.batch, rng)
        batch["audio"] = loud_audio(clips, cfg.batch, cfg.loud_clips, rng)
        batch["frames"] = crop_clips(batch["frames"], cfg.train_crop, models["video"].cfg.spatial,
                                     cfg.motion_crop, rng)
        stats = {}
        for name, fn, key in (("video", video_loss, "frames"), ("audio", audio_loss, "audio")):
            for g in opts[name].param_groups:
                g["lr"] = lr_at(cfg, step)
            loss, info = fn(models[name], batch[key], cfg, gen)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(models[name].parameters(), cfg.grad_clip)
            opts[name].step()
            stats.update(info, **{f"{name}_loss": float(loss.detach())})
        step += 1
        if not all(math.isfinite(v) for v in stats.values()):
            raise FloatingPointError(f"non-finite loss at step {step}: {stats}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.time() - t0
            rate = (step - s0) * frames_per_step / max(dt, 1e-9)
            eta = (cfg.steps - step) * dt / max(step - s0, 1)
            rec = {"step": step, **{k: round(v, 6) for k, v in stats.items()}, "frames_per_s": round(rate, 1),
                   "eta_s": round(eta), "lr": lr_at(cfg, step - 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if progress:
                print(f"step {step}/{cfg.steps} " + " ".join(f"{k}={v:.4g}" for k, v in stats.items())
                      + f" {rate:.1f} frames/s ETA {eta / 60:.1f} min", flush=True)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt, step, cfg, models, opts)
        if stop_at is not None and step >= stop_at:
            log.close()
            return models
    log.close()
    export(models, clips, cfg)
    return models


def export(models: dict, clips: AtariClips, cfg: AETrainConfig) -> None:
    """Measure latent statistics and write ``video_ae.safetensors`` / ``audio_ae.safetensors``."""
    measure_latent_stats(models, clips, cfg.stats_clips, seed=cfg.seed)
    models["video"].save(Path(cfg.out) / "video_ae.safetensors")
    models["audio"].save(Path(cfg.out) / "audio_ae.safetensors")


def export_checkpoint(out: str | os.PathLike, dest: str | os.PathLike | None = None) -> None:
    """Export the models of ``<out>/ckpt_latest.safetensors`` (e.g. while training still runs) to
    ``dest`` (default ``out``)."""
    with safe_open(str(Path(out) / "ckpt_latest.safetensors"), framework="pt") as f:
        cfg = AETrainConfig(**json.loads(f.metadata()["config"]))
    cfg.out = str(dest or out)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    clips = AtariClips(cfg.data, "train", cfg.clip_steps)
    models = build_models(cfg, clips.meta)
    opts = {k: torch.optim.AdamW(m.parameters()) for k, m in models.items()}
    load_checkpoint(Path(out) / "ckpt_latest.safetensors", models, opts)
    export(models, clips, cfg)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the Atari video and audio autoencoders.")
    p.add_argument("--game", default="pong")
    p.add_argument("--data", default=None, help="dataset folder (default data/atari/<game>)")
    p.add_argument("--out", default=None, help="run folder (default runs/ae_<game>)")
    p.add_argument("--steps", type=int, default=4500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--clip-steps", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--export-only", action="store_true", help="export the latest checkpoint and exit")
    a = p.parse_args(argv)
    if a.export_only:
        export_checkpoint(a.out or f"runs/ae_{a.game}")
        return
    cfg = AETrainConfig(data=a.data or f"data/atari/{a.game}", out=a.out or f"runs/ae_{a.game}", steps=a.steps,
                        batch=a.batch, clip_steps=a.clip_steps, lr=a.lr, seed=a.seed, threads=a.threads,
                        ckpt_every=a.ckpt_every, log_every=a.log_every)
    train(cfg)
    print(f"done: {cfg.out}/video_ae.safetensors, {cfg.out}/audio_ae.safetensors", flush=True)


if __name__ == "__main__":
    main()
