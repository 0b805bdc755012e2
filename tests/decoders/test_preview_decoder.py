"""Invariant 6: streaming decode chunk by chunk equals decoding the whole latent sequence."""
import torch

from streamgen.decoders.preview import PreviewDecoder, PreviewDecoderConfig, frames_to_uint8


def test_6_streaming_decode_equals_whole_decode():
    dec = PreviewDecoder(PreviewDecoderConfig(latent_channels=4, temporal_upsample=4, spatial_upsample=2, seed=3))
    z = torch.randn(1, 9, 4, 3, 5)
    whole, _ = dec.decode(z, dec.init_state())
    state, parts = dec.init_state(), []
    for s, e in [(0, 1), (1, 4), (4, 6), (6, 9)]:
        out, state = dec.decode(z[:, s:e], state)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-6, rtol=0)
    assert whole.shape == (1, 36, 3, 6, 10)


def test_decoder_states_are_independent():
    dec = PreviewDecoder(PreviewDecoderConfig(latent_channels=4, temporal_upsample=1, spatial_upsample=1))
    a, b = torch.randn(1, 2, 4, 2, 2), torch.randn(1, 2, 4, 2, 2)
    sa, sb = dec.init_state(), dec.init_state()
    _, sa = dec.decode(a, sa)
    _, sb = dec.decode(b, sb)
    nxt = torch.randn(1, 1, 4, 2, 2)
    out_a, _ = dec.decode(nxt, sa)
    out_b, _ = dec.decode(nxt, sb)
    assert not torch.allclose(out_a, out_b)
    ref, _ = dec.decode(torch.cat([a, nxt], 1), dec.init_state())
    torch.testing.assert_close(out_a, ref[:, 2:], atol=1e-6, rtol=0)
    u8 = frames_to_uint8(out_a[0])
    assert u8.dtype.name == "uint8" and u8.shape == (1, 2, 2, 3)
