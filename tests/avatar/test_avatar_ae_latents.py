"""The avatar's autoencoder trainer runs and exports, and the latent encoder turns the set into the
teacher's episodes (reference block first, speech windows, mouth truth) that the trainer's data source loads."""
import torch

from streamgen.decoders.video_autoencoder import VideoAutoencoder
from streamgen.pipeline import model_config
from streamgen.training.autoencoder import AETrainConfig
from streamgen.training.avatar_ae import train
from streamgen.training.data.avatar import build_dataset
from streamgen.training.data.avatar_latents import encode_dataset
from streamgen.training.sources import LatentFolder


def test_autoencoder_and_latents(tmp_path):
    data = tmp_path / "data"
    build_dataset(data, {"train": 2, "val": 1, "test": 1}, seed=5, identities={"train": 1, "val": 1, "test": 1},
                  progress=False)
    cfg = AETrainConfig(data=str(data), out=str(tmp_path / "ae"), steps=3, batch=2, warmup=1, ckpt_every=2,
                        log_every=1, stats_clips=16, video={"channels": (4, 8, 8)})
    train(cfg, progress=False)
    ae = VideoAutoencoder.load(tmp_path / "ae" / "video_ae.safetensors")
    assert (tmp_path / "ae" / "ckpt_latest.safetensors").exists() and len((tmp_path / "ae" / "log.jsonl").read_text().splitlines()) == 3
    assert float(ae.latent_std.min()) > 0
    counts = encode_dataset(data, tmp_path / "ae" / "video_ae.safetensors", tmp_path / "lat", clip_frames=8, progress=False)
    assert all(n >= 1 for n in counts.values()), counts
    config = model_config("avatar")
    src = LatentFolder(tmp_path / "lat" / "train", config, num_frames=8, batch=2, seed=0)
    assert all(s == 0 for _, s in src.starts)  # every episode is one clip: the reference block always leads
    batch = src.batch_at(0)
    assert batch["latents"].shape == (2, 8, 4, 16, 16)
    assert batch["audio_in"].shape == (2, 8, config.audio_in.window_tokens, config.speech_token_dim)
    assert batch["mouth_open"].shape == (2, 16) and torch.all(batch["mouth_open"][:, :4] == 0)
