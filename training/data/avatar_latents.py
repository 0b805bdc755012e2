"""Encode the avatar set into the teacher's latent episodes (the ``LatentFolder`` format, docs/training.md).

``python -m streamgen.training.data.avatar_latents --data data/avatar --ae runs/avatar/ae/video_ae.safetensors --out runs/avatar/latents``

Every episode is exactly ``clip_frames`` latent frames, laid out as a stream is: the reference block
first (the identity's rest image over the ``sink_frames``, ``streamgen.identity.reference_frames``), then
``clip_frames - sink_frames`` latent frames of the talking face; a clip's speech is cut into consecutive
segments, each with the reference in front. Keys: ``latents`` ``[F, C, h, w]`` (normalised, the clip
encoded as one causal video after its reference block); ``audio_in`` ``[F, R, D]``, each frame's speech
window (``streamgen.audio_features``; the reference frames hear silence, as in a session); ``mouth_open``
``[F * tu]`` (pixels, 0 on the reference frames; carried for evaluation).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from streamgen.audio_features import frame_windows, silence_token, speech_features
from streamgen.config import ModelConfig
from streamgen.decoders.video_autoencoder import VideoAutoencoder, frames_to_unit
from streamgen.identity import reference_frames
from streamgen.pipeline import model_config

from .avatar import SPLITS, load_clip


@torch.no_grad()
def encode_clip(ae: VideoAutoencoder, config: ModelConfig, clip: dict, clip_frames: int) -> list[dict[str, torch.Tensor]]:
    """One avatar clip -> its episodes of ``clip_frames`` latent frames (a trailing partial segment is dropped)."""
    tu, sink = config.temporal_upsample, config.sink_frames
    seg = clip_frames - sink
    if seg < config.frames_per_block or seg % config.frames_per_block:
        raise ValueError(f"clip_frames={clip_frames} minus the {sink} sink frames must be a positive multiple of "
                         f"{config.frames_per_block} frames")
    ref = reference_frames(config, clip["reference"])  # [sink * tu, H, W, 3]
    video = np.concatenate([ref, clip["frames"]])  # [sink * tu + T, H, W, 3]
    x = frames_to_unit(torch.from_numpy(video).permute(0, 3, 1, 2))[None]  # [1, L, 3, H, W]
    z = ae.normalize(ae.encode(x))[0]  # [L / tu, C, h, w]
    feats = speech_features(config, clip["audio"])  # [S, tpf, D], speech frame j = latent frame sink + j
    silence = silence_token(config)
    ref_windows = silence.repeat(sink, 2 * config.audio_in.radius + 1, 1)  # [sink, R, D]
    speech_frames = (z.shape[0] - sink)
    out = []
    for k in range(speech_frames // seg):
        lo = sink + k * seg
        win = frame_windows(feats, sink, lo, seg, config.audio_in.radius, silence)  # [seg, R, D]
        mouth = np.concatenate([np.zeros(sink * tu, np.float32), clip["mouth_open"][(lo - sink) * tu : (lo - sink + seg) * tu]])
        out.append({"latents": torch.cat([z[:sink], z[lo : lo + seg]]).contiguous(),
                    "audio_in": torch.cat([ref_windows, win]).contiguous(),
                    "mouth_open": torch.from_numpy(mouth)})
    return out


def encode_dataset(data: str | Path, ae_path: str | Path, out: str | Path, model: str = "avatar",
                   clip_frames: int = 16, progress: bool = True) -> dict[str, int]:
    """Encode every split of ``data`` into ``out/<split>/ep_*.safetensors``; returns episodes per split."""
    config = model_config(model)
    ae = VideoAutoencoder.load(ae_path).eval()
    counts = {}
    for split in SPLITS:
        files = sorted((Path(data) / split).glob("clip_*.npz"))
        (Path(out) / split).mkdir(parents=True, exist_ok=True)
        n = 0
        for i, f in enumerate(files):
            for j, ep in enumerate(encode_clip(ae, config, load_clip(f), clip_frames)):
                save_file(ep, str(Path(out) / split / f"ep_{i:05d}_{j:02d}.safetensors"))
                n += 1
            if progress and (sys.stdout.isatty() or (i + 1) % 50 == 0 or i + 1 == len(files)):
                tty = sys.stdout.isatty()
                print(f"{chr(13) if tty else ''}{split}: {i + 1}/{len(files)} clips, {n} episodes", end="" if tty else "\n",
                      flush=True)
        if progress and sys.stdout.isatty():
            print()
        counts[split] = n
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--ae", required=True, help="video_ae.safetensors of the avatar's autoencoder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="avatar")
    ap.add_argument("--clip-frames", type=int, default=16)
    args = ap.parse_args(argv)
    encode_dataset(args.data, args.ae, args.out, args.model, args.clip_frames)


if __name__ == "__main__":
    main()
