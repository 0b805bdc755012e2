"""One streaming decoder over several streams' rows at once (streamgen.decoders.batch) equals each stream
decoded alone: outputs and states, block after block, with the shipped world's trained decoders."""
from __future__ import annotations

import pytest
import torch

from streamgen.decoders.batch import decode_rows, stackable
from streamgen.decoders.causal_conv import StreamState
from streamgen.decoders.trained import load_trained_decoders
from streamgen.pipeline import WEIGHTS_DIR, shipped_models

pytestmark = pytest.mark.skipif("world" not in shipped_models(), reason="streamgen/weights/world is not shipped")
TOL = 1e-5


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_rows_decoded_together_equal_each_stream_alone(modality):
    video, audio = load_trained_decoders(WEIGHTS_DIR / "world")
    decoder = video if modality == "video" else audio
    gen = torch.Generator().manual_seed(0)
    shape = (2, 4, 16, 16) if modality == "video" else (16, 16)  # one block: [F, C, h, w] / [Fa, Ca]
    rows = 3
    alone = [decoder.init_state() for _ in range(rows)]
    # one stream decodes a block before the others join: different histories, same tail shapes
    first = torch.randn(1, *shape, generator=gen)
    _, alone[0] = decoder.decode(first, alone[0])
    together = list(alone)
    assert not stackable(together)  # one stream has tails, two are fresh: decoded row by row
    with torch.inference_mode():
        for block in range(3):
            x = torch.randn(rows, *shape, generator=gen)  # [N, ...]
            out, together = decode_rows(decoder, x, together)
            for r in range(rows):
                ref, alone[r] = decoder.decode(x[r : r + 1], alone[r])
                assert (out[r : r + 1] - ref).abs().max() <= TOL, (modality, block, r)
                assert together[r].steps == alone[r].steps
                assert all((a - b).abs().max() <= TOL for a, b in zip(together[r].tails, alone[r].tails))
            assert stackable(together)  # from the first block on every stream has tails of the same shapes


def test_states_that_do_not_stack():
    a = StreamState(tails=(torch.zeros(1, 2),), steps=1)
    assert stackable([a, StreamState(tails=(torch.zeros(1, 2),), steps=5)])
    assert not stackable([a, StreamState(tails=(torch.zeros(1, 3),), steps=1)])  # another shape
    assert not stackable([a, StreamState()])  # fresh next to a running stream
    assert not stackable([a])  # a single row needs no stacking
    with pytest.raises(ValueError, match="2 decoder states for 3 rows"):
        decode_rows(None, torch.zeros(3, 1), [a, a])
