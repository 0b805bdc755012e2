"""Deterministic replay: a session's noise comes from a public source, so a stream replays exactly."""
import numpy as np
import pytest
import torch

import streamgen
from streamgen.noise import BlockSeeds, NoiseRecorder, RecordedNoise, SeededNoise


def _frames(session, blocks=3, prompt_at=None):
    out = []
    for k in range(blocks):
        if prompt_at is not None and k == prompt_at[0]:
            session.set_prompt(prompt_at[1])
        out.append(session.step().video)
    session.close()
    return np.stack(out)


@pytest.mark.parametrize("name", ["tiny", "tiny-world"])
def test_replay_from_recorded_noise_gives_identical_frames(name):
    pipe = streamgen.load_pipeline(name, device="cpu")
    recorder = NoiseRecorder(SeededNoise(123))
    first = _frames(pipe.start(prompt="a red ball", noise=recorder), prompt_at=(2, "a blue cube"))
    replayed = _frames(pipe.start(seed=999, prompt="a red ball", noise=RecordedNoise(recorder.draws)),
                       prompt_at=(2, "a blue cube"))
    assert np.array_equal(first, replayed)
    # the default start(seed=123) is that same source: the recorder saw what a plain session draws
    assert np.array_equal(first, _frames(pipe.start(seed=123, prompt="a red ball"), prompt_at=(2, "a blue cube")))
    # and another seed is another stream (the noise is really what drives it)
    assert not np.array_equal(first, _frames(pipe.start(seed=124, prompt="a red ball"), prompt_at=(2, "a blue cube")))


@pytest.mark.parametrize("name", ["tiny", "tiny-av"])
def test_no_noise_is_drawn_that_nothing_uses(name):
    """Per block: the starting noise plus one re-noise per step that has a next step (video, then audio
    for joint models); the last step's x0 is the output and no refill noise at context_noise = 0."""
    pipe = streamgen.load_pipeline(name, device="cpu")
    recorder = NoiseRecorder(SeededNoise(0))
    _frames(pipe.start(noise=recorder), blocks=2)
    streams = 2 if pipe.config.audio is not None else 1
    per_block = streams * len(pipe.timesteps)  # 1 start + (steps - 1) re-noises, per stream
    assert pipe.config.context_noise == 0
    assert [b for b, _ in recorder.draws] == [0] * per_block + [1] * per_block


def test_a_seed_per_block_replays_each_block_from_its_seed():
    pipe = streamgen.load_pipeline("tiny", device="cpu")
    a = _frames(pipe.start(noise=[5, 6, 7]))
    b = _frames(pipe.start(noise=BlockSeeds(lambda k: [5, 6, 7][k])))
    assert np.array_equal(a, b)
    c = _frames(pipe.start(noise=[5, 6, 8]))
    assert np.array_equal(a[:2], c[:2]) and not np.array_equal(a[2], c[2])  # block 2 depends on its seed only


def test_recorded_noise_of_the_wrong_shape_is_named():
    pipe = streamgen.load_pipeline("tiny", device="cpu")
    s = pipe.start(noise=RecordedNoise([torch.zeros(1, 2, 3)]))
    with pytest.raises(ValueError, match="draw 0 has shape"):
        s.step()
