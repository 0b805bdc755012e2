"""Checks both autoencoder tests share: streaming in chunks equals the whole decode, and a streaming
decoder's state is explicit and immutable."""
from __future__ import annotations

import torch

from streamgen.decoders.causal_conv import StreamState


def decode_in_chunks(model, z: torch.Tensor, chunks: list[int]):
    """Decode ``z`` through the streaming decoder in chunks of ``chunks`` latent frames; returns the
    concatenated output, the whole decode and the final state."""
    with torch.no_grad():
        whole = model.decode(z)
        state, outs, i = None, [], 0
        for n in chunks:
            out, state = model.decoder(z[:, i:i + n], state)
            outs.append(out)
            i += n
    return torch.cat(outs, dim=1), whole, state


def assert_streams_independent(model, za: torch.Tensor, zb: torch.Tensor) -> None:
    """Decode two latent streams interleaved through one module, one frame at a time: each equals its
    whole decode; decoding twice from one state gives the same output; a fresh state decodes differently."""
    with torch.no_grad():
        ref_a, ref_b = model.decode(za), model.decode(zb)
        sa = sb = StreamState()  # one empty state object shared by both streams: never mutated
        outs_a, outs_b = [], []
        for i in range(za.shape[1]):
            oa, sa = model.decoder(za[:, i:i + 1], sa)
            ob, sb = model.decoder(zb[:, i:i + 1], sb)
            outs_a.append(oa)
            outs_b.append(ob)
        assert torch.allclose(torch.cat(outs_a, 1), ref_a, atol=1e-5, rtol=0)
        assert torch.allclose(torch.cat(outs_b, 1), ref_b, atol=1e-5, rtol=0)
        _, state = model.decoder(za[:, :2], None)
        first, _ = model.decoder(za[:, 2:3], state)
        again, _ = model.decoder(za[:, 2:3], state)
        assert torch.equal(first, again)  # a state is never mutated
        fresh, _ = model.decoder(za[:, 2:3], None)
        assert not torch.allclose(fresh, first, atol=1e-4)  # and the state matters
