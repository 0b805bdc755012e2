"""The audio-in plug-in: zero-initialised (bit-equal to the model without it), frame-local, and the same
through the cached streaming forward as through the block-causal full forward."""
import torch

from streamgen.presets import preset
from streamgen.models.dit import CausalDiT
from streamgen.models.kv_cache import RollingKVCache
from streamgen.models.masks import block_causal_mask, expand_to_tokens


def _inputs(cfg, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, frames, cfg.in_channels, cfg.latent_height, cfg.latent_width, generator=g)
    speech = torch.randn(1, frames, cfg.audio_in.window_tokens, cfg.speech_token_dim, generator=g)
    text = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)
    return x, speech, text


def test_zero_initialised_audio_in_leaves_outputs_bit_equal_and_woken_it_listens():
    cfg = preset("tiny-avatar").with_(rope_mode="absolute")
    torch.manual_seed(0)
    plain = CausalDiT(cfg.with_(audio_in=None))
    plain.wake_outputs(actions=False)
    avatar = CausalDiT(cfg)
    missing, unexpected = avatar.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".audio_in." in m for m in missing)
    x, speech, text = _inputs(cfg, 4)
    t = torch.full((1, 4), 700.0)
    mask = expand_to_tokens(block_causal_mask(4, cfg.frames_per_block), cfg.tokens_per_frame)
    with torch.no_grad():
        kv = plain.encode_text(text)
        assert torch.equal(avatar(x, t, kv, mask=mask, audio_in=speech), plain(x, t, kv, mask=mask))
        avatar.wake_outputs(actions=True)
        a = avatar(x, t, kv, mask=mask, audio_in=speech)
        other = speech.clone()
        other[:, 3] += 1.0  # another speech window for frame 3 only
        b = avatar(x, t, kv, mask=mask, audio_in=other)
    assert not torch.equal(a[:, 2:], b[:, 2:])
    assert torch.equal(a[:, :2], b[:, :2])  # block 0 (frames 0, 1) cannot see block 1's windows


def test_cached_blocks_equal_the_block_causal_forward():
    cfg = preset("tiny-avatar").with_(rope_mode="absolute", window_frames=8, sink_frames=2)
    torch.manual_seed(1)
    model = CausalDiT(cfg)
    model.wake_outputs(actions=True)
    model.eval()
    f, n = 6, cfg.frames_per_block
    x, speech, text = _inputs(cfg, f, seed=3)
    t = torch.full((1, f), 500.0)
    mask = expand_to_tokens(block_causal_mask(f, n), cfg.tokens_per_frame)
    with torch.no_grad():
        kv = model.encode_text(text)
        full = model(x, t, kv, mask=mask, audio_in=speech)
        cache = RollingKVCache(cfg)
        parts = [model.forward_cached(x[:, s : s + n], t[:, s : s + n], kv, cache, s, audio_in=speech[:, s : s + n])
                 for s in range(0, f, n)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)
