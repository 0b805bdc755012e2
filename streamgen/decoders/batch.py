"""One streaming decoder over the rows of several streams at once (batched sessions).

``decode_rows(decoder, latents, states)`` decodes row ``r`` of ``latents`` (``[N, ...]``) as stream ``r``
whose state is ``states[r]``, and returns ``(out [N, ...], new states)``: the same outputs and states as N
calls of ``decoder.decode`` on one row each (convolutions over a batch of rows equal those over each row
to float rounding). When every state is a :class:`~streamgen.decoders.causal_conv.StreamState` with tails
of the same shapes (or every stream fresh), the rows go through the decoder in one call, their tails
stacked along the batch; otherwise (other decoder state types, streams at different stages) row by row.
One call of N rows runs the decoder's Python once instead of N times: on a CPU the conv arithmetic per row
is the same either way, the per-op host work (and the interpreter lock it holds) is not.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .causal_conv import StreamState


def stackable(states: Sequence[Any]) -> bool:
    """Whether these streams' states stack into one batch: all ``StreamState``, all fresh or all with
    tails of the same count and shapes past the batch dimension."""
    if len(states) < 2 or not all(type(s) is StreamState for s in states):
        return False
    first = states[0].tails
    if first is None:
        return all(s.tails is None for s in states)
    shapes = [tuple(t.shape[1:]) for t in first]
    return all(s.tails is not None and [tuple(t.shape[1:]) for t in s.tails] == shapes
               and all(t.shape[0] == 1 for t in s.tails) for s in states)


def decode_rows(decoder: Any, latents: torch.Tensor, states: Sequence[Any]) -> tuple[torch.Tensor, list[Any]]:
    """Rows ``latents[r]`` decoded as the streams ``states[r]`` (see the module docstring)."""
    n = latents.shape[0]
    if len(states) != n:
        raise ValueError(f"{len(states)} decoder states for {n} rows of latents")
    if n == 1:
        out, state = decoder.decode(latents, states[0])
        return out, [state]
    if stackable(states):
        tails = states[0].tails
        if tails is not None:
            tails = tuple(torch.cat([s.tails[i] for s in states]) for i in range(len(tails)))  # [N, ...] each
        out, new = decoder.decode(latents, StreamState(tails=tails, steps=0))
        rows = [StreamState(tails=None if new.tails is None else tuple(t[r : r + 1] for t in new.tails),  # [1, ...]
                            steps=s.steps + new.steps) for r, s in enumerate(states)]
        return out, rows
    outs, rows = [], []
    for r, state in enumerate(states):
        out, state = decoder.decode(latents[r : r + 1], state)
        outs.append(out)
        rows.append(state)
    return torch.cat(outs), rows
