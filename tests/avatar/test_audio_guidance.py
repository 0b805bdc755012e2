"""Audio guidance: the avatar teacher learns the null speech (``data.audio_dropout``) and the
unconditional branches of the ODE pairs and the real score hear it (``dmd.guide_audio``)."""
import pytest
import torch

from streamgen.training.config import DataConfig
from streamgen.training.conditioning import drop_audio, null_audio


def _batch(b=64):
    g = torch.Generator().manual_seed(0)
    return {"latents": torch.randn(b, 4, 4, 2, 2, generator=g), "audio_in": torch.randn(b, 4, 10, 6, generator=g) + 3}


def test_null_audio_zeroes_the_chosen_samples_only():
    batch = _batch(4)
    rows = torch.tensor([True, False, True, False])
    out = null_audio(batch, rows)
    assert torch.equal(out["audio_in"][~rows], batch["audio_in"][~rows]) and not out["audio_in"][rows].any()
    assert not null_audio(batch)["audio_in"].any() and batch["audio_in"].all()  # the input is left alone
    assert out["latents"] is batch["latents"]
    world = {"latents": batch["latents"]}
    assert null_audio(world) is world and drop_audio(world, 0.5, torch.Generator()) is world


def test_drop_audio_drops_about_its_rate_and_nothing_at_zero():
    batch = _batch(400)
    out = drop_audio(batch, 0.1, torch.Generator().manual_seed(1))
    dropped = (out["audio_in"].flatten(1) == 0).all(1)  # [B]
    assert 20 <= int(dropped.sum()) <= 60
    assert drop_audio(batch, 0.0, torch.Generator()) is batch
    with pytest.raises(ValueError, match="audio_dropout=1.5"):
        DataConfig(audio_dropout=1.5)
