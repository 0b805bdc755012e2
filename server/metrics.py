"""Prometheus metrics (served at ``/metrics``) plus a few recent samples for ``/v1/stats``.

Each app owns its registry, so several apps (tests) can live in one process.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Per-block generation time: from a few ms (tiny on CPU) to seconds (large models).
BLOCK_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)
# Server overhead per frame (ready -> handed to the transport): sub-ms to tens of ms.
OVERHEAD_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions = Gauge("streamgen_sessions", "Sessions streaming now", ["transport"], registry=r)
        self.sessions_total = Counter("streamgen_sessions_opened", "Sessions opened", ["transport"], registry=r)
        self.refused = Counter("streamgen_sessions_refused", "Sessions refused as busy", ["transport"], registry=r)
        self.reclaimed = Counter("streamgen_sessions_reclaimed", "Sessions closed by the server", ["reason"],
                                 registry=r)
        self.frames = Counter("streamgen_frames_sent", "Video frames handed to a transport", ["transport"],
                              registry=r)
        self.dropped = Counter("streamgen_frames_dropped", "Stale video frames dropped", registry=r)
        self.errors = Counter("streamgen_errors", "Typed errors answered", ["code"], registry=r)
        self.block = Histogram("streamgen_block_seconds", "Time to generate one block", ["model"],
                               buckets=BLOCK_BUCKETS, registry=r)
        self.overhead = Histogram("streamgen_frame_overhead_seconds",
                                  "Frame ready (block out and deadline reached) to frame handed to the transport",
                                  ["transport"], buckets=OVERHEAD_BUCKETS, registry=r)
        self.fps = Gauge("streamgen_fps", "Video frames sent per second per session (last 5 s)", registry=r)
        self.fps.set_function(self.fps_per_session)
        self.ready = Gauge("streamgen_ready", "1 once the pipeline is loaded and warmed up", registry=r)
        self._lock = threading.Lock()
        self._sent_t: deque[float] = deque(maxlen=20_000)
        self._overhead_s: deque[float] = deque(maxlen=20_000)
        self._block_s: deque[float] = deque(maxlen=20_000)
        self.active = 0

    # ----- recorders -------------------------------------------------------------------------------
    def frame_sent(self, transport: str, overhead_s: float) -> None:
        self.frames.labels(transport).inc()
        self.overhead.labels(transport).observe(max(0.0, overhead_s))
        with self._lock:
            self._sent_t.append(time.monotonic())
            self._overhead_s.append(overhead_s)

    def block_done(self, model: str, step_s: float) -> None:
        self.block.labels(model).observe(step_s)
        with self._lock:
            self._block_s.append(step_s)

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    # ----- readers ---------------------------------------------------------------------------------
    def fps_per_session(self, window_s: float = 5.0) -> float:
        now = time.monotonic()
        with self._lock:
            n = sum(1 for t in self._sent_t if now - t <= window_s)
        return n / window_s / max(1, self.active)

    def snapshot(self) -> dict:
        with self._lock:
            over = np.array(self._overhead_s, dtype=np.float64)
            block = np.array(self._block_s, dtype=np.float64)

        def pct(a: np.ndarray, q: float) -> float | None:
            return round(float(np.percentile(a, q)) * 1000.0, 3) if a.size else None
        return {
            "sessions": self.active,
            "fps_per_session": round(self.fps_per_session(), 2),
            "frame_overhead_ms": {"p50": pct(over, 50), "p95": pct(over, 95), "n": int(over.size)},
            "block_ms": {"p50": pct(block, 50), "p95": pct(block, 95), "n": int(block.size)},
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)
