"""The reference image is pinned as the sink frames; switching it mid-stream re-caches the sink slots
only: they then hold what a stream primed with the new reference holds, and nothing else changes."""
import numpy as np
import pytest
import torch

from streamgen.training.data.avatar_faces import draw_face, make_identity


def _reference(seed):
    return draw_face(make_identity(np.random.default_rng(seed)), 0.0, 0.5, 1.0, (0.0, 0.0))


def _speech(blocks, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.2 * rng.standard_normal(4000)).astype(np.float32) for _ in range(blocks)]


def test_reference_primes_the_sink_and_the_stream_starts_after_it(pipe):
    s = pipe.start(seed=1)
    s.set_reference(_reference(1))
    cfg = pipe.config
    assert s.next_frame == cfg.sink_frames and len(s.sink_latents) == cfg.sink_frames
    chunk = s.step(audio=_speech(1)[0])
    assert chunk.frame_index == 0 and chunk.video.shape == (4, 64, 64, 3)
    other = pipe.start(seed=1)
    other.set_reference(_reference(2))
    assert not np.array_equal(other.step(audio=_speech(1)[0]).video, chunk.video)  # the identity conditions the stream


def test_switching_the_reference_recaches_the_sink_slots_only(pipe):
    cfg = pipe.config
    a, b = _reference(1), _reference(2)
    s = pipe.start(seed=3)
    s.set_reference(a)
    for pcm in _speech(6):  # past the ring: 2 sink + 12 generated frames in a window of 10
        s.step(audio=pcm)
    k0, v0 = s.cache.k.clone(), s.cache.v.clone()
    pointers, next_frame, ring = s.cache.snapshot_pointers(), s.next_frame, list(s.recent_latents)
    s.set_reference(b)
    fresh = pipe.start(seed=9)
    fresh.set_reference(b)  # a stream primed with b: its sink K / V are the target
    tokens = cfg.sink_frames * cfg.tokens_per_frame
    torch.testing.assert_close(s.cache.k[:, :, :tokens], fresh.cache.k[:, :, :tokens], rtol=0, atol=0)
    torch.testing.assert_close(s.cache.v[:, :, :tokens], fresh.cache.v[:, :, :tokens], rtol=0, atol=0)
    assert not torch.equal(s.cache.k[:, :, :tokens], k0[:, :, :tokens])
    assert torch.equal(s.cache.k[:, :, tokens:], k0[:, :, tokens:]) and torch.equal(s.cache.v[:, :, tokens:], v0[:, :, tokens:])
    assert s.cache.snapshot_pointers() == pointers and s.next_frame == next_frame
    assert all(torch.equal(x, y) for x, y in zip(s.recent_latents, ring))
    assert torch.equal(torch.cat(s.sink_latents, 1), torch.cat(fresh.sink_latents, 1))
    s.step(audio=_speech(1)[0])  # and the stream goes on


def test_bad_reference_is_one_clear_error(pipe):
    s = pipe.start()
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        s.set_reference(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"frames must be uint8 \[T, 64, 64, 3\]"):
        s.set_reference(np.zeros((32, 32, 3), np.uint8))


def test_an_avatar_weights_folder_loads_and_streams(pipe, tmp_path):
    """What a later session ships: model.safetensors + config.json + video_ae.safetensors in one folder;
    load_pipeline gives sessions that take a reference image and speech."""
    import streamgen
    from streamgen.checkpoints.io import save_checkpoint

    folder = save_checkpoint(tmp_path / "avatar", pipe.config, pipe.model)
    pipe.decoder.ae.save(folder / "video_ae.safetensors")
    loaded = streamgen.load_pipeline(str(folder), device="cpu")
    assert loaded.config.audio_in == pipe.config.audio_in and loaded.can_prime
    a, b = loaded.start(seed=4), pipe.start(seed=4)
    for s in (a, b):
        s.set_reference(_reference(1))
    speech = _speech(2)
    for pcm in speech:
        assert np.array_equal(a.step(audio=pcm).video, b.step(audio=pcm).video)
