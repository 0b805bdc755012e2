"""The one block loop of Self-Forcing streaming: denoise a block, refill the cache, keep the window.

Both the inference :class:`streamgen.session.Session` and the training rollout
(``streamgen.training.rollout``) generate through :func:`run_block`, so what a student is trained on and
what it streams are the same code. A block is a dict of tensors, one per generated stream (video, and
audio for joint models), all at the same noise level.

One block:

1. draw the block's starting noise;
2. the few-step schedule: at each step predict the velocity and take x0; a step that does not exit
   re-noises x0 to the next level with a fresh draw (the exit step draws nothing: its x0 is the output);
3. the refill: one more forward of the detached clean block, re-noised to ``context_noise`` when that is
   positive, so the cache holds the K / V of the clean block (never a gradient). ``around_refill`` lets
   the caller run something beside it (the session decodes the block on a side CUDA stream meanwhile).

The caller supplies ``forward(streams, t) -> velocities`` (the model over its caches at the block's
position) and ``noise() -> streams`` (one draw per stream, in a fixed order). The training rollout adds
only the gradient gating: ``exit_index`` ends the schedule early and ``grad=True`` lets that one forward
carry a gradient; every other forward runs without grad.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from streamgen.samplers import add_noise, predict_x0, x0_and_renoise

Streams = dict[str, torch.Tensor]
Forward = Callable[[Streams, float], Streams]
Noise = Callable[[], Streams]


def keep_frames(config) -> int:
    """Clean latent frames a stream keeps after its sink frames to rebuild its caches (a prompt switch
    re-caches them): the video ring, at least ``recompute_frames``, and enough whole blocks to refill
    the audio ring of joint models."""
    keep = max(config.window_frames - config.sink_frames, config.recompute_frames)
    if config.audio is not None:
        window, sink = config.audio_cache_frames()
        keep = max(keep, (window - sink) // config.audio_frames_per_block * config.frames_per_block)
    return keep


def denoise(forward: Forward, noise: Noise, timesteps, *, exit_index: int | None = None, grad: bool = False) -> Streams:
    """The few-step schedule over one block; returns its x0 prediction at ``exit_index`` (default: the
    last step). Only the exit step's forward may carry a gradient (``grad``)."""
    last = len(timesteps) - 1 if exit_index is None else exit_index
    if not 0 <= last < len(timesteps):
        raise ValueError(f"exit_index={exit_index} outside the {len(timesteps)} denoising steps")
    x = noise()
    for i, t in enumerate(timesteps):
        exit_now = i == last
        with torch.set_grad_enabled(grad and exit_now):
            v = forward(x, t)
        if exit_now:
            return {s: predict_x0(x[s], v[s], t) for s in x}
        fresh = noise()  # one re-noise draw for every step that does not exit
        t_next = timesteps[i + 1]
        with torch.no_grad():
            x = {s: x0_and_renoise(x[s], v[s], t, t_next, fresh[s])[1] for s in x}
    raise AssertionError("unreachable: the schedule always reaches its exit step")


@torch.no_grad()
def refill(forward: Forward, x0: Streams, noise: Noise, context_noise: float) -> None:
    """Overwrite the block's K / V with those of its detached clean latents at ``context_noise``."""
    clean = {s: x.detach() for s, x in x0.items()}
    if context_noise > 0:
        fresh = noise()
        clean = {s: add_noise(clean[s], fresh[s], context_noise) for s in clean}
    forward(clean, context_noise)


def run_block(forward: Forward, noise: Noise, timesteps, *, context_noise: float, exit_index: int | None = None,
              grad: bool = False, timings: dict[str, float] | None = None,
              around_refill: Callable[[Streams, Callable[[], None]], object] | None = None) -> Streams:
    """Denoise one block and refill the cache with it; returns the block's x0 (one tensor per stream).
    ``timings``, when given, receives the seconds spent in ``denoise`` and ``refill``;
    ``around_refill(x0, do_refill)``, when given, must call ``do_refill()`` once (and may work beside it)."""
    t0 = time.perf_counter()
    x0 = denoise(forward, noise, timesteps, exit_index=exit_index, grad=grad)
    t1 = time.perf_counter()
    if around_refill is None:
        refill(forward, x0, noise, context_noise)
    else:
        around_refill(x0, lambda: refill(forward, x0, noise, context_noise))
    if timings is not None:
        timings.update(denoise=t1 - t0, refill=time.perf_counter() - t1)
    return x0
