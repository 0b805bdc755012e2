"""``streamgen bench``: throughput and latency of streaming sessions, as JSON.

Frames/s counts decoded video frames per wall second over the measured blocks (warm-up excluded);
time to first frame is ``start()`` to the first returned chunk of a fresh session on a warmed pipeline.
With ``sessions=N`` (``--sessions``), N sessions (seeds ``seed .. seed+N-1``) step together in one batched
step per block (``streamgen.batch_step``): frames/s is then the total over them (also given per session),
and a "block" is the batch's step.
"""
from __future__ import annotations

import resource
import statistics
import time

import torch

from streamgen.batch_step import step_batch


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _start(pipe, sessions: int, seed: int) -> list:
    return [pipe.start(seed=seed + i) for i in range(sessions)]


def run_bench(pipe, *, blocks: int, warmup: int = 3, seed: int = 0, progress=None, sessions: int = 1) -> dict:
    device = pipe.device
    warm = _start(pipe, sessions, seed)
    for _ in range(warmup):
        step_batch(warm)
    for s in warm:
        s.close()
    _sync(device)

    t0 = time.perf_counter()
    streams = _start(pipe, sessions, seed)
    step_batch(streams)
    _sync(device)
    ttff = time.perf_counter() - t0

    # Wall time per block, and the process CPU time per block: on a shared machine the latter shows
    # whether the work itself stays flat when other processes make the wall clock noisy.
    # The calling thread's CPU time too: batched steps on a CPU decode on a worker thread beside the
    # refill (streamgen.batch_step), so process CPU counts both threads and thread CPU the critical path.
    per_block, per_block_cpu, per_block_thread, frames, audio_samples = [], [], [], 0, 0
    mem_after_warm = _peak_memory_mb(device)
    start = time.perf_counter()
    for _ in range(blocks - 1):
        b0, c0, h0 = time.perf_counter(), time.process_time(), time.thread_time()
        chunks = step_batch(streams)
        _sync(device)
        per_block.append(time.perf_counter() - b0)
        per_block_cpu.append(time.process_time() - c0)
        per_block_thread.append(time.thread_time() - h0)
        for chunk in chunks:
            frames += chunk.video.shape[0]
            if chunk.audio is not None:
                audio_samples += chunk.audio.shape[0] / sessions  # audio time per stream
        if progress is not None:
            progress.update(1)
    wall = time.perf_counter() - start
    for s in streams:
        s.close()
    gen_frames = frames
    def early(values):  # blocks 10-110 (or the first half of a short run)
        return values[9:109] if len(values) >= 209 else values[: max(1, len(values) // 2)]

    def late(values):  # the last 100 blocks (or the second half)
        return values[-100:] if len(values) >= 209 else values[len(values) // 2 :]

    result = {
        "model": pipe.name,
        "device": str(device),
        "dtype": str(pipe.dtype).replace("torch.", ""),
        "attention_backend": pipe.model.attention_backend,
        "acceleration": pipe.acceleration.describe() if pipe.acceleration is not None else None,
        "blocks": blocks,
        "sessions": sessions,
        "frames_per_block": pipe.frames_per_chunk,
        "resolution": [pipe.width, pipe.height],
        "stream_fps": pipe.fps,
        "frames_per_second": gen_frames / wall if wall > 0 else float("nan"),  # all sessions together
        "frames_per_second_per_session": gen_frames / wall / sessions if wall > 0 else float("nan"),
        "realtime_factor": (gen_frames / wall) / sessions / pipe.fps if wall > 0 else float("nan"),  # per session
        "time_to_first_frame_s": ttff,
        "block_ms_p50": 1000 * statistics.median(per_block) if per_block else None,
        "block_ms_p95": 1000 * _pct(per_block, 0.95) if per_block else None,
        "block_ms_median_early": 1000 * statistics.median(early(per_block)) if per_block else None,
        "block_ms_median_late": 1000 * statistics.median(late(per_block)) if per_block else None,
        "block_cpu_ms_p50": 1000 * statistics.median(per_block_cpu) if per_block else None,
        "block_thread_cpu_ms_p50": 1000 * statistics.median(per_block_thread) if per_block else None,
        "block_cpu_ms_median_early": 1000 * statistics.median(early(per_block_cpu)) if per_block else None,
        "block_cpu_ms_median_late": 1000 * statistics.median(late(per_block_cpu)) if per_block else None,
        "peak_memory_mb": _peak_memory_mb(device),
        "memory_growth_mb": _peak_memory_mb(device) - mem_after_warm,
    }
    if result["block_ms_median_early"]:
        result["late_over_early"] = result["block_ms_median_late"] / result["block_ms_median_early"]
    if result["block_cpu_ms_median_early"]:
        result["late_over_early_cpu"] = result["block_cpu_ms_median_late"] / result["block_cpu_ms_median_early"]
    if audio_samples and pipe.sample_rate:
        result["audio_realtime_factor"] = (audio_samples / pipe.sample_rate) / wall
    if pipe.config.audio_in is not None and per_block:
        result["speech_latency"] = speech_latency(pipe.config, statistics.median(per_block))
    return result


def speech_latency(config, block_s: float) -> dict[str, float]:
    """Audio in to frame out of an avatar (docs/models.md, "Avatars"), seconds: a frame is drawn once its
    block's audio and the look-ahead (``audio_in.radius`` latent frames) have arrived, then takes a block's
    compute (``block_s``, the measured median). From the end of a frame's own audio: the last pixel frame of
    a block waits the look-ahead only, the first one also the rest of its block; ``mean`` over the frames."""
    tu, block = config.temporal_upsample, float(config.block_seconds)
    frame_s = block / (config.frames_per_block * tu)  # one pixel frame
    lookahead = config.audio_in.radius * tu * frame_s
    waits = [(config.frames_per_block * tu - 1 - k) * frame_s for k in range(config.frames_per_block * tu)]
    return {"lookahead_s": lookahead, "block_s": block, "compute_s": block_s,
            "min_s": lookahead + block_s, "mean_s": lookahead + sum(waits) / len(waits) + block_s,
            "max_s": lookahead + max(waits) + block_s}
