"""Encode Atari episodes into the world model's latent episodes (the LatentFolder format).

``python -m streamgen.training.data.encode_world --data data/atari/pong --ae runs/world/ae --out runs/world/latents``

For each episode of ``train/`` and ``eval/``: video latents ``[T/2, 4, 16, 16]`` and audio latents
``[T/2 * 8, 16]`` through the trained autoencoders, normalised with their stored statistics; the action
windows ``keyboard [T/2, R, K]`` and ``mouse [T/2, R, 0]`` built by ``streamgen.actions.ActionState`` at the
stream clock from the episode's ALE actions (``ale_keys.events_for_actions``), exactly as a session builds them
from key events; ``first`` where a new game starts; and ``ale_actions`` (int16 [T], for evaluation).

Action alignment: ``actions[t]`` was chosen after seeing ``frames[t]`` and produced ``frames[t + 1]``
(docs/data.md), so raw frame r's row holds ``actions[r - 1]`` (the action that led to it; null for r = 0).
Episodes are encoded in overlapping chunks (the causal encoder gets ``LEAD`` frames of real history).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from streamgen.actions import ActionSpec, ActionState, split_by_block
from streamgen.config import ModelConfig
from streamgen.decoders.audio_autoencoder import AudioAutoencoder, console_to_unit
from streamgen.decoders.video_autoencoder import VideoAutoencoder, frames_to_unit
from streamgen.pipeline import model_config

from .ale_keys import events_for_actions

CHUNK = 200  # frames encoded per call (memory)
LEAD = 8  # frames of history given to the causal encoder before each chunk (its temporal reach is < 8)


@torch.no_grad()
def encode_video(ae: VideoAutoencoder, frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, 3, H, W] (T even) -> normalised latents [T/2, C, h, w]."""
    tt = ae.cfg.temporal
    out = []
    for s in range(0, len(frames), CHUNK):
        lo = max(0, s - LEAD)
        x = frames_to_unit(torch.from_numpy(frames[lo : s + CHUNK]).to(_device(ae)))[None]  # [1, L, 3, H, W]
        z = ae.encode(x)[0]  # [L/2, C, h, w]
        out.append(z[(s - lo) // tt :])
    return ae.normalize(torch.cat(out)).cpu()


@torch.no_grad()
def encode_audio(ae: AudioAutoencoder, audio: np.ndarray) -> torch.Tensor:
    """uint8 [T, samples_per_step] -> normalised latents [T * samples_per_step / hop, C]."""
    wav = console_to_unit(torch.from_numpy(audio.reshape(-1)).to(_device(ae)))[None]  # [1, T*spp]
    return ae.normalize(ae.encode(wav)[0]).cpu()


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def action_windows(config: ModelConfig, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-raw-frame ALE action names (the row of raw frame r) -> keyboard / mouse windows per latent
    frame, built block by block by a stream-clock ``ActionState`` as a session does."""
    spec = ActionSpec.from_config(config)
    rpb = config.frames_per_block * config.temporal_upsample
    blocks = len(names) // rpb
    events, _ = events_for_actions(spec, names[: blocks * rpb])
    state = ActionState(spec, clock="stream")
    kb, ms = [], []
    for batch in split_by_block(spec, events, rpb, blocks):
        w = state.block(batch, config.frames_per_block)
        kb.append(w.keyboard)
        ms.append(w.mouse)
    return torch.from_numpy(np.concatenate(kb)), torch.from_numpy(np.concatenate(ms))  # [T/2, R, K], [T/2, R, M]


def encode_episode(path: Path, config: ModelConfig, video: VideoAutoencoder, audio: AudioAutoencoder,
                   action_names: list[str]) -> dict[str, torch.Tensor]:
    ep = np.load(path)
    rpb = config.frames_per_block * config.temporal_upsample
    t = len(ep["frames"]) // rpb * rpb  # whole blocks
    lat = encode_video(video, ep["frames"][:t])
    aud = encode_audio(audio, ep["audio"][:t])
    acts = ep["actions"][:t].astype(np.int64)
    rows = ["NOOP"] + [action_names[a] for a in acts[:-1]]  # raw frame r <- the action that led to it
    kb, ms = action_windows(config, rows)
    first_px = ep["first"][:t]
    tu = config.temporal_upsample
    first = torch.from_numpy(first_px.reshape(-1, tu).any(axis=1))  # [T/2]
    odd = np.nonzero(first_px.reshape(-1, tu)[:, 1:].any(axis=1))[0]  # a game starting mid latent frame
    first[np.minimum(odd + 1, len(first) - 1)] = True
    item = {"latents": lat.contiguous(), "audio": aud.contiguous(), "keyboard": kb, "first": first,
            "ale_actions": torch.from_numpy(acts.astype(np.int16))}
    if ms.shape[-1]:  # models without mouse axes get no mouse windows (the trainer fills zeros)
        item["mouse"] = ms
    return item


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Encode Atari episodes into world-model latent episodes.")
    p.add_argument("--data", default="data/atari/pong")
    p.add_argument("--ae", default="runs/world/ae", help="folder with video_ae.safetensors / audio_ae.safetensors")
    p.add_argument("--out", default="runs/world/latents")
    p.add_argument("--model", default="world", help="preset, shipped model or checkpoint folder: the architecture")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="where the encoders run (cpu, cuda)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    data, out = Path(a.data), Path(a.out)
    meta = json.loads((data / "meta.json").read_text())
    config = model_config(a.model)
    video = VideoAutoencoder.load(Path(a.ae) / "video_ae.safetensors").eval().to(a.device)
    audio = AudioAutoencoder.load(Path(a.ae) / "audio_ae.safetensors").eval().to(a.device)
    for split in ("train", "eval"):
        (out / split).mkdir(parents=True, exist_ok=True)
        for rel in meta["episodes"][split]:
            dest = out / split / (Path(rel).stem + ".safetensors")
            if dest.exists():
                continue
            item = encode_episode(data / rel, config, video, audio, meta["action_names"])
            if split == "train":
                item.pop("ale_actions")  # the trainer passes every other key to the model
            save_file(item, str(dest.with_suffix(".tmp")))
            dest.with_suffix(".tmp").rename(dest)
            print(f"{dest}: latents {tuple(item['latents'].shape)} audio {tuple(item['audio'].shape)}", flush=True)


if __name__ == "__main__":
    main()
