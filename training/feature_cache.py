"""Train the feature cache's predictor (``streamgen.feature_cache``) on the student's own rollouts.

    python -m streamgen.training.feature_cache --model world --data data/atari/pong --layer 1 \
        --out streamgen/weights/world/feature_predictor.safetensors

1. Roll the student out through the one block loop (``Session.step``, the code it streams with), every
   step in full, with a recorder on its feature cache: for each denoising step that has a previous step
   in its block it records the shallow features h_K, the previous step's deep residual D(s-1), this
   step's residual D(s) and the timesteps, per token stream (video, audio). With ``--data`` each rollout
   is primed with real frames of a *training* episode and follows that episode's keys (the held-out
   episodes stay for ``streamgen evaluate``); without it, sessions start as the pipeline starts them.
2. Fit one zero-initialised predictor per stream by regression: the loss of a stream is the mean squared
   error of the predicted residual, divided by that of plain reuse (D(s-1)) on the same records, so 1.0 is
   plain reuse and below 1 is better. Records of held-out rollouts (other seeds and starts) give the
   validation loss.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from streamgen.feature_cache import FeatureCache, install_feature_cache, new_predictors, save_predictors
from streamgen.feature_cache_spec import FeatureCacheSpec


@dataclass
class Records:
    """Per record: shallow features, previous and current residuals, timesteps (each a tuple per stream)."""

    steps: list[int] = field(default_factory=list)
    shallow: list[tuple] = field(default_factory=list)
    prev: list[tuple] = field(default_factory=list)
    target: list[tuple] = field(default_factory=list)
    times: list[tuple] = field(default_factory=list)

    def __call__(self, step, shallow, prev, deltas, times) -> None:  # the feature cache's recorder
        def keep(xs):  # normal tensors (not inference-mode ones) so the fit can take gradients through them
            with torch.inference_mode(False):
                return tuple(x.detach().clone() for x in xs)
        self.steps.append(step)
        self.shallow.append(keep(shallow))
        self.prev.append(keep(prev))
        self.target.append(keep(deltas))
        self.times.append(keep(times))

    def __len__(self) -> int:
        return len(self.steps)

    def only(self, steps: tuple[int, ...]) -> "Records":
        out = Records()
        for i, s in enumerate(self.steps):
            if s in steps:
                for name in ("steps", "shallow", "prev", "target", "times"):
                    getattr(out, name).append(getattr(self, name)[i])
        return out


def recording(pipe, layer: int) -> tuple[FeatureCache, Records]:
    """Install a recording feature cache on ``pipe`` (every step in full); returns it and its records."""
    records = Records()
    cache = install_feature_cache(pipe, FeatureCacheSpec(mode="reuse", layer=layer), recorder=records)
    return cache, records


def relative_losses(predictors, records: Records, idx: list[int]) -> torch.Tensor:
    """Per stream: MSE of the predicted residual / MSE of plain reuse, over the records ``idx``."""
    streams = len(records.shallow[0])
    out = []
    for j in range(streams):
        h = torch.cat([records.shallow[i][j] for i in idx])  # [N, F, T, C]
        prev = torch.cat([records.prev[i][j] for i in idx])  # [N, F, T, C]
        target = torch.cat([records.target[i][j] for i in idx])  # [N, F, T, C]
        t = torch.cat([records.times[i][j] for i in idx])  # [N, F]
        pred = predictors[j](h, prev, t)
        out.append(((pred - target) ** 2).mean() / ((prev - target) ** 2).mean().clamp_min(1e-12))
    return torch.stack(out)


def fit(predictors, train: Records, val: Records | None = None, *, steps: int = 300, batch: int = 16,
        lr: float = 1e-3, seed: int = 0, log_every: int = 50) -> list[dict]:
    """Adam on the relative regression loss (mean over streams); returns the logged losses."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(predictors.parameters(), lr=lr, weight_decay=0.0)
    log = []
    everything = list(range(len(train)))
    for step in range(steps + 1):
        if step % log_every == 0 or step == steps:
            with torch.no_grad():
                row = {"step": step, "train": relative_losses(predictors, train, everything).tolist()}
                if val is not None and len(val):
                    row["val"] = relative_losses(predictors, val, list(range(len(val)))).tolist()
            log.append(row)
        if step == steps:
            break
        idx = rng.sample(everything, min(batch, len(everything)))
        loss = relative_losses(predictors, train, idx).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return log


def collect_world(pipe, data: str | None, rollouts: int, blocks: int, seed: int, context: int = 12) -> None:
    """Roll ``pipe`` out ``rollouts`` times for ``blocks`` blocks (its recorder collects)."""
    per_block = pipe.frames_per_chunk
    if data is None:
        for r in range(rollouts):
            session = pipe.start(seed=seed + r)
            for _ in range(blocks):
                session.step()
            session.close()
        return
    from .evaluate import key_rows, load_episodes, rollout

    meta, eps = load_episodes(data, "train")
    rng = random.Random(seed)
    span = context + blocks * per_block
    for r in range(rollouts):
        ep = eps[rng.randrange(len(eps))]
        start = rng.randrange(0, len(ep["frames"]) - span)
        rows = key_rows(pipe.action_spec, meta["action_names"], ep["actions"])[start : start + span]  # [span, K]
        rollout(pipe, ep, start, context, blocks * per_block, rows, seed=seed + r)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="world")
    p.add_argument("--data", default=None, help="recorded dataset whose training episodes prime the rollouts")
    p.add_argument("--layer", type=int, default=1, help="first layer the predictor replaces (K)")
    p.add_argument("--rollouts", type=int, default=24)
    p.add_argument("--val-rollouts", type=int, default=6)
    p.add_argument("--blocks", type=int, default=12, help="generated blocks per rollout")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=None, help="predictor width (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="safetensors file to write")
    a = p.parse_args(argv)
    from streamgen.pipeline import load_pipeline

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    pipe = load_pipeline(a.model, device="cpu")
    cache, records = recording(pipe, a.layer)
    steps = tuple(range(1, len(pipe.timesteps), 2))  # the steps a default cache reuses
    with torch.inference_mode():
        collect_world(pipe, a.data, a.rollouts, a.blocks, a.seed)
        train = records.only(steps)
        records.__init__()
        collect_world(pipe, a.data, a.val_rollouts, a.blocks, a.seed + 10_000)
        val = records.only(steps)
    t1 = time.perf_counter()
    hidden = a.hidden or pipe.config.dim
    predictors = new_predictors(pipe.config, hidden)
    log = fit(predictors, train, val, steps=a.steps, lr=a.lr, seed=a.seed)
    notes = {"model": a.model, "records": len(train), "val_records": len(val), "train_steps": a.steps,
             "val_relative_loss": ",".join(f"{x:.4f}" for x in log[-1]["val"])}
    save_predictors(a.out, predictors, layer=a.layer, reuse_steps=steps, hidden=hidden, notes=notes)
    result = {"out": a.out, "layer": a.layer, "reuse_steps": list(steps), "records": len(train), "val_records": len(val),
              "rollout_s": round(t1 - t0, 1), "fit_s": round(time.perf_counter() - t1, 1), "log": log}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
