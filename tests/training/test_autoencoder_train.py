"""Autoencoder training on a tiny real ale-py dataset: finite, falling losses; exact resume."""
import json
import math

import pytest
import torch
from safetensors import safe_open

from streamgen.decoders.audio_autoencoder import AudioAutoencoder
from streamgen.decoders.video_autoencoder import VideoAutoencoder
from streamgen.training.ae_eval import evaluate
from streamgen.training.autoencoder import AETrainConfig, audio_loss, build_models, train, video_loss
from streamgen.training.data.clips import AtariClips
from streamgen.training.data.atari import build_dataset

SMALL = dict(batch=2, clip_steps=2, train_crop=16, warmup=1, lr=3e-3, log_every=1, stats_clips=4,
             video={"channels": (8, 8, 16)}, audio={"channels": (8, 8, 8, 16)})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ae") / "pong"
    build_dataset("pong", root, episodes=1, steps_per_episode=40, seed=5, eval_episodes=1, progress=False)
    return root


def _log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _fixed_losses(models, clips, cfg):
    """Losses on a fixed set of clips, without latent noise (batches differ a lot in sound)."""
    batch = clips.batch(range(0, len(clips), 4))
    gen = torch.Generator().manual_seed(0)
    quiet = AETrainConfig(**{**cfg.__dict__, "latent_noise": 0.0})
    with torch.no_grad():
        return (float(video_loss(models["video"], batch["frames"], quiet, gen)[0]),
                float(audio_loss(models["audio"], batch["audio"], quiet, gen)[0]))


def test_losses_finite_and_falling(data, tmp_path):
    out = tmp_path / "run"
    cfg = AETrainConfig(data=str(data), out=str(out), steps=16, ckpt_every=8, **SMALL)
    clips = AtariClips(cfg.data, "train", cfg.clip_steps)
    before = _fixed_losses(build_models(cfg, clips.meta), clips, cfg)  # the same seeded init
    after = _fixed_losses(train(cfg, progress=False), clips, cfg)
    log = _log(out)
    assert len(log) == 16
    for key in ("video_loss", "audio_loss"):
        assert all(math.isfinite(r[key]) for r in log)
    assert after[0] < before[0] and after[1] < before[1], (before, after)
    assert all(r["frames_per_s"] > 0 and r["eta_s"] >= 0 for r in log)
    # Exported models load through the library and carry measured latent statistics.
    v = VideoAutoencoder.load(out / "video_ae.safetensors")
    a = AudioAutoencoder.load(out / "audio_ae.safetensors")
    assert v.cfg.channels == (8, 8, 16) and a.cfg.channels == (8, 8, 8, 16)
    assert not torch.equal(v.latent_std, torch.ones_like(v.latent_std))
    assert torch.isfinite(a.latent_mean).all()
    # The held-out evaluation runs on the trained files and reports finite numbers.
    res = evaluate(out, data, clip_steps=4, speed_seconds=0.3)
    assert res["eval_frames"] == 40 and 0 < res["video_psnr_db"] <= 60
    assert res["video_decode_fps_1thread"] > 0 and res["audio_decode_x_realtime_1thread"] > 0
    assert (out / "eval.json").exists()


def _ckpt(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_resume_gives_identical_weights(data, tmp_path):
    cfg_a = AETrainConfig(data=str(data), out=str(tmp_path / "a"), steps=6, ckpt_every=2, **SMALL)
    cfg_b = AETrainConfig(data=str(data), out=str(tmp_path / "b"), steps=6, ckpt_every=2, **SMALL)
    train(cfg_a, progress=False)
    train(cfg_b, progress=False, stop_at=4)  # "killed" right after the step-4 checkpoint
    mid, meta = _ckpt(tmp_path / "b" / "ckpt_latest.safetensors")
    assert meta["step"] == "4"
    train(cfg_b, progress=False)  # a fresh call resumes from the checkpoint
    wa, ma = _ckpt(tmp_path / "a" / "ckpt_latest.safetensors")
    wb, mb = _ckpt(tmp_path / "b" / "ckpt_latest.safetensors")
    assert ma["step"] == mb["step"] == "6"
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # The resumed part really trained (weights moved after step 4), optimiser state included.
    assert any(not torch.equal(mid[k], wb[k]) for k in wb if ".model." in k)
    assert any("_opt." in k for k in wb)
