"""Speech into a session: however the audio is chunked, the stream is the same; a frame's pixels depend on
the audio up to ``radius`` latent frames after it and not later (the look-ahead latency)."""
import numpy as np


def _audio(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _stream(pipe, pieces, blocks):
    s = pipe.start(seed=5)
    out = []
    for b in range(blocks):
        out.append(s.step(audio=pieces[b] if b < len(pieces) else None).video)
    return np.concatenate(out)


def test_chunking_does_not_change_the_stream(pipe):
    cfg = pipe.config
    x = _audio(2.0)
    spf, r, n = cfg.speech_samples_per_frame, cfg.audio_in.radius, cfg.frames_per_block
    need = lambda b: (b * n + n + r) * spf  # noqa: E731  samples block b hears: its frames + r frames ahead
    whole = _stream(pipe, [x], 6)  # everything up front (within the look-ahead bound)
    by_block = _stream(pipe, [x[: need(0)]] + [x[need(b - 1) : need(b)] for b in range(1, 6)], 6)
    assert np.array_equal(whole, by_block)
    rng = np.random.default_rng(0)
    cuts = [0] + [min(need(b) + int(rng.integers(0, 3000)), x.size) for b in range(6)]
    ragged = [x[cuts[b] : cuts[b + 1]] for b in range(6)]  # ragged pieces, each block's audio on time
    assert np.array_equal(_stream(pipe, ragged, 6), whole)
    # fed exactly in real time (one block of audio per block) the first block underruns: silence is
    # inserted, so the picture lags the audio by the look-ahead and the stream differs
    late = _stream(pipe, [x[i : i + n * spf] for i in range(0, x.size, n * spf)], 6)
    assert not np.array_equal(late, whole)


def test_a_block_hears_radius_frames_ahead_and_no_further(pipe):
    cfg = pipe.config
    spf, r, n = cfg.speech_samples_per_frame, cfg.audio_in.radius, cfg.frames_per_block
    x = _audio(2.0, seed=1)
    base = _stream(pipe, [x], 4)
    pixels_per_block = n * cfg.temporal_upsample
    # change the audio from the end of frame n + r - 1 on: block 0 (frames 0 .. n-1) cannot hear it
    y = x.copy()
    y[(n + r) * spf :] = _audio(2.0, seed=2)[(n + r) * spf :]
    changed = _stream(pipe, [y], 4)
    assert np.array_equal(changed[:pixels_per_block], base[:pixels_per_block])
    assert not np.array_equal(changed[pixels_per_block:], base[pixels_per_block:])
    # change the audio of frame n + r - 1 (the last frame block 0 looks ahead to): block 0 hears it
    z = x.copy()
    z[(n + r - 1) * spf : (n + r) * spf] = 0.0
    assert not np.array_equal(_stream(pipe, [z], 1), base[:pixels_per_block])


def test_hostile_audio_never_raises_or_grows(pipe):
    s = pipe.start()
    s.step(audio=np.full(4000, np.nan, np.float32))
    s.step(audio=np.zeros(16000 * 60, np.float32))  # a minute at once: kept up to the bound, the rest dropped
    assert s.speech.dropped_samples > 0
    assert len(s.speech.features) <= s.speech.max_ahead + 20
