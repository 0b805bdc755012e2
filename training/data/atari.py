"""Atari dataset: RGB frames, console audio and actions recorded with ``ale-py``.

Layout on disk (``out_dir``, default ``./data/atari/<game>``)::

    meta.json                 recording settings, action names, rates, episode lists
    train/ep_00000.npz ...    one compressed file per episode
    eval/ep_00000.npz ...     held-out episodes (own seeds, never used for training)

Each episode file holds, for T steps (one step = ``frame_skip`` emulator frames)::

    frames  uint8 [T, 3, H, W]        playfield crop, area-resized
    audio   uint8 [T, frame_skip*512] console samples of the frames that led to frames[t]
    actions int16 [T]                 index into meta["action_names"], taken after seeing frames[t]
    ram     uint8 [T, 128]            emulator RAM at frames[t] (ground truth for evaluation)
    first   bool  [T]                 True where a new game starts (no clip may cross it)

so frames[t + 1] and audio[t + 1] are what actions[t] produced. Everything is a pure function of the
seed: the emulator's seed, the number of start no-ops and the player's choices all come from
``numpy.random.SeedSequence(seed, spawn_key=(split, episode))``.

CLI: ``python -m streamgen.training.data.atari --game pong --out data/atari/pong --episodes 40``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from .games import GameSpec, RandomPlayer, ScriptedPlayer, crop_native, game_spec

# ALE 0.12 returns 512 audio samples per emulator frame (``getAudioSize()``); the console runs at
# 60 frames/s, so the sample rate is 512 * 60 = 30720 Hz.
SAMPLES_PER_FRAME = 512
EMULATOR_FPS = 60
SAMPLE_RATE = SAMPLES_PER_FRAME * EMULATOR_FPS
FORMAT_VERSION = 1
# "val" and "test" episodes are recorded by the counterfactual evaluation (training/counterfactual_data.py),
# never stored for training: their own seeds, so none is a replay of a training or "eval" episode.
SPLIT_IDS = {"train": 0, "eval": 1, "val": 2, "test": 3}


@dataclass(kw_only=True)
class RecordConfig:
    """How episodes are played and preprocessed."""

    game: str = "pong"
    # 4 emulator frames per step -> 15 steps/s, the usual Atari agent rate; the ball then moves a
    # few pixels per step, which a world model can follow.
    frame_skip: int = 4
    # Output (height, width): 64x64 keeps the ball (2x4 native px) visible after a 2.5x area
    # resize of Pong's 160x160 playfield (measured in docs/data.md) while staying cheap on a CPU.
    height: int = 64
    width: int = 64
    # Share of episodes played by the scripted player (the rest: random holds); scripted play makes
    # the paddle move toward the ball, random play covers every action.
    scripted_fraction: float = 0.7
    # Up to this many emulator frames of NOOP before recording, so episodes start differently.
    max_start_noops: int = 60

    def __post_init__(self) -> None:
        game_spec(self.game)
        if self.frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {self.frame_skip}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"output size must be at least 8x8, got {self.height}x{self.width}")
        if not 0.0 <= self.scripted_fraction <= 1.0:
            raise ValueError(f"scripted_fraction must be in [0, 1], got {self.scripted_fraction}")


def make_ale(game: str, seed: int):
    """An ALE instance with sound observations on, deterministic (no sticky actions)."""
    import ale_py
    from ale_py import roms

    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.setInt("random_seed", int(seed) % (2**31 - 1))
    ale.setFloat("repeat_action_probability", 0.0)
    ale.setInt("frame_skip", 1)
    ale.setBool("sound_obs", True)  # must be set before loadROM
    ale.loadROM(roms.get_rom_path(game))
    if ale.getAudioSize() != SAMPLES_PER_FRAME:
        raise RuntimeError(f"ale-py returns {ale.getAudioSize()} audio samples per frame, expected 512")
    return ale


def resize_frame(crop: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average resize of an [h, w, 3] uint8 crop -> [height, width, 3] uint8."""
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.BOX))


def preprocess(screen: np.ndarray, spec: GameSpec, cfg: RecordConfig) -> np.ndarray:
    """Native screen [210, 160, 3] -> model frame [3, H, W] uint8."""
    small = resize_frame(crop_native(screen, spec), cfg.height, cfg.width)  # [H, W, 3]
    return small.transpose(2, 0, 1)  # [H, W, 3] -> [3, H, W]


def step_frames(ale, action, frame_skip: int) -> np.ndarray:
    """Repeat ``action`` for ``frame_skip`` emulator frames; returns their audio concatenated."""
    chunks = []
    for _ in range(frame_skip):
        ale.act(action)
        chunks.append(np.asarray(ale.getAudio(), dtype=np.uint8).copy())
    return np.concatenate(chunks)  # [frame_skip * 512]


def record_episode(
    cfg: RecordConfig, steps: int, seed_seq: np.random.SeedSequence, *, keep_native: bool = False,
    on_frame: Callable | None = None,
) -> dict[str, np.ndarray | str]:
    """Play one episode of ``steps`` steps and return its arrays (see module docstring).

    ``keep_native`` also returns the native playfield crops ([T, h, w, 3], for measurements).
    ``on_frame(ale, legal, t)`` is called after frame ``t`` is read and before its action is taken (the
    counterfactual evaluation branches the emulator there); it must leave the emulator's state as it found it.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    spec = game_spec(cfg.game)
    ale_seed, player_seed = seed_seq.generate_state(2)
    rng = np.random.default_rng(int(player_seed))
    ale = make_ale(cfg.game, int(ale_seed))
    legal = ale.getMinimalActionSet()
    names = [a.name for a in legal]
    scripted = bool(rng.random() < cfg.scripted_fraction)
    player = ScriptedPlayer(spec, names, rng) if scripted else RandomPlayer(names, rng)

    noop = legal[0]
    for _ in range(int(rng.integers(0, cfg.max_start_noops + 1))):
        ale.act(noop)
    audio_now = step_frames(ale, noop, cfg.frame_skip)  # the sound that led to the first recorded frame

    spp = cfg.frame_skip * SAMPLES_PER_FRAME
    frames = np.zeros((steps, 3, cfg.height, cfg.width), np.uint8)
    audio = np.zeros((steps, spp), np.uint8)
    actions = np.zeros(steps, np.int16)
    ram = np.zeros((steps, ale.getRAMSize()), np.uint8)
    first = np.zeros(steps, bool)
    first[0] = True
    native = []
    for t in range(steps):
        screen = ale.getScreenRGB()
        frames[t] = preprocess(screen, spec, cfg)
        if keep_native:
            native.append(crop_native(screen, spec).copy())
        audio[t] = audio_now
        ram[t] = ale.getRAM()
        if on_frame is not None:
            on_frame(ale, legal, t)
        a = player.act(screen)
        actions[t] = a
        if t + 1 < steps:
            audio_now = step_frames(ale, legal[a], cfg.frame_skip)
            if ale.game_over():
                ale.reset_game()
                audio_now = step_frames(ale, noop, cfg.frame_skip)
                first[t + 1] = True
    out: dict[str, np.ndarray | str] = dict(
        frames=frames, audio=audio, actions=actions, ram=ram, first=first,
        policy=np.array("scripted" if scripted else "random"),
    )
    if keep_native:
        out["native"] = np.stack(native)  # [T, h, w, 3]
    return out


def _atomic_savez(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def episode_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(int(seed), spawn_key=(SPLIT_IDS[split], int(index)))


def build_dataset(
    game: str = "pong",
    out_dir: str | os.PathLike | None = None,
    episodes: int = 40,
    steps_per_episode: int = 1000,
    seed: int = 0,
    *,
    eval_episodes: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **record_kwargs,
) -> Path:
    """Record ``episodes`` training and ``eval_episodes`` held-out episodes to ``out_dir``.

    Deterministic: the same arguments give identical arrays. Episodes already on disk with the same
    settings are kept (an interrupted build resumes); ``overwrite`` re-records everything.
    """
    cfg = RecordConfig(game=game, **record_kwargs)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n_eval = max(1, episodes // 10) if eval_episodes is None else int(eval_episodes)
    out = Path(out_dir if out_dir is not None else Path("data") / "atari" / game)
    meta = dict(
        format_version=FORMAT_VERSION, game=game, seed=int(seed), steps_per_episode=int(steps_per_episode),
        record=asdict(cfg), crop=list(game_spec(game).crop), fps=EMULATOR_FPS / cfg.frame_skip,
        sample_rate=SAMPLE_RATE, samples_per_step=cfg.frame_skip * SAMPLES_PER_FRAME,
        action_names=[a.name for a in make_ale(game, 0).getMinimalActionSet()],
        episodes={"train": [f"train/ep_{i:05d}.npz" for i in range(episodes)],
                  "eval": [f"eval/ep_{i:05d}.npz" for i in range(n_eval)]},
    )
    meta_path = out / "meta.json"
    if meta_path.exists() and not overwrite:
        old = json.loads(meta_path.read_text())
        if {k: v for k, v in old.items() if k != "episodes"} != {k: v for k, v in meta.items() if k != "episodes"}:
            raise ValueError(f"{out} holds a dataset with other settings; pass overwrite=True or another out_dir")
    out.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=1))
    jobs = [(s, i) for s, n in (("train", episodes), ("eval", n_eval)) for i in range(n)]
    bar = tqdm(total=len(jobs) * steps_per_episode, unit="step", desc=f"atari {game}", disable=not progress)
    for split, i in jobs:
        path = out / split / f"ep_{i:05d}.npz"
        if path.exists() and not overwrite:
            bar.update(steps_per_episode)
            continue
        data = record_episode(cfg, steps_per_episode, episode_seed(seed, split, i))
        _atomic_savez(path, data)
        bar.update(steps_per_episode)
    bar.close()
    return out


def load_meta(root: str | os.PathLike) -> dict:
    path = Path(root) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"no Atari dataset at {root} (missing meta.json); build it with build_dataset")
    return json.loads(path.read_text())


def load_episode(root: str | os.PathLike, rel: str) -> dict[str, np.ndarray]:
    with np.load(Path(root) / rel) as z:
        return {k: z[k] for k in z.files}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Record an Atari dataset (frames, audio, actions) with ale-py.")
    p.add_argument("--game", default="pong")
    p.add_argument("--out", default=None, help="folder (default ./data/atari/<game>)")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--eval-episodes", type=int, default=None)
    p.add_argument("--steps", type=int, default=1000, help="steps per episode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    out = build_dataset(a.game, a.out, a.episodes, a.steps, a.seed, eval_episodes=a.eval_episodes,
                        overwrite=a.overwrite, height=a.size, width=a.size)
    print(f"dataset written to {out}")


if __name__ == "__main__":
    main()
