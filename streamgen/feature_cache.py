"""Feature caching between denoising steps (DisCa-style), applied from outside the model code.

Within one block, a "reuse" denoising step runs only the first K transformer layers; the deep layers
K..L-1 are replaced by the deep residual of the previous step of the same block, optionally corrected by
a small trained predictor:

    full step s-1:   h_L(s-1) = h_K(s-1) + D(s-1)                    (D: what layers K..L-1 add)
    reuse step s:    h_L(s)  ~ h_K(s) + D(s-1) + P(h_K(s), D(s-1), t_s)

``P`` is :class:`FeaturePredictor` (a zero-initialised residual MLP per token stream; "reuse" mode is
P = 0, the training-free baseline). Video and, in joint models, audio tokens each have their own
residual and predictor.

What is approximated, exactly: only the deep layers' output on reuse steps (hence that step's velocity
and everything downstream of it). The rolling KV cache stays exact: a skipped layer writes no K / V on
a reuse step, so its slots of this block keep the previous step's K / V, but nothing reads them then
(the layers that would read them are the skipped ones); the next full step rewrites the block's slots
in every layer before attending, and the refill, which always runs every layer, overwrites them with the
clean block's. Layers 0..K-1 run normally on every step and attend to their own fresh K / V. The same
holds for the per-layer action caches of Matrix-Game 2.0 models (written before they are read, per block).

The first step of a block, the refill, priming and cache rebuilds always run every layer. A reuse step
needs the previous step's residual of the same stream and block; otherwise it runs in full.

Per-stream state (one residual per stream, between two steps of a block) is keyed by the stream's video
KV cache, held weakly: it goes with the session and is dropped at each refill (bounded memory). The
wrapper is installed on the model instance (``model.forward_cached`` and the ``model.layer_stack`` seam)
by :func:`install_feature_cache`, which ``streamgen.acceleration.accelerate`` calls.
"""
from __future__ import annotations

import weakref
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from streamgen.feature_cache_spec import PREDICTOR_FILE, FeatureCacheSpec
from streamgen.models.dit import sinusoidal_embedding

# Width of the timestep sinusoid the predictor is conditioned on (a handful of steps: a few numbers suffice).
TIME_FREQS = 16


class FeaturePredictor(nn.Module):
    """Deep residual of this step from (shallow features, previous residual, timestep), per token.

    ``forward(h [B, F, T, C], prev [B, F, T, C], t [B, F]) -> prev + correction``; the output layer starts
    at zero, so an untrained predictor is plain reuse.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.inp = nn.Linear(2 * dim + TIME_FREQS, hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, prev: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, f, n, _ = h.shape
        temb = sinusoidal_embedding(TIME_FREQS, t).to(h.dtype)[:, :, None].expand(b, f, n, TIME_FREQS)  # [B, F, T, 16]
        z = torch.cat([self.norm(h), self.norm(prev), temb], dim=-1)  # [B, F, T, 2C+16]
        return prev + self.out(nn.functional.gelu(self.inp(z), approximate="tanh"))


def new_predictors(config, hidden: int | None = None) -> nn.ModuleList:
    """One zero-initialised predictor per token stream of ``config`` (video, then audio for joint models)."""
    streams = 2 if config.audio is not None else 1
    return nn.ModuleList(FeaturePredictor(config.dim, hidden or config.dim) for _ in range(streams))


def save_predictors(path: str | Path, predictors: nn.ModuleList, *, layer: int, reuse_steps: tuple[int, ...],
                    hidden: int, notes: dict | None = None) -> None:
    from safetensors.torch import save_file

    meta = {"layer": str(layer), "reuse_steps": ",".join(map(str, reuse_steps)), "hidden": str(hidden),
            **{k: str(v) for k, v in (notes or {}).items()}}
    save_file({k: v.detach().contiguous() for k, v in predictors.state_dict().items()}, str(path), metadata=meta)


def load_predictors(path: str | Path, config) -> tuple[nn.ModuleList, dict]:
    """Predictors and their metadata (``layer``, ``reuse_steps``) from a safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"feature cache predictor {str(path)!r}: no such file (train one: python -m streamgen.training.feature_cache)")
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}
    predictors = new_predictors(config, int(meta.get("hidden", config.dim)))
    predictors.load_state_dict(state)
    steps = tuple(int(s) for s in meta.get("reuse_steps", "").split(",") if s)
    return predictors.eval(), {"layer": int(meta["layer"]), "reuse_steps": steps, "path": str(path)}


@dataclass
class _Call:
    """One forward of one stream: whether it reuses, the previous residuals, and what it leaves."""

    step: int | None
    reuse: bool
    times: tuple[torch.Tensor, ...]  # per token stream: timesteps [B, F]
    prev: tuple[torch.Tensor, ...] | None = None
    deltas: tuple[torch.Tensor, ...] | None = None


@dataclass
class _Entry:
    start: int
    step: int
    deltas: tuple[torch.Tensor, ...]


Recorder = Callable[[int, tuple, tuple, tuple, tuple], None]  # (step, shallow, prev deltas, deltas, times)


@dataclass(eq=False)  # identity, not field-wise equality (it holds the model)
class FeatureCache:
    """The feature cache of one model (see the module docstring). ``predictors`` None: plain reuse.
    ``recorder`` (training): every step runs in full and each step with a previous residual is reported."""

    model: Any
    timesteps: tuple[float, ...]
    layer: int
    reuse_steps: tuple[int, ...]
    predictors: nn.ModuleList | None = None
    recorder: Recorder | None = None
    # Forwards that reused / ran every layer (the benchmark and the tests read them).
    reused: int = 0
    full: int = 0
    _entries: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    _call: ContextVar = field(default_factory=lambda: ContextVar("feature_cache_call", default=None))

    def __post_init__(self) -> None:
        layers = self.model.config.num_layers
        if not 0 <= self.layer < layers:
            raise ValueError(f"feature cache layer {self.layer}: the model has layers 0..{layers - 1}")
        bad = [s for s in self.reuse_steps if not 1 <= s < len(self.timesteps)]
        if bad:
            raise ValueError(f"feature cache reuse_steps {bad}: the schedule has steps 1..{len(self.timesteps) - 1} to reuse")

    def held(self) -> int:
        """Streams whose residual is kept between two steps of a block (none once every block refilled)."""
        return len(self._entries)

    def step_of(self, t: torch.Tensor) -> int | None:
        value = float(t.reshape(-1)[0])
        return next((i for i, s in enumerate(self.timesteps) if abs(s - value) < 1e-3), None)

    def forward_cached(self, x, t, text_kv, cache, start_frame: int, **kw):
        """``CausalDiT.forward_cached`` with the reuse decision of this stream's step."""
        step = self.step_of(t)
        entry = self._entries.get(cache)
        times = (t,) if kw.get("audio_t") is None else (t, kw["audio_t"])
        follows = entry is not None and step is not None and entry.start == start_frame and entry.step == step - 1
        reuse = self.recorder is None and follows and step in self.reuse_steps
        call = _Call(step=step, reuse=reuse, times=times, prev=entry.deltas if follows else None)
        token = self._call.set(call)
        try:
            out = type(self.model).forward_cached(self.model, x, t, text_kv, cache, start_frame, **kw)
        finally:
            self._call.reset(token)
        if step is None or call.deltas is None:
            self._entries.pop(cache, None)  # the refill (or a forward outside the schedule): the block is done
        else:
            self._entries[cache] = _Entry(start_frame, step, call.deltas)
        return out

    def layer_stack(self, layer: Callable[[int, Any], Any], h):
        """The ``CausalDiT.layer_stack`` seam: every layer, or layers 0..K-1 and the predicted residual."""
        call: _Call | None = self._call.get()
        if call is None:  # a forward outside forward_cached (training's full sequences): untouched
            return type(self.model).layer_stack(self.model, layer, h)
        joint = isinstance(h, tuple)
        for i in range(self.layer):
            h = layer(i, h)
        shallow = h if joint else (h,)
        if call.reuse:
            self.reused += 1
            if self.predictors is None:
                deltas = call.prev
            else:
                deltas = tuple(p(s, d, tt) for p, s, d, tt in zip(self.predictors, shallow, call.prev, call.times))
            out = tuple(s + d for s, d in zip(shallow, deltas))
        else:
            self.full += 1
            for i in range(self.layer, self.model.config.num_layers):
                h = layer(i, h)
            out = h if joint else (h,)
            needed = self.recorder is not None or (call.step is not None and call.step + 1 in self.reuse_steps)
            deltas = tuple(o - s for o, s in zip(out, shallow)) if needed else None
            if self.recorder is not None and call.step is not None and call.prev is not None:
                self.recorder(call.step, shallow, call.prev, deltas, call.times)
        call.deltas = deltas
        return out if joint else out[0]


def install_feature_cache(pipe, spec: FeatureCacheSpec, *, recorder: Recorder | None = None) -> FeatureCache:
    """Wrap ``pipe.model`` (its instance's ``forward_cached`` and ``layer_stack``) with a feature cache."""
    config = pipe.config
    predictors, layer, steps = None, spec.layer, spec.reuse_steps
    if spec.mode == "learned":
        if spec.predictor is None:
            raise ValueError(f"feature cache 'learned' on {pipe.name!r}: no predictor file (load_pipeline looks for "
                             f"{PREDICTOR_FILE} in the model's folder; a preset has none)")
        predictors, meta = load_predictors(spec.predictor, config)
        if layer is not None and layer != meta["layer"]:
            raise ValueError(f"feature cache layer {layer}: the predictor {meta['path']} was trained for layer {meta['layer']}")
        layer = meta["layer"]
        steps = steps or meta["reuse_steps"] or None
        predictors = predictors.to(device=pipe.device, dtype=pipe.dtype)
    if layer is None:
        layer = config.num_layers // 2
    if steps is None:
        steps = tuple(range(1, len(pipe.timesteps), 2))
    cache = FeatureCache(pipe.model, tuple(pipe.timesteps), layer, tuple(steps), predictors, recorder)
    pipe.model.forward_cached = cache.forward_cached
    pipe.model.layer_stack = cache.layer_stack
    return cache
