"""The GPU path's pieces that run anywhere: the time embedding stays fp32 in a bf16 model (as Wan keeps
it), and the block step through torch.compile streams what the eager step streams."""
import numpy as np
import pytest
import torch

import streamgen
from streamgen.models.dit import sinusoidal_embedding


def test_time_embedding_stays_fp32_in_a_bf16_model():
    pipe = streamgen.load_pipeline("tiny", device="cpu", dtype=torch.bfloat16)
    model = pipe.model
    assert {p.dtype for p in model.time_embedding.parameters()} == {torch.float32}
    assert {p.dtype for p in model.time_projection.parameters()} == {torch.float32}
    assert model.blocks[0].self_attn.q.weight.dtype == torch.bfloat16 and pipe.describe()["dtype"] == "bfloat16"
    t = torch.tensor([[999.0, 937.5, 3.0]])
    e, e0 = model.embed_time(t)
    assert e.dtype == e0.dtype == torch.float32
    with torch.no_grad():  # the same (fp32) weights in fp32 math: no bf16 rounding of the sinusoid or the MLP
        want = model.time_embedding(sinusoidal_embedding(pipe.config.freq_dim, t))
    assert torch.equal(e, want)
    assert pipe.start().step().video.shape == (pipe.frames_per_chunk, pipe.height, pipe.width, 3)


@pytest.mark.slow
def test_compiled_block_step_streams_what_the_eager_step_streams():
    eager = streamgen.load_pipeline("tiny", device="cpu")
    compiled = streamgen.load_pipeline("tiny", device="cpu", compile=True)
    assert compiled.describe()["compiled"] and not eager.describe()["compiled"]
    a, b = eager.start(seed=3), compiled.start(seed=3)
    for _ in range(4):  # past the window of 6: rolling blocks through the compiled step
        va, vb = a.step().video, b.step().video
        assert np.abs(va.astype(int) - vb.astype(int)).max() <= 1
