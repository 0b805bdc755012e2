"""The causal audio autoencoder: shapes, streaming == whole decode, explicit independent state."""
import pytest
import torch

from streamgen.decoders.audio_autoencoder import AudioAEConfig, AudioAutoencoder, console_to_unit, unit_to_console

from .stream_checks import assert_streams_independent, decode_in_chunks


def _model(**kw) -> AudioAutoencoder:
    torch.manual_seed(0)
    m = AudioAutoencoder(AudioAEConfig(**kw)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def test_hop_and_shapes():
    m = _model()
    assert m.cfg.hop == 512 and m.cfg.sample_rate == 30720  # one latent per ALE emulator frame
    wav = torch.rand(2, 512 * 6) * 2 - 1
    z = m.encode(wav)
    assert z.shape == (2, 6, 16)
    assert m.decode(z).shape == wav.shape
    with pytest.raises(ValueError, match="N %"):
        m.encode(torch.rand(1, 1000))
    with pytest.raises(ValueError, match="audio latents"):
        m.decode(torch.rand(1, 3, 5))


@pytest.mark.parametrize("chunks", [[1] * 7, [4, 3], [2, 1, 4]])
def test_streaming_decode_equals_whole(chunks):
    m = _model()
    z = torch.randn(2, sum(chunks), 16)
    streamed, whole, _ = decode_in_chunks(m, z, chunks)
    assert torch.allclose(streamed, whole, atol=1e-5, rtol=0)


def test_states_are_explicit_and_independent():
    m = _model(patch=4, factor=2, channels=(8, 8, 8))
    assert_streams_independent(m, torch.randn(1, 5, 16), torch.randn(1, 5, 16) * 3)


def test_console_sample_mapping_and_save(tmp_path):
    raw = torch.tensor([0, 128, 188, 255], dtype=torch.uint8)
    assert torch.equal(unit_to_console(console_to_unit(raw)), raw)
    m = _model()
    m.save(tmp_path / "a.safetensors")
    m2 = AudioAutoencoder.load(tmp_path / "a.safetensors")
    z = torch.randn(1, 3, 16)
    assert torch.equal(m.decode(z), m2.decode(z))
    with pytest.raises(ValueError, match="VideoAutoencoder"):
        from streamgen.decoders.video_autoencoder import VideoAutoencoder

        VideoAutoencoder.load(tmp_path / "a.safetensors")
