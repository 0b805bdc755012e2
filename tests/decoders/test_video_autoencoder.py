"""The causal video autoencoder: shapes, streaming == whole decode, explicit independent state."""
import pytest
import torch

from streamgen.decoders.video_autoencoder import VideoAEConfig, VideoAutoencoder, frames_to_unit, unit_to_uint8

from .stream_checks import assert_streams_independent, decode_in_chunks


def _model(**kw) -> VideoAutoencoder:
    torch.manual_seed(0)
    m = VideoAutoencoder(VideoAEConfig(height=32, width=32, **kw)).eval()
    with torch.no_grad():  # non-zero biases everywhere, so a wrongly padded state would show
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.mark.parametrize("temporal", [1, 2, 4])
def test_encode_decode_shapes(temporal):
    m = _model(temporal=temporal)
    x = torch.rand(2, 4 * temporal, 3, 32, 32) * 2 - 1
    z = m.encode(x)
    assert z.shape == (2, 4, 4, 8, 8)
    y = m.decode(z)
    assert y.shape == x.shape
    assert unit_to_uint8(y).dtype == torch.uint8
    if temporal > 1:
        with pytest.raises(ValueError, match="T %"):
            m.encode(torch.rand(1, 4 * temporal + 1, 3, 32, 32))
    with pytest.raises(ValueError, match="latents must be"):
        m.decode(torch.rand(1, 2, 5, 8, 8))


@pytest.mark.parametrize("chunks", [[1, 1, 1, 1, 1, 1], [2, 3, 1], [5, 1]])
def test_streaming_decode_equals_whole(chunks):
    m = _model(temporal=2)
    z = torch.randn(2, sum(chunks), 4, 8, 8)
    streamed, whole, state = decode_in_chunks(m, z, chunks)
    assert state.steps == sum(chunks)
    assert torch.allclose(streamed, whole, atol=1e-5, rtol=0)


def test_states_are_explicit_and_independent():
    m = _model(temporal=2)
    assert_streams_independent(m, torch.randn(1, 4, 4, 8, 8), torch.randn(1, 4, 4, 8, 8) * 2)


def test_decoder_is_causal():
    m = _model(temporal=2)
    z = torch.randn(1, 5, 4, 8, 8)
    z2 = z.clone()
    z2[:, 3:] += 1.0  # change the future
    with torch.no_grad():
        a, b = m.decode(z), m.decode(z2)
    assert torch.equal(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_save_load_roundtrip(tmp_path):
    m = _model(temporal=2)
    m.latent_std.fill_(2.5)
    m.save(tmp_path / "v.safetensors")
    m2 = VideoAutoencoder.load(tmp_path / "v.safetensors")
    assert m2.cfg == m.cfg
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    x = frames_to_unit(torch.randint(0, 256, (1, 2, 3, 32, 32), dtype=torch.uint8))
    assert torch.equal(m.normalize(m.encode(x)), m2.normalize(m2.encode(x)))
