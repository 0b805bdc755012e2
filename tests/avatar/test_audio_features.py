"""Speech features: chunked audio gives the features of the whole signal; a frame needs no audio past its
end; the session's speech state (silence before the speech and on underrun, bounded look-ahead)."""
import numpy as np
import pytest
import torch

from streamgen.audio_features import (
    SpeechFeatureStream, SpeechInput, as_pcm, frame_windows, silence_token, speech_features,
)
from streamgen.presets import preset


def _speech(seconds: float, seed: int = 0) -> torch.Tensor:
    """A voiced-like signal: harmonics of a gliding pitch under a syllable-rate envelope, plus noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * 16000)) / 16000.0
    f0 = 120 + 40 * torch.sin(2 * torch.pi * 0.7 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / 16000
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 * (1 + torch.sin(2 * torch.pi * 4 * t)).clamp(min=0)
    return (0.2 * env * voiced + 0.01 * torch.randn(t.shape, generator=g)).float()


@pytest.mark.parametrize("name", ["avatar", "tiny-avatar"])
def test_chunked_audio_gives_the_features_of_the_whole(name):
    cfg = preset(name)
    x = _speech(3.3)
    whole = speech_features(cfg, x)
    assert whole.shape == (int(3.3 * 16000) // cfg.speech_samples_per_frame, cfg.audio_in.tokens_per_frame, cfg.speech_token_dim)
    rng = np.random.default_rng(1)
    for trial in range(3):
        stream, parts, i = SpeechFeatureStream(cfg), [], 0
        while i < x.numel():
            k = int(rng.integers(1, [60, 400, 5000][trial]))
            parts.append(stream.push(x[i : i + k]))
            i += k
        chunked = torch.cat(parts)
        assert chunked.dtype == torch.float32 and chunked.shape == whole.shape
        torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    # int16 PCM is the same signal
    pcm16 = np.round(x.numpy() * 32767).astype(np.int16)
    torch.testing.assert_close(speech_features(cfg, pcm16), speech_features(cfg, torch.from_numpy(pcm16).float() / 32768),
                               rtol=0, atol=1e-6)


def test_a_frame_needs_audio_up_to_its_own_end_only():
    cfg = preset("avatar")
    spf = cfg.speech_samples_per_frame
    x = _speech(2.0)
    base = speech_features(cfg, x)
    for f in (0, 3, 9):
        y = x.clone()
        y[(f + 1) * spf :] = torch.randn(y.numel() - (f + 1) * spf)  # change everything after frame f
        changed = speech_features(cfg, y)
        assert torch.equal(changed[: f + 1], base[: f + 1])
        assert not torch.equal(changed[f + 1], base[f + 1])


def test_silence_and_windows():
    cfg = preset("avatar")
    r = cfg.audio_in.radius
    feats = speech_features(cfg, _speech(1.0))  # 8 frames
    sil = silence_token(cfg)
    assert torch.equal(speech_features(cfg, torch.zeros(3 * cfg.speech_samples_per_frame)), sil.expand(3, *sil.shape))
    win = frame_windows(feats, 2, 0, 12, r, sil)  # features cover stream frames 2..9
    assert win.shape == (12, cfg.audio_in.window_tokens, cfg.speech_token_dim)
    tpf = cfg.audio_in.tokens_per_frame
    for f in range(12):
        for j, g in enumerate(range(f - r, f + r + 1)):
            want = feats[g - 2] if 2 <= g < 10 else sil
            assert torch.equal(win[f, j * tpf : (j + 1) * tpf], want)


def test_bad_pcm_is_one_clear_error_and_nan_is_silence():
    with pytest.raises(ValueError, match=r"mono"):
        as_pcm(np.zeros((10, 2), np.float32))
    with pytest.raises(ValueError, match=r"int32"):
        as_pcm(np.zeros(10, np.int32))
    x = as_pcm(np.array([np.nan, np.inf, -5.0, 0.5], np.float32))
    assert x.tolist() == [0.0, 0.0, -1.0, 0.5]


def test_speech_input_underrun_origin_and_bound():
    cfg = preset("avatar")
    spf, r = cfg.speech_samples_per_frame, cfg.audio_in.radius
    x = _speech(2.0)
    whole = speech_features(cfg, x)
    sil = silence_token(cfg)
    s = SpeechInput(cfg, max_ahead=8)
    s.start(2)  # speech starts at stream frame 2 (after a reference block)
    # a block before the origin hears silence only
    assert torch.equal(s.windows(0, 2)[0], sil.repeat(2, 2 * r + 1, 1))
    s.push(x[: 6 * spf + 123])  # frames 2..7 complete, 123 samples into frame 8
    w = s.windows(2, 2)[0]  # frames 2, 3 need features up to frame 5: all sent
    torch.testing.assert_close(w, frame_windows(whole, 2, 2, 2, r, sil), rtol=0, atol=0)
    # underrun: frames 8 and 9 have not been sent when frames 6, 7 are generated -> silence is fed, continuity kept
    w = s.windows(6, 2)[0]
    x_fill = torch.cat([x[: 6 * spf + 123], torch.zeros(4 * spf - 123)])
    torch.testing.assert_close(w, frame_windows(speech_features(cfg, x_fill), 2, 6, 2, r, sil), rtol=0, atol=1e-6)
    # later audio continues after the filled frames
    assert s.end == 10
    # bounded: at most max_ahead frames past the last generated frame are kept; the rest is dropped and counted
    s.push(np.zeros(100 * spf, np.float32))
    assert s.end == 8 + 8 and s.dropped_samples == 100 * spf - 6 * spf
    s.prune(range(0, 4), before=10)
    assert min(f for f in s.features if f >= 4) == 10
