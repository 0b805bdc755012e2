"""The shipped `avatar` default: the trained student, the face autoencoder, a training identity primed,
the identities' references, a model card; small, and its sessions take a reference and speech."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from streamgen.pipeline import WEIGHTS_DIR, load_pipeline, shipped_models

pytestmark = pytest.mark.skipif("avatar" not in shipped_models(), reason="streamgen/weights/avatar is not shipped")
FOLDER = WEIGHTS_DIR / "avatar"


@pytest.fixture(scope="module")
def avatar():
    torch.set_num_threads(1)
    return load_pipeline("avatar", device="cpu")


def test_the_folder_is_small_and_carded():
    files = {p.name: p.stat().st_size for p in FOLDER.iterdir()}
    assert {"config.json", "model.safetensors", "video_ae.safetensors", "start_context.npz", "references.npz",
            "MODEL_CARD.md"} <= set(files)
    assert sum(files.values()) < 6 * 2**20
    card = (FOLDER / "MODEL_CARD.md").read_text()
    for heading in ("## Data", "## Training", "## Evaluation", "## Limits"):
        assert heading in card


def test_avatar_streams_a_face_that_hears_speech(avatar):
    assert avatar.config.audio_in is not None and avatar.can_prime and avatar.start_context is not None
    refs = np.load(FOLDER / "references.npz")["images"]
    s = avatar.start(seed=0, prime=False)
    s.set_reference(refs[-1])
    rng = np.random.default_rng(0)
    pcm = (0.3 * rng.standard_normal(16000)).astype(np.float32)
    chunks = [s.step(audio=pcm if i == 0 else None) for i in range(3)]
    assert all(c.video.shape == (4, 64, 64, 3) and c.video.dtype == np.uint8 for c in chunks)
    primed = avatar.start(seed=0)  # the start context: the first training identity in the sink
    assert primed.next_frame == avatar.config.sink_frames
