"""Decoding generated blocks, beside the cache refill: the one decode path of a session stepped alone
(``Session.run_block``) and of sessions stepped together (``streamgen.batch_step``).

After the few-step schedule a block's clean latents are final; the block loop's refill forward (its K / V
written into the caches at ``context_noise``) and the decode of those latents (video frames, audio wave)
both read the latents and share nothing else: the refill writes only the caches, the decoders only their
own streaming state. So they run at the same time (:func:`beside_refill`):

- on a CPU the decode runs on one worker thread while the calling thread refills (torch ops release the
  interpreter lock, so the second core decodes);
- on CUDA with the pipeline's side stream (``pipe.decode_stream``) the decode's kernels are queued on that
  stream while the refill's are queued on the main one;
- elsewhere the decode follows the refill.

:func:`decode_sessions` decodes row ``r`` of a block with session ``r``'s decoders and advances their
states; the rows go through each decoder in one call when their states stack
(``streamgen.decoders.batch``). What stays on the calling thread afterwards is host work: keeping the
latents, converting frames to uint8 and wave to numpy, advancing the counters (``Session.finish_block``).
"""
from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from streamgen.decoders.batch import decode_rows

Streams = dict[str, torch.Tensor]


@dataclass
class Decoded:
    """One session's decoded block."""

    frames: torch.Tensor  # [1, T, 3, H, W] in [0, 1]
    wave: torch.Tensor | None  # [S, C] at the delivery rate (None: a silent model)
    timings: dict[str, float] = field(default_factory=dict)  # seconds of the decode call(s) it was part of


def decode_sessions(sessions: Sequence[Any], x0: Streams) -> list[Decoded]:
    """Decode row ``r`` of the clean block ``x0`` (``video [N, n, C, h, w]``, ``audio [N, na, Ca]``) with
    ``sessions[r]``'s video / audio decoders and resampler, advancing each session's states."""
    pipe = sessions[0].pipe
    t0 = time.perf_counter()
    frames, states = decode_rows(pipe.decoder, x0["video"], [s.decoder_state for s in sessions])  # [N, T, 3, H, W]
    for s, state in zip(sessions, states):
        s.decoder_state = state
    timings = {"decode": time.perf_counter() - t0}
    waves: list[torch.Tensor | None] = [None] * len(sessions)
    if x0.get("audio") is not None:
        t1 = time.perf_counter()
        native, states = decode_rows(pipe.audio_decoder, x0["audio"], [s.audio_decoder_state for s in sessions])  # [N, S, C]
        for r, (s, state) in enumerate(zip(sessions, states)):
            s.audio_decoder_state = state
            waves[r], s.resampler_state = pipe.resampler.process(native[r], s.resampler_state)  # [S', C]
        timings["audio_decode"] = time.perf_counter() - t1
    return [Decoded(frames[r : r + 1], waves[r], timings) for r in range(len(sessions))]


_WORKER: concurrent.futures.ThreadPoolExecutor | None = None


def beside_refill(pipe: Any, decode: Callable[[], list[Decoded]], refill: Callable[[], None]) -> list[Decoded]:
    """Run ``refill()`` here and ``decode()`` beside it (see the module docstring); returns the decode's
    result once both are done. ``decode`` must not read the caches the refill writes. On a CPU a refill
    that raises still waits for the decode first: no worker is left running on a failed step."""
    global _WORKER
    side = getattr(pipe, "decode_stream", None)
    if side is not None:  # CUDA: the decode's kernels on the side stream, the refill's on the main one
        main = torch.cuda.current_stream(pipe.device)
        side.wait_stream(main)  # the block's latents are complete before the decoders read them
        with torch.cuda.stream(side):
            decoded = decode()
        refill()
        main.wait_stream(side)
        for d in decoded:  # made on the side stream, read on the main one
            for t in (d.frames, d.wave):
                if t is not None:
                    t.record_stream(main)
        return decoded
    if pipe.device.type != "cpu":
        refill()
        return decode()
    if _WORKER is None:  # one worker for the process: an engine thread steps one batch at a time
        _WORKER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamgen-decode")
    threads = torch.get_num_threads()

    def on_worker() -> list[Decoded]:
        torch.set_num_threads(threads)  # the caller's intra-op threads (a new thread would take the default)
        with torch.inference_mode():  # grad mode is per thread
            return decode()

    pending = _WORKER.submit(on_worker)
    try:
        refill()
    finally:
        decoded = pending.result()  # never leave the worker running on a block whose step failed
    return decoded
