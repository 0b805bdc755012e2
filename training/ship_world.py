"""Assemble a shipped world folder (``streamgen/weights/world/``) from a trained run.

``python -m streamgen.training.ship_world --model runs/world/sf --ae runs/world/ae --data data/atari/pong --out streamgen/weights/world``

Writes ``config.json`` + ``model.safetensors`` (the student's EMA weights, or any weights folder),
``video_ae.safetensors`` / ``audio_ae.safetensors`` (encoders included: ``Session.prime`` needs them, and
they are small) and ``start_context.npz``: ``context`` real frames, their console sound (float32 [S, 1] at
the native rate) and key rows (float32 [T, K], the same alignment as training) from a held-out episode,
at a start where the ball is in play. ``load_pipeline`` primes every session with it.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from streamgen.checkpoints.folders import load_checkpoint_dir
from streamgen.checkpoints.io import save_checkpoint
from streamgen.config import ModelConfig
from streamgen.decoders.trained import AUDIO_FILE, VIDEO_FILE

from .data.games import game_spec
from .data.locate import locate_many
from .evaluate import key_rows, load_episodes, unit_audio
from .state import resolve_weights
from .teacher_record import RECORD_KEY, read_record


def pick_start(ep: dict, game: str, context: int, per_block: int) -> int:
    """The first block-aligned start whose context frames all show the ball and cross no new game."""
    ball = game_spec(game).ball
    for s in range(per_block * 8, len(ep["frames"]) - context, per_block):
        if ep["first"][s + 1 : s + context].any():
            continue
        if not np.isnan(locate_many(ep["frames"][s : s + context], ball)[:, 0]).any():
            return s
    return 0


def start_context(config: ModelConfig, data: str | Path, *, episode: int = 0, context: int = 12) -> dict[str, np.ndarray]:
    meta, eps = load_episodes(data, "eval", episode + 1)
    ep = eps[episode]
    from streamgen.actions import ActionSpec

    spec = ActionSpec.from_config(config)
    per_block = config.frames_per_block * config.temporal_upsample
    s = pick_start(ep, meta["game"], context, per_block)
    return {"video": ep["frames"][s : s + context], "audio": unit_audio(ep["audio"][s : s + context]),
            "keys": key_rows(spec, meta["action_names"], ep["actions"][s : s + context]),
            "source": np.array(f"{meta['game']} eval episode {episode} frames {s}..{s + context - 1}")}


def write_world_folder(out: str | Path, model: str | Path, ae: str | Path, data: str | Path, *, episode: int = 0,
                       context: int = 12) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config, net = load_checkpoint_dir(Path(model))
    record = read_record(model)  # how it was trained travels with it (a teacher's real score reads it)
    save_checkpoint(out, config, net, metadata={"source": str(model), **({RECORD_KEY: record} if record else {})})
    for name in (VIDEO_FILE, AUDIO_FILE):
        shutil.copyfile(Path(ae) / name, out / name)
    np.savez(out / "start_context.npz", **start_context(config, data, episode=episode, context=context))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Assemble a shipped world folder from trained weights and autoencoders.")
    p.add_argument("--model", required=True, help="weights folder or run folder (its latest EMA)")
    p.add_argument("--ae", required=True, help="folder with video_ae.safetensors / audio_ae.safetensors")
    p.add_argument("--data", default="data/atari/pong")
    p.add_argument("--out", default="streamgen/weights/world")
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--context", type=int, default=12)
    a = p.parse_args(argv)
    model = Path(a.model)
    if not (model / "config.json").is_file():  # a run folder: its latest EMA (or student) weights
        model = resolve_weights(model)
    print(write_world_folder(a.out, model, a.ae, a.data, episode=a.episode, context=a.context))


if __name__ == "__main__":
    main()
