"""The avatar teacher recipe trains on a tiny synthesised set (espeak-ng speech, drawn faces, a random
video autoencoder): its episodes load, the speech windows reach the model, and the loss decreases."""
import json

import numpy as np
import torch
from safetensors.torch import save_file

from streamgen.presets import preset
from streamgen.decoders.video_autoencoder import VideoAEConfig, VideoAutoencoder
from streamgen.training.avatar_recipes import avatar_config
from streamgen.training.data.avatar import build_dataset, load_clip
from streamgen.training.data.avatar_latents import encode_clip
from streamgen.training.trainer import Trainer

TINY = ["model_overrides.dim=32", "model_overrides.num_heads=2", "model_overrides.ffn_dim=64",
        "model_overrides.num_layers=1"]


def test_teacher_recipe_learns_on_a_tiny_synthesised_set(tmp_path):
    build_dataset(tmp_path / "data", {"train": 3, "val": 1, "test": 1}, seed=3,
                  identities={"train": 2, "val": 1, "test": 1}, progress=False)
    torch.manual_seed(0)
    ae = VideoAutoencoder(VideoAEConfig(channels=(4, 8, 8))).eval()
    cfg = preset("avatar")
    lat = tmp_path / "latents"
    lat.mkdir()
    episodes = 0
    for i in range(3):
        clip = load_clip(tmp_path / "data" / "train" / f"clip_{i:05d}.npz")
        for j, ep in enumerate(encode_clip(ae, cfg, clip, clip_frames=8)):
            assert ep["latents"].shape == (8, 4, 16, 16)
            assert ep["audio_in"].shape == (8, cfg.audio_in.window_tokens, cfg.speech_token_dim)
            assert torch.equal(ep["audio_in"][0], ep["audio_in"][1])  # the reference block hears silence
            save_file(ep, str(lat / f"ep_{i}_{j}.safetensors"))
            episodes += 1
    assert episodes >= 3
    run = avatar_config("teacher", TINY + [f"data.source={lat}", "data.num_frames=8", "train.steps=40",
                                           "train.batch=4", "train.lr=3e-3", "train.warmup=0", "train.lr_schedule=constant",
                                           "train.checkpoint_every=0", "train.log_every=1", "train.ema_start=10"])
    trainer = Trainer(run, tmp_path / "run", progress=False)
    assert trainer.model_config.audio_in is not None
    trainer.train()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 40 and all(np.isfinite(losses))
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.8 * first, (first, last)
