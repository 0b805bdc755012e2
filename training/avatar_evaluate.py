"""``streamgen evaluate --model avatar``: a streaming avatar on held-out voices, texts and identities.

Measures (``avatar_eval.py``; docs/models.md, "Avatars", where the identity bound was stated first):

- ``sync``: every clip of the split streamed as a client does it (``set_reference``, then the clip's
  speech through ``session.step(audio=...)``, pushed ahead), scored by ``mouth_sync`` and pooled by
  ``sync_summary``: Pearson correlation, error in px, lag in pixel and latent frames;
- ``psnr``: the generated frames against the real ones (the first ``teacher_frames`` of every clip);
- ``teacher`` (with a teacher): the bidirectional teacher sampled on the same clips (``teacher_clip``), its
  PSNR, its lip sync and the student's margin;
- ``long``: one stream of ``frames`` frames driven by the split's speech in a loop: face-colour distance,
  detail, change and mouth correlation per window of 100 frames (``window_stats``), the worst window over
  the first 5,000 frames against the bound, and the first and last windows side by side.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from streamgen.audio_features import as_pcm
from streamgen.samplers import add_noise, euler_step, euler_timesteps

from .avatar_eval import face_colour_distance, face_mask, mouth_sync, sync_summary, window_stats
from .conditioning import Cond, frame_timesteps, null_audio
from .data.avatar import load_clip
from .data.avatar_faces import measure_mouth
from .data.avatar_latents import encode_clip
from .evaluate import progress_bar, tick
from .losses import guided
from .metrics import psnr
from .modalities import VIDEO, predict

IDENTITY_BOUND = 12.0  # RGB distance, stated before any model was measured (docs/models.md)
IDENTITY_FRAMES = 5000  # the "identity kept over 5,000 frames"
WINDOW = 100  # frames per window of the long stream
TEACHER_LATENT_FRAMES = 16  # the teacher's episodes: the reference block + 14 talking latent frames


def load_split(data: str | Path, split: str, clips: int | None = None) -> tuple[dict, list[dict]]:
    """The dataset's meta and the clips of ``split`` (the first ``clips``; None = all), each with its
    identity's skin colour under ``skin``."""
    folder = Path(data)
    meta = json.loads((folder / "meta.json").read_text())
    files = sorted((folder / split).glob("clip_*.npz"))[:clips]
    if not files:
        raise ValueError(f"{folder / split}: no clip_*.npz files")
    out = []
    for f in files:
        clip = load_clip(f)
        clip["skin"] = meta["identities"][split][clip["info"]["identity"]]["skin"]
        out.append(clip)
    return meta, out


def block_samples(pipe) -> int:
    """Speech samples of one block (the pipeline's ``frames_per_block`` latent frames)."""
    return pipe.config.frames_per_block * pipe.config.speech_samples_per_frame


def stream_clip(pipe, clip: dict, frames: int | None = None, seed: int = 0) -> np.ndarray:
    """``frames`` frames (default the clip's) uint8 ``[T, H, W, 3]`` streamed from the clip's reference and
    speech; the whole speech goes in with the first block (ahead of every frame, as a client may send it)."""
    frames = len(clip["frames"]) if frames is None else frames
    session = pipe.start(seed=seed, prime=False)
    session.set_reference(clip["reference"])
    out, pcm = [], clip["audio"]
    while sum(len(v) for v in out) < frames:
        out.append(session.step(audio=pcm).video)
        pcm = None
    session.close()
    return np.concatenate(out)[:frames]


@torch.no_grad()
def teacher_clip(teacher, decoder, clip: dict, *, steps: int = 24, guidance: float = 2.0, seed: int = 0) -> np.ndarray:
    """The bidirectional ``teacher`` on the clip's first episode: Euler over ``steps`` with audio guidance
    (``guidance``; 1 = none), the reference block replaced at every step by the real reference latents
    noised to the current time (so the sample is the teacher's for this identity). -> uint8 talking frames
    ``[(TEACHER_LATENT_FRAMES - sink) * tu, H, W, 3]``, decoded by ``decoder`` after the reference block."""
    cfg = teacher.config
    ep = encode_clip(decoder.ae, cfg, clip, TEACHER_LATENT_FRAMES)[0]
    x0 = ep["latents"][None].float()  # [1, F, C, h, w]
    sink, f = cfg.sink_frames, x0.shape[1]
    batch = {VIDEO: x0, "audio_in": ep["audio_in"][None].float()}  # audio_in [1, F, R, D]
    cond = Cond(teacher.encode_text(torch.zeros(1, cfg.text_len, cfg.text_dim)), {"audio_in": batch["audio_in"]},
                num_frames=f)
    uncond = Cond(cond.text_kv, {"audio_in": null_audio(batch)["audio_in"]}, num_frames=f)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x0.shape, generator=g)
    ref_noise = torch.randn(x0[:, :sink].shape, generator=g)  # [1, sink, C, h, w]
    ts = euler_timesteps(steps, cfg.shift)
    for t, t_next in zip(ts[:-1], ts[1:]):
        x[:, :sink] = add_noise(x0[:, :sink], ref_noise, t)
        tt = frame_timesteps(t, 1, f, x.device)  # [1, F]
        vc = predict(teacher, {VIDEO: x}, tt, cond)[VIDEO]
        v = vc if guidance == 1 else guided(vc, predict(teacher, {VIDEO: x}, tt, uncond)[VIDEO], guidance)
        x = euler_step(x, v, t, t_next)
    x[:, :sink] = x0[:, :sink]
    video, _ = decoder.decode(x, decoder.init_state())  # [1, F * tu, 3, H, W] in [0, 1]
    frames = (video[0].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # -> [F * tu, H, W, 3]
    return frames[sink * cfg.temporal_upsample :]


def long_stream(pipe, clips: list[dict], frames: int, *, seed: int = 0, bar=None) -> dict:
    """One stream of ``frames`` frames with the first clip's identity, fed the clips' speech in a loop, one
    block of audio per block plus the look-ahead; per-window measures and the identity verdict."""
    clip = clips[0]
    speech = np.concatenate([as_pcm(c["audio"]).numpy() for c in clips])  # [S] float32
    truth = np.concatenate([c["mouth_open"] for c in clips])  # [T]: one pixel frame per 1,000 samples of the speech
    n, ahead = block_samples(pipe), pipe.config.audio_in.radius * pipe.config.speech_samples_per_frame
    session = pipe.start(seed=seed, prime=False)
    session.set_reference(clip["reference"])
    chunks, sent, t0 = [], 0, time.perf_counter()
    while sum(len(v) for v in chunks) < frames:
        upto = len(chunks) * n + n + ahead  # samples this block and its look-ahead need
        idx = np.arange(sent, upto) % len(speech)
        chunks.append(session.step(audio=speech[idx]).video)
        sent = upto
        tick(bar)
    session.close()
    video = np.concatenate(chunks)[:frames]  # [T, H, W, 3]
    seconds = time.perf_counter() - t0
    mask = face_mask(clip["reference"], clip["skin"], clip["reference_mouth"])
    centre = clip["mouth_centre"].mean(axis=0)
    mouth = measure_mouth(video, np.repeat(centre[None], len(video), 0), clip["reference"], clip["reference_mouth"])
    rows = window_stats(video, clip["reference"], mask, mouth, truth[np.arange(len(video)) % len(truth)], WINDOW)
    head = [r for r in rows if r["start"] + WINDOW <= IDENTITY_FRAMES]
    worst = max(r["face_distance"] for r in head)
    ref_detail = float(clip["reference"].astype(np.float32).std())
    late = rows[-max(1, len(rows) // 10):]
    return {
        "frames": int(len(video)), "seconds": seconds, "identity_bound": IDENTITY_BOUND,
        "identity_worst_window_5000": worst, "identity_ok": bool(worst <= IDENTITY_BOUND),
        "identity_worst_window_all": max(r["face_distance"] for r in rows),
        "first_frame_face_distance": float(face_colour_distance(video[:1], clip["reference"], mask)[0]),
        "reference_detail": ref_detail,
        "first_window": rows[0], "last_window": rows[-1],
        "late_detail": float(np.mean([r["detail"] for r in late])), "late_change": float(np.mean([r["change"] for r in late])),
        "late_mouth_pearson": float(np.nanmean([r.get("mouth_pearson", np.nan) for r in late])),
        "collapsed": bool(np.mean([r["detail"] for r in late]) < 0.5 * ref_detail
                          or np.mean([r["change"] for r in late]) < 0.05),
        "windows": rows,
    }


def evaluate_avatar(pipe, data: str | Path, *, split: str = "val", clips: int | None = None, frames: int = 10000,
                    teacher=None, teacher_steps: int = 24, teacher_guidance: float = 2.0, seed: int = 0,
                    progress: bool = True) -> dict:
    """The avatar measures on ``split`` (``teacher``: a bidirectional network with the same config, sampled
    on the same clips; ``frames``: the long stream's length, 0 = skip)."""
    meta, held = load_split(data, split, clips)
    tu = pipe.config.temporal_upsample
    span = (TEACHER_LATENT_FRAMES - pipe.config.sink_frames) * tu  # frames the teacher comparison covers
    out: dict = {"model": pipe.name, "split": split, "clips": len(held), "voices": sorted({c["info"]["voice"] for c in held}),
                 "identities": sorted({c["info"]["identity"] for c in held})}
    bar = progress_bar(progress, f"{split} clips", len(held), "clip")
    results, psnrs, t0 = [], [], time.perf_counter()
    generated = []
    for i, clip in enumerate(held):
        video = stream_clip(pipe, clip, seed=seed + i)
        generated.append(video[:span])
        results.append(mouth_sync(video, clip))
        psnrs.append(float(psnr(video[:span], clip["frames"][:span]).mean()))
        tick(bar)
    if bar is not None:
        bar.close()
    sync = sync_summary(results)
    out["sync"] = {**sync, "lag_latent_frames": sync["lag_frames"] / tu, "seconds": time.perf_counter() - t0}
    out["psnr"] = {"frames": span, "mean": float(np.mean(psnrs))}
    if teacher is not None:
        bar = progress_bar(progress, "teacher clips", len(held), "clip")
        t_results, t_psnrs = [], []
        for i, clip in enumerate(held):
            video = teacher_clip(teacher, pipe.decoder, clip, steps=teacher_steps, guidance=teacher_guidance, seed=seed + i)
            t_results.append(mouth_sync(video, clip))
            t_psnrs.append(float(psnr(video, clip["frames"][:span]).mean()))
            tick(bar)
        if bar is not None:
            bar.close()
        t_sync = sync_summary(t_results)
        out["teacher"] = {"steps": teacher_steps, "guidance": teacher_guidance, "psnr": float(np.mean(t_psnrs)),
                          "sync": t_sync, "student_minus_teacher_psnr": out["psnr"]["mean"] - float(np.mean(t_psnrs))}
    if frames:
        bar = progress_bar(progress, "long stream", -(-frames // pipe.frames_per_chunk), "block")
        out["long"] = long_stream(pipe, held, frames, seed=seed, bar=bar)
        if bar is not None:
            bar.close()
    return out
