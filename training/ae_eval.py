"""Evaluate trained Atari autoencoders on held-out episodes and time their decoders.

``python -m streamgen.training.ae_eval --run runs/ae_pong [--data data/atari/pong]``

Prints (and writes to ``<run>/eval.json``):
- video: PSNR (dB, uint8 frames) of encode -> decode over 16-step clips of the eval episodes, mean
  of per-frame PSNR; how often the ball found in the original frame is found in the reconstruction
  within 1.5 px; the controlled paddle's mean position error (64x64 px);
- audio: SNR (dB) of the reconstructed waveform and the agreement of sound onsets;
- speed on one CPU thread: video frames decoded per second (streaming, 2 latent frames per call)
  and audio decoded per second of audio (as a multiple of real time).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from streamgen.decoders.audio_autoencoder import AudioAutoencoder, console_to_unit, unit_to_console
from streamgen.decoders.video_autoencoder import VideoAutoencoder, frames_to_unit, unit_to_uint8

from .data.clips import AtariClips
from .data.games import game_spec
from .data.locate import locate_many
from .data.survey import match_rate, onset_steps
from .metrics import psnr


@torch.no_grad()
def evaluate(run: str | Path, data: str | Path, clip_steps: int = 16, max_clips: int | None = None,
             speed_seconds: float = 3.0) -> dict:
    torch.set_num_threads(1)
    run = Path(run)
    video = VideoAutoencoder.load(run / "video_ae.safetensors").eval()
    audio = AudioAutoencoder.load(run / "audio_ae.safetensors").eval()
    clips = AtariClips(data, "eval", clip_steps)
    spec = game_spec(clips.meta["game"])
    idx = clips.sequential()[:max_clips]
    orig, rec, a_orig, a_rec = [], [], [], []
    for i in range(0, len(idx), 8):
        b = clips.batch(idx[i:i + 8])
        y = unit_to_uint8(video.decode(video.encode(frames_to_unit(b["frames"]))))
        orig.append(b["frames"].flatten(0, 1).numpy())  # [B, L, 3, H, W] -> [B*L, 3, H, W]
        rec.append(y.flatten(0, 1).numpy())  # [B, L, 3, H, W] -> [B*L, 3, H, W]
        w = audio.decode(audio.encode(console_to_unit(b["audio"])))
        a_orig.append(b["audio"].numpy())
        a_rec.append(unit_to_console(w).numpy())
    orig, rec = np.concatenate(orig), np.concatenate(rec)
    p = psnr(orig, rec)
    ball_o, ball_r = locate_many(orig, spec.ball), locate_many(rec, spec.ball)
    seen = ~np.isnan(ball_o[:, 0])
    ball_ok = np.linalg.norm(np.nan_to_num(ball_r[seen], nan=1e3) - ball_o[seen], axis=1) <= 1.5
    pad_o, pad_r = locate_many(orig, spec.player), locate_many(rec, spec.player)
    pad_err = np.abs(pad_r[:, spec.player_axis] - pad_o[:, spec.player_axis])
    a_o = np.concatenate(a_orig).astype(np.float64) - 128
    a_r = np.concatenate(a_rec).astype(np.float64) - 128
    snr = 10 * np.log10((a_o**2).sum() / max(((a_o - a_r) ** 2).sum(), 1e-9))
    spp = clips.meta["samples_per_step"]
    skip = spp // 512
    on_o = onset_steps(np.concatenate(a_orig).reshape(-1, spp), skip)  # [B, L*spp] -> [B*L, spp]
    on_r = onset_steps(np.concatenate(a_rec).reshape(-1, spp), skip)  # [B, L*spp] -> [B*L, spp]
    res = {
        "eval_frames": int(len(orig)),
        "video_psnr_db": round(float(p.mean()), 2),
        "video_psnr_db_p5": round(float(np.percentile(p, 5)), 2),
        "ball_frames": int(seen.sum()),
        "ball_kept_within_1.5px": round(float(ball_ok.mean()), 4) if seen.any() else None,
        "paddle_error_px": round(float(np.nanmean(pad_err)), 3),
        "paddle_lost": round(float(np.mean(np.isnan(pad_r[:, 0]) & ~np.isnan(pad_o[:, 0]))), 4),
        "audio_snr_db": round(float(snr), 2),
        "audio_onset_precision": round(match_rate(on_r, on_o), 3),
        "audio_onset_recall": round(match_rate(on_o, on_r), 3),
    }
    res.update(decode_speed(video, audio, clips.meta["sample_rate"], speed_seconds))
    (run / "eval.json").write_text(json.dumps(res, indent=1))
    return res


@torch.no_grad()
def decode_speed(video: VideoAutoencoder, audio: AudioAutoencoder, sample_rate: int, seconds: float = 3.0) -> dict:
    """Streaming decode throughput on one thread (best of 3 timed rounds; the machine is shared)."""
    torch.set_num_threads(1)
    c, h, w = video.cfg.latent_shape
    z = torch.randn(1, 2, c, h, w)
    za = torch.randn(1, 8, audio.cfg.latent_channels)
    best_v, best_a = 0.0, 0.0
    for _ in range(3):
        state, n, t0 = None, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            out, state = video.decoder(z, state)
            n += out.shape[1]
        best_v = max(best_v, n / (time.perf_counter() - t0))
        state, n, t0 = None, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            out, state = audio.decoder(za, state)
            n += out.shape[1]
        best_a = max(best_a, n / sample_rate / (time.perf_counter() - t0))
    return {"video_decode_fps_1thread": round(best_v, 1), "audio_decode_x_realtime_1thread": round(best_a, 1),
            "video_decoder_params": sum(p.numel() for p in video.decoder.parameters()),
            "audio_decoder_params": sum(p.numel() for p in audio.decoder.parameters())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Evaluate Atari autoencoders on held-out episodes.")
    p.add_argument("--run", default="runs/ae_pong")
    p.add_argument("--data", default=None, help="dataset (default: the one the run trained on)")
    p.add_argument("--clip-steps", type=int, default=16)
    a = p.parse_args(argv)
    data = a.data or json.loads((Path(a.run) / "config.json").read_text())["data"]
    print(json.dumps(evaluate(a.run, data, a.clip_steps), indent=1))


if __name__ == "__main__":
    main()
