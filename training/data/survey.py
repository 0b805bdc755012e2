"""Measure which Atari game suits a small latent world model with sound.

For each game, episodes are recorded exactly as the dataset does (scripted and random play) and:
- player: how often the controlled object is found by colour in the 64x64 frames, how well its
  position agrees with the emulator's RAM, and how often a move action moves it the right way;
- ball: how often the ball found on the native screen is still found after the resize, its peak
  colour weight there (1 = full contrast) and the centroid error (64x64 px);
- sound: onsets (spectral flux peaks per 512-sample emulator frame) against visual events (ball
  reversals; for games without a ball, RAM score changes), as precision / recall within +-1 step,
  next to the precision obtained with the events shifted in time (chance);
- dynamics: fraction of pixels changing per step.

Run: ``python -m streamgen.training.data.survey --steps 800`` (prints JSON, a few minutes on 1 core).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from .atari import SAMPLES_PER_FRAME, RecordConfig, episode_seed, make_ale, record_episode
from .games import GAMES, game_spec
from .locate import colour_weights, locate_many

# RAM addresses of the scores (AtariARI) used as sound events where there is no ball.
SCORE_RAM = {"freeway": (103,), "boxing": (18, 19)}


def onset_steps(audio: np.ndarray, frame_skip: int) -> np.ndarray:
    """Steps holding a sound onset: audio uint8 [T, frame_skip*512] -> bool [T]."""
    sub = audio.reshape(-1, SAMPLES_PER_FRAME).astype(np.float32)  # [T*skip, 512]
    sub = sub - sub.mean(axis=1, keepdims=True)
    mag = np.abs(np.fft.rfft(sub, axis=1))  # [T*skip, 257]
    flux = np.maximum(mag[1:] - mag[:-1], 0.0).sum(axis=1)
    flux = np.concatenate([[0.0], flux])
    level = np.median(flux) + 5.0 * (np.median(np.abs(flux - np.median(flux))) + 1e-3)
    # Energy gate: a frame quieter than std 2 (uint8 units; a Pong beep has ~30) is not a sound, so
    # low-level noise in generated or reconstructed audio does not count as onsets.
    loud = sub.std(axis=1) > 2.0
    peaks = (flux > max(level, 50.0)) & (flux >= np.roll(flux, 1)) & loud
    on = peaks.reshape(-1, frame_skip).any(axis=1)  # [T*skip] -> [T, skip] -> [T]
    on[1:] &= ~on[:-1]  # one onset per sound: drop steps that continue an onset of the previous step
    return on


def reversal_events(pos: np.ndarray) -> np.ndarray:
    """Steps where the ball reverses along either axis, appears or disappears: [T, 2] -> bool [T]."""
    t = len(pos)
    ev = np.zeros(t, bool)
    found = ~np.isnan(pos[:, 0])
    ev[1:] |= found[1:] != found[:-1]
    v = np.diff(pos, axis=0)  # [T-1, 2]
    s = np.sign(np.round(v, 1))
    # v[j] = pos[j+1] - pos[j]; a flip between v[j] and v[j+1] happens after frame j+1, i.e. in the
    # emulator frames whose audio is stored with step j+2.
    flip = (s[1:] * s[:-1] < 0).any(axis=1)
    ev[2:] |= np.nan_to_num(flip, nan=0).astype(bool)
    return ev


def match_rate(a: np.ndarray, b: np.ndarray, tol: int = 1) -> float:
    """Fraction of True steps in ``a`` that have a True step in ``b`` within +-tol."""
    if a.sum() == 0:
        return float("nan")
    near = np.zeros_like(b)
    for d in range(-tol, tol + 1):
        near |= np.roll(b, d)
    return float((a & near).sum() / a.sum())


def survey_game(game: str, steps: int, episodes: int, seed: int) -> dict:
    spec = game_spec(game)
    legal = [a.name for a in make_ale(game, 0).getMinimalActionSet()]
    out: dict[str, list] = {k: [] for k in (
        "found", "ram_corr", "follow", "move_px", "ball_kept", "ball_weight", "ball_err",
        "precision", "recall", "chance", "change", "onsets_per_s")}
    for ep in range(episodes):
        cfg = RecordConfig(game=game, scripted_fraction=1.0 if ep % 3 != 2 else 0.0)
        d = record_episode(cfg, steps, episode_seed(seed, "train", 1000 + ep), keep_native=True)
        frames, native = d["frames"], d["native"]
        pos = locate_many(frames, spec.player)  # [T, 2] in 64x64 px
        ax = pos[:, spec.player_axis]
        out["found"].append(float(np.mean(~np.isnan(ax))))
        ok = ~np.isnan(ax)
        ram = d["ram"][:, spec.player_ram].astype(np.float64)
        if ok.sum() > 10 and np.std(ram[ok]) > 0 and np.std(ax[ok]) > 0:
            out["ram_corr"].append(abs(float(np.corrcoef(ax[ok], ram[ok])[0, 1])))
        sign = np.array([spec.moves.get(legal[a], 0) for a in d["actions"]])  # [T]
        disp = np.diff(ax)  # effect of actions[t] on frames[t+1]
        sel = (sign[:-1] != 0) & ~np.isnan(disp)
        if sel.any():
            out["follow"].append(float(np.mean(np.sign(disp[sel]) == sign[:-1][sel])))
            out["move_px"].append(float(np.mean(disp[sel] * sign[:-1][sel])))
        if spec.ball is not None:
            nat = locate_many(native, spec.ball)  # native crop px
            small = locate_many(frames, spec.ball)
            seen = ~np.isnan(nat[:, 0])
            scale = np.array([frames.shape[2] / native.shape[1], frames.shape[3] / native.shape[2]])
            if seen.any():
                kept = ~np.isnan(small[seen, 0])
                out["ball_kept"].append(float(kept.mean()))
                w = [colour_weights(f.transpose(1, 2, 0), spec.ball).max() for f in frames[seen]]
                out["ball_weight"].append(float(np.mean(w)))
                err = np.linalg.norm(small[seen][kept] - nat[seen][kept] * scale, axis=1)
                out["ball_err"].append(float(np.mean(err)) if len(err) else float("nan"))
            events = reversal_events(nat)
        if game in SCORE_RAM:  # no ball: a point scored is the visual event
            sc = d["ram"][:, list(SCORE_RAM[game])].astype(np.int32)
            events = np.zeros(steps, bool)
            events[1:] = (np.diff(sc, axis=0) != 0).any(axis=1)
        on = onset_steps(d["audio"], cfg.frame_skip)
        out["onsets_per_s"].append(float(on.mean() * 60 / cfg.frame_skip))
        out["precision"].append(match_rate(on, events))
        out["recall"].append(match_rate(events, on))
        out["chance"].append(np.nanmean([match_rate(on, np.roll(events, s)) for s in (17, 41, 73)]))
        out["change"].append(float(np.mean(np.any(frames[1:] != frames[:-1], axis=1))))
    return {k: (round(float(np.nanmean(v)), 3) if len(v) and not np.all(np.isnan(v)) else None)
            for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--games", default=",".join(GAMES))
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    res = {g: survey_game(g, a.steps, a.episodes, a.seed) for g in a.games.split(",")}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
