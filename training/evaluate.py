"""``streamgen evaluate``: a world model against the emulator on held-out Atari episodes, as JSON.

``streamgen evaluate --model world --data data/atari/pong [--teacher DIR] [--stability-frames 10000]``

For each start (a few per held-out episode) the session is primed with ``context`` real frames, their
sound and actions (``Session.prime``), then steps with the episode's own actions, as key events at the
stream clock (``streamgen.actions.events_for_rows``), for ``rollout`` frames. Measured:

- ``psnr``: per-frame PSNR (dB, uint8) of the first 16 and all 64 generated frames against the emulator's,
  next to the copy-last-frame baseline (the last real context frame held);
- ``action_following``: the controlled object found by colour (``data/locate.py``) in generated and
  emulator frames; the share of frames where they agree within ``tolerance_px`` (64x64 pixels, along the
  object's axis of motion), also at every tolerance of ``REPORTED_TOLERANCES`` and over the first 16
  frames alone (``within_tolerance_16``); ``found``, the share of those frames in which the generated
  object is drawn at all (a frame without it counts as far off); the same shares for the
  ``paddle_reference``, a table of the game's dynamics fitted on the training episodes (the first
  ``reference_episodes``) and rolled out from the same context under the same actions without pixels
  (what the object's visible past and the keys allow, ``paddle_reference.py``); and a direction test:
  from the same context, holding ArrowUp vs ArrowDown
  for ``direction_blocks`` blocks, the share of starts where the paddle ends higher with ArrowUp;
- ``next_block_following``: the same object error one block ahead of a real history (``next_block_starts``
  per episode), next to holding the last real frame: action following without the drift that compounds
  over a long rollout;
- ``audio_visual``: sound onsets in the generated audio (resampled back to the console rate) against ball
  bounces found in the generated frames (+-1 step), next to the same rate with the events shifted in
  time (chance) and the emulator's own rate;
- ``teacher`` (with ``--teacher``): the same PSNR for the teacher pipeline and the student's margin;
- ``stability``: ``stability_frames`` frames streamed with random held keys: mean colour of the first
  and last 500 frames against the emulator's mean, per-frame contrast, paddle found; ``collapsed`` when
  the picture goes flat or the paddle vanishes, ``drift_ok`` when the mean colour stays within
  ``drift_bound`` (0-255 scale) of the emulator's.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio

from streamgen.decoders.audio_autoencoder import console_to_unit
from streamgen.actions import events_for_rows, split_by_block

from .data.ale_keys import keys_for_action
from .data.games import game_spec
from .data.locate import locate_many
from .data.survey import match_rate, onset_steps, reversal_events
from .metrics import psnr
from .paddle_reference import DynamicsTable, commanded_signs, fit_dynamics_table, predict_track

SAMPLES_PER_FRAME = 512  # console samples per emulator frame (ale-py)
REPORTED_TOLERANCES = (2.0, 3.0, 4.0, 6.0, 8.0)  # 64x64 px; Pong's paddle is about 6.4 px tall


def load_episodes(data: str | Path, split: str = "eval", limit: int | None = None) -> tuple[dict, list[dict]]:
    data = Path(data)
    meta = json.loads((data / "meta.json").read_text())
    eps = []
    for rel in meta["episodes"][split][:limit]:
        with np.load(data / rel) as e:
            eps.append({"frames": e["frames"].transpose(0, 2, 3, 1).copy(),  # [T, 3, H, W] -> [T, H, W, 3]
                        "audio": e["audio"], "actions": e["actions"].astype(np.int64), "first": e["first"]})
    return meta, eps


def key_rows(spec, action_names: list[str], actions: np.ndarray) -> np.ndarray:
    """Per-raw-frame key rows ``[T, K]``: frame r holds the keys of ``actions[r - 1]`` (the action that led
    to it, docs/data.md), frame 0 none; the same alignment as the training latents."""
    rows = np.zeros((len(actions), len(spec.keys)), np.float32)
    for r in range(1, len(actions)):
        held = keys_for_action(action_names[actions[r - 1]])
        rows[r] = [k in held for k in spec.keys]
    return rows


def unit_audio(audio_u8: np.ndarray) -> np.ndarray:
    """uint8 console samples ``[T, spp]`` -> float32 ``[T * spp, 1]`` in [-1, 1]."""
    samples = torch.from_numpy(np.ascontiguousarray(audio_u8)).reshape(-1, 1)  # [T, spp] -> [T * spp, 1]
    return console_to_unit(samples).numpy()


def _to_console(wave48: np.ndarray, out_rate: int, native_rate: int) -> np.ndarray:
    """Delivered audio ``[S, C]`` at ``out_rate`` -> uint8 console samples at ``native_rate``."""
    w = torchaudio.functional.resample(torch.from_numpy(wave48[:, 0].copy()), out_rate, native_rate).numpy()
    return np.clip(np.round(w * 128.0 + 128.0), 0, 255).astype(np.uint8)


def rollout(pipe, ep: dict, start: int, context: int, frames: int, rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Prime with ``context`` real frames from ``start`` and generate ``frames`` more under key rows ``rows``
    (``[context + frames, K]``); returns generated video uint8 ``[frames, H, W, 3]`` and audio ``[S, C]``."""
    session = pipe.start(seed=seed, action_clock="stream", prime=False)
    sl = slice(start, start + context)
    session.prime(ep["frames"][sl], unit_audio(ep["audio"][sl]) if pipe.config.audio is not None else None, rows[:context])
    per_block = pipe.frames_per_chunk
    blocks = frames // per_block
    st = session.action_state
    events = events_for_rows(st.spec, rows[context : context + blocks * per_block], st.next_raw, st.held)
    video, audio = [], []
    for batch in split_by_block(st.spec, events, per_block, blocks, st.next_raw):
        chunk = session.step(actions=batch)
        video.append(chunk.video)
        if chunk.audio is not None:
            audio.append(chunk.audio)
    session.close()
    return np.concatenate(video), (np.concatenate(audio) if audio else None)


def uniform_steps(n: int) -> tuple[float, ...]:
    """``n`` denoising steps evenly spaced from 1000 (warped by the model's shift as its own are): a
    teacher's many-step sampler, or any model's with more steps than its config lists."""
    if n < 1:
        raise ValueError(f"denoising steps {n!r}: must be >= 1")
    return tuple(1000.0 * (1 - i / n) for i in range(n))


def starts_of(ep: dict, span: int, count: int, per_block: int) -> list[int]:
    """``count`` evenly spread starts (multiples of a block) whose span crosses no new game."""
    t = len(ep["frames"])
    cands = [s for s in range(0, t - span, per_block) if not ep["first"][s + 1 : s + span].any()]
    if not cands:
        return []
    return [cands[int(i)] for i in np.linspace(0, len(cands) - 1, count).round()]


def object_error(found: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Distances ``|found - real|`` over the frames where the emulator's object was found (``real`` not NaN);
    an object missing from a generated frame (NaN in ``found``) counts as far off (1e9 px)."""
    ok = ~np.isnan(real)
    return np.abs(np.nan_to_num(found[ok], nan=1e9) - real[ok])


def share_within(err: np.ndarray, tol: float) -> float:
    """Share of object errors ``[N]`` within ``tol`` px (NaN when there are none)."""
    return float((err <= tol).mean()) if err.size else float("nan")


def shares_within(err: np.ndarray) -> dict[str, float]:
    """Share of object errors ``[N]`` within each of ``REPORTED_TOLERANCES`` (keys like ``"3"``)."""
    return {f"{t:g}": share_within(err, t) for t in REPORTED_TOLERANCES}


def reference_table(data: str | Path, meta: dict, episodes: int | None = None) -> DynamicsTable:
    """The ``paddle_reference`` table fitted on the first ``episodes`` training episodes (None: all), positions only."""
    spec_g = game_spec(meta["game"])
    axis = spec_g.player_axis
    tracks, signs, firsts = [], [], []
    for rel in meta["episodes"]["train"][:episodes]:
        with np.load(Path(data) / rel) as e:
            tracks.append(locate_many(e["frames"], spec_g.player)[:, axis])
            signs.append(commanded_signs(spec_g, meta["action_names"], e["actions"]))
            firsts.append(e["first"].astype(bool))
    return fit_dynamics_table(tracks, signs, firsts)


def rollout_metrics(pipe, eps: list[dict], meta: dict, *, context: int, frames: int, starts: int, tol: float,
                    direction_blocks: int, seed: int = 0, reference: DynamicsTable | None = None, bar=None) -> dict:
    spec_g = game_spec(meta["game"])
    aspec = pipe.action_spec
    names = meta["action_names"]
    axis = spec_g.player_axis if hasattr(spec_g, "player_axis") else 0
    p16, p64, b16, b64, errors, gen_all, real_all, gen_audio, real_audio = [], [], [], [], [], [], [], [], []
    direction, ref_err, short_errors, found = [], [], [], []
    for e_i, ep in enumerate(eps):
        for s in starts_of(ep, context + frames, starts, pipe.frames_per_chunk):
            rows = key_rows(aspec, names, ep["actions"][s : s + context + frames])
            gen, wav = rollout(pipe, ep, s, context, frames, rows, seed=seed + e_i)
            real = ep["frames"][s + context : s + context + frames]
            last = np.repeat(ep["frames"][s + context - 1][None], frames, axis=0)
            p, b = psnr(gen, real), psnr(last, real)
            p16.append(p[:16].mean()); p64.append(p.mean()); b16.append(b[:16].mean()); b64.append(b.mean())
            real_pos = locate_many(ep["frames"][s : s + context + frames], spec_g.player)[:, axis]
            gen_pos = locate_many(gen, spec_g.player)[:, axis]
            errors.append(object_error(gen_pos, real_pos[context:]))
            short_errors.append(object_error(gen_pos[:16], real_pos[context : context + 16]))
            found.append(~np.isnan(gen_pos[~np.isnan(real_pos[context:])]))
            if reference is not None:
                signs = commanded_signs(spec_g, names, ep["actions"][s : s + context + frames - 1])
                ref_err.append(object_error(predict_track(reference, real_pos[:context], signs, frames), real_pos[context:]))
            gen_all.append(gen); real_all.append(real)
            if wav is not None:
                gen_audio.append(_to_console(wav, pipe.sample_rate, meta["sample_rate"]))
                real_audio.append(ep["audio"][s + context : s + context + frames].reshape(-1))
            if direction_blocks:
                direction.append(_direction(pipe, ep, s, context, direction_blocks, spec_g, axis, seed + e_i))
            tick(bar)
    err_all = np.concatenate(errors) if errors else np.zeros(0)
    err_16 = np.concatenate(short_errors) if short_errors else np.zeros(0)
    out = {
        "starts": len(p16), "context_frames": context, "rollout_frames": frames,
        "psnr": {"rollout_16": float(np.mean(p16)), "copy_last_16": float(np.mean(b16)),
                 f"rollout_{frames}": float(np.mean(p64)), f"copy_last_{frames}": float(np.mean(b64))},
        "action_following": {"tolerance_px": tol, "frames": int(err_all.size), "within_tolerance": share_within(err_all, tol),
                             "within_by_tolerance": shares_within(err_all),
                             "within_tolerance_16": share_within(err_16, tol),
                             "found": float(np.concatenate(found).mean()) if found else float("nan"),
                             "direction_blocks": direction_blocks,
                             "up_above_down": float(np.mean([d > 0 for d in direction])) if direction else float("nan"),
                             "mean_up_minus_down_px": float(np.mean(direction)) if direction else float("nan")},
    }
    if reference is not None:
        ref = np.concatenate(ref_err) if ref_err else np.zeros(0)
        out["paddle_reference"] = {"history": reference.history, "keys": len(reference.steps), "frames": int(ref.size),
                                   "within_tolerance": share_within(ref, tol),
                                   "within_by_tolerance": shares_within(ref)}
    if gen_audio:
        out["audio_visual"] = _av(np.concatenate(gen_all), np.concatenate(gen_audio), np.concatenate(real_all),
                                  np.concatenate(real_audio), spec_g, meta)
    return out


def next_block_following(pipe, eps: list[dict], meta: dict, *, context: int, starts: int, tol: float, seed: int = 0,
                         bar=None) -> dict:
    """Action following without compounding drift: from ``starts`` real histories per episode (``context``
    real frames primed), one block generated under the episode's own keys; the controlled object's error
    against the emulator's, next to holding the last real frame (which is right whenever it does not move)."""
    spec_g = game_spec(meta["game"])
    axis = spec_g.player_axis if hasattr(spec_g, "player_axis") else 0
    n = pipe.frames_per_chunk
    gen_err, copy_err = [], []
    for e_i, ep in enumerate(eps):
        for s in starts_of(ep, context + n, starts, n):
            rows = key_rows(pipe.action_spec, meta["action_names"], ep["actions"][s : s + context + n])
            gen, _ = rollout(pipe, ep, s, context, n, rows, seed=seed + e_i)
            real = locate_many(ep["frames"][s + context : s + context + n], spec_g.player)[:, axis]
            last = locate_many(ep["frames"][s + context - 1 : s + context], spec_g.player)[:, axis]
            gen_err.append(object_error(locate_many(gen, spec_g.player)[:, axis], real))
            copy_err.append(object_error(np.repeat(last, n), real))
            tick(bar)
    g = np.concatenate(gen_err) if gen_err else np.zeros(0)
    c = np.concatenate(copy_err) if copy_err else np.zeros(0)
    return {"tolerance_px": tol, "frames": int(g.size), "within_tolerance": share_within(g, tol),
            "copy_last_within_tolerance": share_within(c, tol),
            "median_error_px": float(np.median(np.minimum(g, 64.0))) if g.size else float("nan"),
            "copy_last_median_error_px": float(np.median(np.minimum(c, 64.0))) if c.size else float("nan")}


def _direction(pipe, ep, s, context, blocks, spec_g, axis, seed) -> float:
    """Paddle position (along its axis) after holding ArrowDown minus after ArrowUp, from one context
    (positive: ArrowUp leaves the paddle higher, i.e. at a smaller row)."""
    n = blocks * pipe.frames_per_chunk
    ends = {}
    for key in ("ArrowUp", "ArrowDown"):
        rows = key_rows(pipe.action_spec, ["NOOP"], np.zeros(context + n, np.int64))
        rows[context:, pipe.action_spec.keys.index(key)] = 1.0
        gen, _ = rollout(pipe, ep, s, context, n, rows, seed=seed)
        pos = locate_many(gen[-2:], spec_g.player)[:, axis]
        ends[key] = float(np.nanmean(pos)) if not np.isnan(pos).all() else float("nan")
    d = ends["ArrowDown"] - ends["ArrowUp"]
    return d if math.isfinite(d) else 0.0


def _av(gen, gen_audio, real, real_audio, spec_g, meta) -> dict:
    skip = meta["samples_per_step"] // SAMPLES_PER_FRAME
    def rates(frames, audio):
        n = min(len(frames), len(audio) // meta["samples_per_step"])
        on = onset_steps(audio[: n * meta["samples_per_step"]].reshape(n, -1), skip)
        ev = reversal_events(locate_many(frames[:n], spec_g.ball))
        return {"onsets_per_s": float(on.sum() / (n / meta["fps"])), "onsets_at_bounce": match_rate(on, ev, 1),
                "onsets_at_shifted_bounce": match_rate(on, np.roll(ev, 7), 1), "bounces_with_onset": match_rate(ev, on, 1)}
    return {"generated": rates(gen, gen_audio), "emulator": rates(real, real_audio)}


def stability(pipe, ep: dict, meta: dict, *, frames: int, context: int, drift_bound: float, seed: int = 0,
              bar=None) -> dict:
    """Stream ``frames`` frames with random held keys; mean colour drift, contrast and paddle presence."""
    spec_g = game_spec(meta["game"])
    rng = np.random.default_rng(seed)
    session = pipe.start(seed=seed, action_clock="stream", prime=False)
    rows = key_rows(pipe.action_spec, meta["action_names"], ep["actions"][:context])
    audio = unit_audio(ep["audio"][:context]) if pipe.config.audio is not None else None
    session.prime(ep["frames"][:context], audio, rows)
    means, contrast, found, t0 = [], [], [], time.perf_counter()
    keys, held_for = [], 0
    st = session.action_state
    for _ in range(frames // pipe.frames_per_chunk):
        if held_for <= 0:  # a random key set, held for a geometric number of blocks (mean 3)
            keys = [k for k in ("ArrowUp", "ArrowDown") if rng.random() < 0.4][:1]
            held_for = int(rng.geometric(1 / 3))
        held_for -= 1
        row = np.array([[k in keys for k in st.spec.keys]] * pipe.frames_per_chunk, np.float32)
        chunk = session.step(actions=events_for_rows(st.spec, row, st.next_raw, st.held))
        tick(bar)
        v = chunk.video
        means.append(v.reshape(len(v), -1, 3).mean(axis=1))
        contrast.append(v.reshape(len(v), -1).std(axis=1))
        found.append(~np.isnan(locate_many(v[-1:], spec_g.player)[:, 0]))
    session.close()
    means, contrast, found = np.concatenate(means), np.concatenate(contrast), np.concatenate(found)
    real = ep["frames"]
    real_mean = real.reshape(len(real), -1, 3).mean(axis=1).mean(axis=0)
    k = min(500, len(means) // 2)
    drift = float(np.abs(means[-k:].mean(axis=0) - real_mean).max())
    late_found = float(found[-max(1, len(found) // 10):].mean())
    return {"frames": int(len(means)), "seconds": time.perf_counter() - t0, "drift_bound": drift_bound,
            "emulator_mean_rgb": real_mean.round(2).tolist(), "first_mean_rgb": means[:k].mean(axis=0).round(2).tolist(),
            "last_mean_rgb": means[-k:].mean(axis=0).round(2).tolist(), "max_channel_drift": drift,
            "drift_ok": drift <= drift_bound, "min_frame_std": float(contrast.min()),
            "emulator_frame_std": float(real.reshape(len(real), -1).std(axis=1).mean()),
            "paddle_found_last_tenth": late_found,
            "collapsed": bool(contrast[-k:].mean() < 5.0 or late_found < 0.5)}


def tick(bar) -> None:
    if bar is not None:
        bar.update(1)


def progress_bar(progress: bool, desc: str, total: int, unit: str):
    """A progress bar on stderr (stdout carries the JSON), or None when ``progress`` is off."""
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"evaluate: {desc}", unit=unit, file=sys.stderr)


def _rollouts(eps: list[dict], span: int, starts: int, per_block: int) -> int:
    return sum(len(starts_of(ep, span, starts, per_block)) for ep in eps)


def evaluate(pipe, data: str | Path, *, teacher=None, episodes: int | None = None, starts: int = 4, context: int = 12,
             frames: int = 64, tol: float = 3.0, direction_blocks: int = 4, stability_frames: int = 10000,
             drift_bound: float = 12.0, seed: int = 0, rollouts: bool = True, next_block_starts: int = 16,
             reference_episodes: int | None = None, progress: bool = False) -> dict:
    meta, eps = load_episodes(data, "eval", episodes)
    kw = dict(context=context, frames=frames, starts=starts, tol=tol, direction_blocks=direction_blocks, seed=seed)
    t0 = time.perf_counter()
    out = {"model": pipe.name, "game": meta["game"], "episodes": len(eps)}
    n = pipe.frames_per_chunk

    def phase(desc: str, total: int, unit: str, fn):
        bar = progress_bar(progress, desc, total, unit)
        try:
            return fn(bar)
        finally:
            if bar is not None:
                bar.close()

    if rollouts:
        table = reference_table(data, meta, reference_episodes) if reference_episodes != 0 else None
        out.update(phase("rollouts", _rollouts(eps, context + frames, starts, n), "rollout",
                         lambda bar: rollout_metrics(pipe, eps, meta, **kw, reference=table, bar=bar)))
        if next_block_starts:
            out["next_block_following"] = phase(
                "next block", _rollouts(eps, context + n, next_block_starts, n), "start",
                lambda bar: next_block_following(pipe, eps, meta, context=context, starts=next_block_starts, tol=tol,
                                                 seed=seed, bar=bar))
    if teacher is not None and rollouts:
        tm = phase("teacher rollouts", _rollouts(eps, context + frames, starts, teacher.frames_per_chunk), "rollout",
                   lambda bar: rollout_metrics(teacher, eps, meta, **{**kw, "direction_blocks": 0}, bar=bar))
        out["teacher"] = {"model": teacher.name, "steps": len(teacher.timesteps), "psnr": tm["psnr"],
                          "within_tolerance": tm["action_following"]["within_tolerance"],
                          "student_minus_teacher_16": out["psnr"]["rollout_16"] - tm["psnr"]["rollout_16"],
                          f"student_minus_teacher_{frames}": out["psnr"][f"rollout_{frames}"] - tm["psnr"][f"rollout_{frames}"]}
    if stability_frames:
        out["stability"] = phase("stability", stability_frames // n, "block",
                                 lambda bar: stability(pipe, eps[0], meta, frames=stability_frames, context=context,
                                                       drift_bound=drift_bound, seed=seed, bar=bar))
    out["seconds"] = time.perf_counter() - t0
    return out
