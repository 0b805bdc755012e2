"""Training checkpoints: weights (safetensors, loadable by ``streamgen.load_pipeline``), optimiser
states, EMA, step and every RNG state, so a resumed run continues bit for bit.

Layout of ``<out>/checkpoints``::

    latest                       JSON {"step": N, "folder": "step_00000N"} (replaced atomically)
    step_00000N/
      student/ ema/ critic/      model.safetensors + config.json (streamgen format)
      optim_<name>.safetensors   optimiser tensors; param groups in its metadata
      rng_rank<R>.safetensors    torch CPU / CUDA, trainer generators, numpy state of rank R
      trainer.json               step, python RNG states per rank, the run config

A step folder is written as ``step_N.partial`` and renamed when complete (every file inside is itself
written atomically), and ``latest`` moves only after the rename, so a run killed mid-save resumes from
the previous checkpoint and never sees a partial file.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from streamgen.training.distributed import full_tensor
from streamgen.training.teacher_record import RECORD_KEY, training_record
# One resolution of run / checkpoints / step folders for training and the library alike.
from streamgen.checkpoints.run_folder import resolve_checkpoint, resolve_weights  # noqa: F401 (re-exported)
from streamgen.checkpoints.io import load_safetensors, read_json, safetensors_metadata, save_checkpoint, save_safetensors, write_json

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on the CPU (a collective for sharded models; rank 0 gets it)."""
    return get_model_state_dict(model, options=FULL)


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


def _optim_flat(model, optim) -> tuple[dict[str, torch.Tensor], dict]:
    sd = get_optimizer_state_dict(model, optim, options=FULL)
    tensors = {}
    for fqn, entries in sd.get("state", {}).items():
        for key, value in entries.items():
            tensors[f"{fqn}::{key}"] = torch.as_tensor(value)
    return tensors, {"param_groups": sd.get("param_groups", [])}


def _optim_unflat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[str, dict] = {}
    for name, value in tensors.items():
        fqn, _, key = name.rpartition("::")
        state.setdefault(fqn, {})[key] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(model, optim, path: Path) -> None:
    """Load ``optim_<name>.safetensors`` into ``optim``. Parameters that never had a gradient (for example a
    learnable sink that rollouts only read from the caches) have no optimiser state and none is saved for
    them; they start without one, as they would in the uninterrupted run. Every saved entry must name a
    parameter of the model."""
    meta = json.loads(safetensors_metadata(path)["groups"])
    saved = _optim_unflat(load_safetensors(path), meta)
    params = dict(model.named_parameters())  # canonical names: FSDP2 shards in place, DDP here wraps nothing
    stray = sorted(set(saved["state"]) - set(params))
    if stray:
        raise ValueError(f"{path}: optimiser state for {stray[:5]} ({len(stray)} parameters) matches no parameter of the model")
    set_optimizer_state_dict(model, optim, saved, options=StateDictOptions(full_state_dict=True, strict=False))
    for name, param in params.items():  # loading first gives every parameter a zero state: drop the unsaved ones
        if name not in saved["state"]:
            optim.state.pop(param, None)


def rng_state(generators: dict[str, torch.Generator]) -> tuple[dict[str, torch.Tensor], list]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    for name, g in generators.items():
        tensors[f"gen::{name}"] = g.get_state()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    tensors["numpy_meta"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
    tensors["numpy_gauss"] = torch.tensor([gauss], dtype=torch.float64)
    return tensors, list(random.getstate())


def set_rng_state(tensors: dict[str, torch.Tensor], python_state, generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    for name, g in generators.items():
        g.set_state(tensors[f"gen::{name}"])
    pos, has_gauss = (int(v) for v in tensors["numpy_meta"])
    np.random.set_state(("MT19937", tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, float(tensors["numpy_gauss"][0])))
    version, internal, gauss = python_state
    random.setstate((version, tuple(internal), gauss))


def save_training_checkpoint(trainer, root: Path) -> Path:
    """Write a complete step folder (collective: every rank calls it)."""
    info, step = trainer.dist, trainer.step
    name = f"step_{step:08d}"
    partial, final = root / f"{name}.partial", root / name
    weights = {n: model_state(m) for n, m in trainer.trainable.items()}  # collective for sharded models
    optims = {n: _optim_flat(trainer.trainable[n], o) for n, o in trainer.optimizers.items()}
    ema = trainer.ema.state() if trainer.ema is not None else None
    rng_t, rng_py = rng_state(trainer.generators)
    py_states, hashes = [None] * info.world, [None] * info.world
    local_hash = weights_hash(trainer.trainable)
    if info.enabled:
        torch.distributed.all_gather_object(py_states, rng_py)
        torch.distributed.all_gather_object(hashes, local_hash)
    else:
        py_states, hashes = [rng_py], [local_hash]
    if info.is_main:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        meta = {"recipe": trainer.config.recipe, "step": step, RECORD_KEY: training_record(trainer.config)}
        for n, state in weights.items():
            save_checkpoint(partial / n, trainer.model_config, state, metadata=meta)
        if ema is not None:
            save_checkpoint(partial / "ema", trainer.model_config, ema, metadata=dict(meta, ema_decay=trainer.config.train.ema_decay))
        for n, (tensors, groups) in optims.items():
            save_safetensors(tensors, partial / f"optim_{n}.safetensors", {"groups": json.dumps(groups)})
        write_json(partial / "trainer.json", {"step": step, "python_rng": py_states, "world": info.world,
                                              "rank_weight_hashes": hashes, "config": trainer.config.to_dict()})
    trainer.barrier()
    save_safetensors(rng_t, partial / f"rng_rank{info.rank}.safetensors")
    trainer.barrier()
    if info.is_main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        write_json(root / "latest", {"step": step, "folder": name})
        _prune(root, trainer.config.train.keep_checkpoints, keep=name)
    trainer.barrier()
    return final


def weights_hash(networks: dict[str, torch.nn.Module]) -> str:
    """SHA-256 of this rank's view of the whole parameters (sharded ones are gathered: collective)."""
    h = hashlib.sha256()
    for name, model in sorted(networks.items()):
        for pname, p in model.named_parameters():
            h.update(f"{name}.{pname}".encode())
            h.update(full_tensor(p.detach()).float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _prune(root: Path, keep_n: int, keep: str) -> None:
    for stale in root.glob("step_*.partial"):  # left by a run killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    steps = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".partial"))
    for p in steps[: max(0, len(steps) - max(keep_n, 1))]:
        if p.name != keep:
            shutil.rmtree(p, ignore_errors=True)


def load_training_checkpoint(trainer, folder: Path) -> None:
    info = trainer.dist
    record = read_json(folder / "trainer.json")
    saved, now = record.get("config", {}), trainer.config.to_dict()
    for key in ("recipe", "model", "model_overrides"):
        if saved.get(key) != now[key]:
            raise ValueError(f"{folder} was written with {key}={saved.get(key)!r}; this run has {key}={now[key]!r}")
    if record["world"] != info.world:
        raise ValueError(f"{folder} was written by {record['world']} processes; resuming with {info.world} would change the RNG streams")
    for n, model in trainer.trainable.items():
        load_model_state(model, load_safetensors(folder / n / "model.safetensors"))
    for n, optim in trainer.optimizers.items():
        load_optimizer_state(trainer.trainable[n], optim, folder / f"optim_{n}.safetensors")
    if trainer.ema is not None:
        trainer.ema.load(load_safetensors(folder / "ema" / "model.safetensors"))
    set_rng_state(load_safetensors(folder / f"rng_rank{info.rank}.safetensors"), record["python_rng"][info.rank], trainer.generators)
    trainer.step = int(record["step"])
