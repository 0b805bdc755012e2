"""Counterfactual action following: the model and the emulator, branched from the same exact state, under
the same fixed keys.

``python -m streamgen.training.counterfactual --model world --data data/atari/pong --split val``

For each context of a fresh ``val`` or ``test`` episode (``counterfactual_data.py``: recorded here, branched at
the context's end, de-duplicated against the training frames and, for ``test``, against the validation
split), the session is primed with the ``context`` real frames, sound and keys and then driven with the
branch's keys; the emulator shows what those keys really do. Measured over the ``frames`` generated frames:

- ``paddle``: a frame counts only if the generated paddle is shape-valid (one run of rows with the real
  sprite's mass and length, ``object_shape.py``) and within the tolerance of the emulator's; frames whose
  real paddle is against a wall (within ``WALL_PX`` of the furthest positions seen in training) are
  reported apart (``wall``); also over the first 16 frames;
- ``dynamics_reference``: the pixel-free table of the paddle's dynamics (``paddle_reference.py``) keyed on
  the frame-skip phase known from the game's history up to the context's end, rolled out under the same
  keys; ``paddle_reference`` the same table without the phase (the old reference); ``copy_last`` the last
  context position held;
- ``ball``: the share of frames where the emulator shows the ball in which the generated one is drawn
  shape-valid, and over the first 16 frames the share within the tolerance and the mean error of the drawn
  ones, next to copy-last's (the last context frame held);
- ``old``: the earlier measures on the same frames (PSNR of the first 16 / all frames next to copy-last; the
  colour centroid within the tolerance with a missing paddle counted as far off; paddle found).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .counterfactual_data import Branch, context_ok, dedup, frame_hashes, record_split, training_hashes
from .data.games import game_spec
from .data.locate import locate_many
from .evaluate import key_rows, object_error, psnr, rollout, share_within, shares_within, uniform_steps
from .object_shape import Shapes, ShapeRef, ball_shapes, calibrate, measure
from .paddle_reference import commanded_signs, fit_dynamics_table, infer_phases, predict_track

# A real paddle this close (px) to the furthest positions seen in training is against a wall: the sprite is
# cut by the playfield's edge there, so its shape check and its motion differ from the open field's.
WALL_PX = 2.0
SHORT = 16  # frames of the short horizon (the ball's position error, the paddle's early share)


def _tracks(frames_chw: np.ndarray, spec) -> np.ndarray:
    return measure(frames_chw.transpose(0, 2, 3, 1), spec.player, spec.player_axis).position  # [T,3,H,W] -> [T,H,W,3]


def fit_references(data: str | Path, meta: dict):
    """The old table and the phase-aware one, both fitted on every training episode."""
    spec = game_spec(meta["game"])
    tracks, signs, firsts = [], [], []
    for rel in meta["episodes"]["train"]:
        with np.load(Path(data) / rel) as e:
            tracks.append(locate_many(e["frames"], spec.player)[:, spec.player_axis])
            signs.append(commanded_signs(spec, meta["action_names"], e["actions"]))
            firsts.append(e["first"].astype(bool))
    phases = [infer_phases(y, u, f) for y, u, f in zip(tracks, signs, firsts)]
    return fit_dynamics_table(tracks, signs, firsts), fit_dynamics_table(tracks, signs, firsts, phases=phases)


def splits(data: str | Path, split: str, *, episodes: int, steps: int, context: int, frames: int,
           per_episode: int, key_seed: int = 0) -> tuple[list[Branch], dict]:
    """The kept branches of ``split`` and the de-duplication counts (test: also against the kept val split)."""
    meta = json.loads((Path(data) / "meta.json").read_text())
    seen = training_hashes(data, meta)
    kw = dict(episodes=episodes, steps=steps, context=context, frames=frames, per_episode=per_episode, key_seed=key_seed)
    val = [b for b in record_split(meta, "val", **kw) if context_ok(b, context)]
    val_kept, val_dropped, val_repeats = dedup(val, seen)
    info = {"training_frames": len(seen), "val_branches": len(val), "val_dropped": val_dropped,
            "val_repeated_frames": val_repeats}
    if split == "val":
        return val_kept, info
    for b in val:  # the test split must not score what validation showed or primed
        seen.update(frame_hashes(b.frames))
        seen.update(frame_hashes(b.episode_data["frames"][b.end - context + 1 : b.end + 1]))
    test = [b for b in record_split(meta, "test", **kw) if context_ok(b, context)]
    test_kept, test_dropped, test_repeats = dedup(test, seen)
    info.update(test_branches=len(test), test_dropped=test_dropped, test_repeated_frames=test_repeats)
    return test_kept, info


def _within(err: np.ndarray, ok: np.ndarray, tol: float) -> float:
    return float(((err <= tol) & ok).mean()) if err.size else float("nan")


def _paddle_block(err: np.ndarray, ok: np.ndarray, tol: float) -> dict:
    """Shares within each tolerance of frames whose generated paddle is shape-valid (``ok``)."""
    gated = np.where(ok, err, np.inf)
    return {"frames": int(err.size), "within_tolerance": _within(err, ok, tol), "shape_valid": float(ok.mean()) if ok.size else float("nan"),
            "within_by_tolerance": shares_within(gated)}


def _ball(gen: np.ndarray, real: np.ndarray, last: np.ndarray, spec):
    """Ball shapes of generated, real and copy-last frames, and where the emulator shows the ball ``[F]``."""
    (gr, gc), (rr, rc), (lr, lc) = ball_shapes(gen, spec.ball), ball_shapes(real, spec.ball), ball_shapes(last, spec.ball)
    shown = ~np.isnan(rr.position)
    return shown, (gr, gc), (rr, rc), (lr, lc)


def _ball_valid(rows: Shapes, cols: Shapes, ref: tuple[ShapeRef, ShapeRef]) -> np.ndarray:
    return rows.valid(ref[0]) & cols.valid(ref[1])


def measure_model(pipe, branches: list[Branch], meta: dict, *, context: int, tol: float, tables, seed: int = 0,
                  progress: bool = False) -> dict:
    spec = game_spec(meta["game"])
    axis = spec.player_axis
    names = meta["action_names"]
    old_table, phased = tables
    recs, per_episode = [], {}
    for k, b in enumerate(branches):
        ep = b.episode_data
        s = b.end - context + 1
        view = {"frames": ep["frames"].transpose(0, 2, 3, 1), "audio": ep["audio"]}  # [T,3,H,W] -> [T,H,W,3]
        acts = np.concatenate([ep["actions"][s : b.end].astype(np.int64), b.actions, [0]])
        rows = key_rows(pipe.action_spec, names, acts)
        gen, _ = rollout(pipe, view, s, context, len(b.actions), rows, seed=seed + k)
        real = b.frames.transpose(0, 2, 3, 1)  # [F,3,H,W] -> [F,H,W,3]
        ctx = view["frames"][s : b.end + 1]
        if id(ep) not in per_episode:  # the phase known at each step, from the game's positions and keys
            signs_all = commanded_signs(spec, names, ep["actions"])
            per_episode[id(ep)] = (signs_all, infer_phases(_tracks(ep["frames"], spec), signs_all, ep["first"].astype(bool)))
        signs_ep, phases = per_episode[id(ep)]
        phase = int(phases[b.end])
        signs = np.concatenate([signs_ep[s : b.end], commanded_signs(spec, names, b.actions)])
        ctx_pos = locate_many(ctx, spec.player)[:, axis]
        recs.append(dict(gen=gen, real=real, last=np.repeat(ctx[-1:], len(real), 0), phase=phase, parity=b.parity, new=b.new,
                         ref=predict_track(phased, ctx_pos, signs, len(real), phase),
                         old_ref=predict_track(old_table, ctx_pos, signs, len(real))))
        if progress:
            print(f"counterfactual: {k + 1}/{len(branches)}", file=sys.stderr)
    return summarise(recs, spec, tol, (old_table.low, old_table.high))


def summarise(recs: list[dict], spec, tol: float, extremes: tuple[float, float]) -> dict:
    """Every measure of the module docstring over rollout records (generated, real, copy-last frames, references)."""
    axis = spec.player_axis
    real_sh = [measure(r["real"], spec.player, axis) for r in recs]
    gen_sh = [measure(r["gen"], spec.player, axis) for r in recs]
    real_pos = np.concatenate([s.position for s in real_sh])
    wall = (real_pos <= extremes[0] + WALL_PX) | (real_pos >= extremes[1] - WALL_PX)
    ref = calibrate(Shapes(*(np.concatenate([getattr(s, f) for s in real_sh]) for f in ("position", "mass", "extent", "runs"))), ~wall)
    found = ~np.isnan(real_pos)
    gen_pos = np.concatenate([s.position for s in gen_sh])
    valid = np.concatenate([s.valid(ref) for s in gen_sh])
    err = np.abs(np.nan_to_num(gen_pos, nan=1e9) - real_pos)
    n = len(recs[0]["real"])
    early = np.tile(np.arange(n) < SHORT, len(recs))
    new = np.concatenate([r["new"] for r in recs])  # scored: target frames not seen in training (or validation)
    open_, at_wall = found & ~wall & new, found & wall & new
    real_valid = np.concatenate([s.valid(ref) for s in real_sh])
    out = {"contexts": len(recs), "frames_per_context": n, "tolerance_px": tol, "frames_scored": int(new.sum()),
           "shape_ref": {"mass": ref.mass, "extent": ref.extent, "emulator_shape_valid_open": float(real_valid[open_].mean())},
           "paddle": {"open": _paddle_block(err[open_], valid[open_], tol),
                      "open_first_16": _paddle_block(err[open_ & early], valid[open_ & early], tol),
                      "wall": _paddle_block(err[at_wall], valid[at_wall], tol)}}
    for name, key in (("dynamics_reference", "ref"), ("paddle_reference", "old_ref")):
        e = np.abs(np.concatenate([r[key] for r in recs]) - real_pos)
        out[name] = {"open": share_within(e[open_], tol), "wall": share_within(e[at_wall], tol),
                     "open_by_tolerance": shares_within(e[open_])}
    last_pos = np.concatenate([np.repeat(measure(r["last"][:1], spec.player, axis).position, n) for r in recs])
    e = np.abs(last_pos - real_pos)
    out["copy_last"] = {"open": share_within(e[open_], tol), "wall": share_within(e[at_wall], tol)}
    phases = np.array([r["phase"] for r in recs])
    out["phase_known"] = float((phases >= 0).mean())
    out["phase_agrees_with_emulator"] = _phase_agreement(recs)
    if spec.ball is not None:
        out["ball"] = _ball_summary(recs, spec, tol, n)
    out["old"] = _old(recs, spec, tol)
    return out


def _phase_agreement(recs: list[dict]) -> float:
    """How often the inferred phase bit matches the emulator's frame parity (up to which bit value means which)."""
    known = [(r["phase"], r["parity"]) for r in recs if r["phase"] >= 0]
    if not known:
        return float("nan")
    same = np.mean([p == q for p, q in known])
    return float(max(same, 1 - same))


def _ball_summary(recs: list[dict], spec, tol: float, n: int) -> dict:
    per = [_ball(r["gen"], r["real"], r["last"][:1], spec) for r in recs]
    real_rows = Shapes(*(np.concatenate([getattr(p[2][0], f) for p in per]) for f in ("position", "mass", "extent", "runs")))
    real_cols = Shapes(*(np.concatenate([getattr(p[2][1], f) for p in per]) for f in ("position", "mass", "extent", "runs")))
    shown = np.concatenate([p[0] for p in per]) & np.concatenate([r["new"] for r in recs])
    if not ((real_rows.runs == 1) & ~np.isnan(real_rows.position)).any() or not shown.any():
        nan = float("nan")  # a short split whose scored frames never show the ball: nothing to measure
        return {"frames_shown": 0, "drawn_share": nan,
                "first_16": {"frames": 0, "within_tolerance": nan, "copy_last_within_tolerance": nan,
                             "mean_error_px_drawn": nan, "copy_last_mean_error_px": nan}}
    ref = (calibrate(real_rows), calibrate(real_cols))
    drawn = np.concatenate([_ball_valid(*p[1], ref) for p in per])
    gen_xy = np.concatenate([np.stack([p[1][0].position, p[1][1].position], 1) for p in per])  # [N, 2]
    real_xy = np.stack([real_rows.position, real_cols.position], 1)  # [N, 2]
    last_xy = np.concatenate([np.repeat(np.stack([p[3][0].position, p[3][1].position], 1), n, 0) for p in per])
    early = np.tile(np.arange(n) < SHORT, len(recs)) & shown
    e_gen = np.linalg.norm(np.nan_to_num(gen_xy, nan=1e9) - real_xy, axis=1)
    e_last = np.linalg.norm(np.nan_to_num(last_xy, nan=1e9) - real_xy, axis=1)
    ok_gen = early & drawn
    ok_last = early & ~np.isnan(last_xy[:, 0])
    return {"frames_shown": int(shown.sum()), "drawn_share": float(drawn[shown].mean()) if shown.any() else float("nan"),
            "first_16": {"frames": int(early.sum()), "within_tolerance": share_within(np.where(drawn, e_gen, np.inf)[early], tol),
                         "copy_last_within_tolerance": share_within(e_last[early], tol),
                         "mean_error_px_drawn": float(e_gen[ok_gen].mean()) if ok_gen.any() else float("nan"),
                         "copy_last_mean_error_px": float(e_last[ok_last].mean()) if ok_last.any() else float("nan")}}


def _old(recs: list[dict], spec, tol: float) -> dict:
    """The earlier measures (``evaluate.py``) on the same frames, repeats of training frames included (as before)."""
    p = [psnr(r["gen"], r["real"]) for r in recs]
    c = [psnr(r["last"], r["real"]) for r in recs]
    errs = [object_error(locate_many(r["gen"], spec.player)[:, spec.player_axis],
                         locate_many(r["real"], spec.player)[:, spec.player_axis]) for r in recs]
    err = np.concatenate(errs)
    return {"psnr_16": float(np.mean([x[:SHORT].mean() for x in p])), "copy_last_psnr_16": float(np.mean([x[:SHORT].mean() for x in c])),
            "psnr_all": float(np.mean([x.mean() for x in p])), "copy_last_psnr_all": float(np.mean([x.mean() for x in c])),
            "centroid_within_tolerance": share_within(err, tol), "centroid_by_tolerance": shares_within(err),
            "found": float((err < 1e9).mean()) if err.size else float("nan")}


def report(pipe, data: str | Path, split: str, *, episodes: int, steps: int, per_episode: int, context: int = 12,
           frames: int = 64, tol: float = 3.0, seed: int = 0, progress: bool = True) -> dict:
    """The counterfactual measure of ``pipe`` on a fresh ``split`` ("val": every choice; "test": once per
    shipped model), beside the dynamics references and copy-last (JSON-ready)."""
    import torch

    t0 = time.perf_counter()
    meta = json.loads((Path(data) / "meta.json").read_text())
    branches, info = splits(data, split, episodes=episodes, steps=steps, context=context, frames=frames,
                            per_episode=per_episode)
    with torch.inference_mode():
        out = measure_model(pipe, branches, meta, context=context, tol=tol, tables=fit_references(data, meta),
                            seed=seed, progress=progress)
    return {"split": split, **info, **out, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Counterfactual action following of a world model (JSON on stdout).")
    p.add_argument("--model", default="world")
    p.add_argument("--data", default="data/atari/pong", help="the recorded dataset (its training episodes are de-duplicated against)")
    p.add_argument("--split", choices=("val", "test"), default="val", help="test: touch once per shipped model")
    p.add_argument("--episodes", type=int, default=4, help="fresh episodes of the split (default 4)")
    p.add_argument("--steps", type=int, default=600, help="steps per episode (default 600)")
    p.add_argument("--per-episode", type=int, default=8, help="contexts branched per episode (default 8)")
    p.add_argument("--context", type=int, default=12)
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--tolerance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared 2-core machine)")
    p.add_argument("--denoising-steps", type=int, default=None,
                   help="sample with this many steps, evenly spaced from 1000 (a teacher's many-step sampler; default: "
                        "the model's own steps)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.denoising_steps is not None and a.denoising_steps < 1:
        print(f"--denoising-steps {a.denoising_steps}: must be >= 1", file=sys.stderr)
        return 2
    if not (Path(a.data) / "meta.json").is_file():
        print(f"--data {a.data}: no dataset there (no meta.json); build it with python -m streamgen.training.data.atari",
              file=sys.stderr)
        return 2
    import torch

    from streamgen.pipeline import load_pipeline

    if a.threads:
        torch.set_num_threads(a.threads)
    over = {"denoising_steps": uniform_steps(a.denoising_steps)} if a.denoising_steps else {}
    pipe = load_pipeline(a.model, device="cpu", overrides=over)
    out = {"model": a.model, "denoising_steps": list(pipe.config.denoising_steps), **report(pipe, a.data, a.split, episodes=a.episodes, steps=a.steps, per_episode=a.per_episode,
                                      context=a.context, frames=a.frames, tol=a.tolerance, seed=a.seed)}
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
