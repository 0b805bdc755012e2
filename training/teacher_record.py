"""How a network was trained, recorded beside its weights, and the attention its score must be computed
under.

A DMD real score is only as good as the teacher's forward is in-distribution: a bidirectional
``teacher`` was trained with full attention (no mask), an autoregressive ``ar_teacher`` only through its
teacher-forcing forward ``[clean | noisy]`` under the teacher-forcing mask. Every checkpoint written by
the trainer carries a ``training`` record in its ``config.json`` metadata (the recipe, the attention it
was trained under, its text and action dropout); the real score reads it (``dmd.teacher_attention=auto``)
and calls the teacher the way it was trained (``training_mask``, the one function both the ``ar_teacher``
training step and the real score take their mask from). The ODE initialisation reads the same record
for the way its teacher generates trajectories (``ode_teacher_kind``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from streamgen.checkpoints.io import read_json
from streamgen.checkpoints.run_folder import resolve_weights
from streamgen.training.modalities import teacher_forcing_token_mask

BIDIRECTIONAL, TEACHER_FORCING, STREAMING = "bidirectional", "teacher_forcing", "streaming"
ATTENTIONS = (BIDIRECTIONAL, TEACHER_FORCING)  # the attentions a teacher can have been trained under
RECORD_KEY = "training"


def recipe_attention(recipe: str) -> str:
    """The attention a recipe trains its network under: the teachers' own; every other recipe trains a
    streaming (block-causal, rolling-cache) student."""
    return {"teacher": BIDIRECTIONAL, "ar_teacher": TEACHER_FORCING}.get(recipe, STREAMING)


def training_record(config) -> dict:
    """The record written beside a run's weights (``RunConfig`` ``config``)."""
    return {"recipe": config.recipe, "attention": recipe_attention(config.recipe),
            "text_dropout": config.data.cfg_dropout, "action_dropout": config.data.action_dropout}


def read_record(folder: str | Path) -> dict | None:
    """The training record of a weights folder (``config.json`` metadata; a run, checkpoints or step folder
    gives its latest weights' record), None when it has none."""
    path = resolve_weights(folder) / "config.json"
    if not path.is_file():
        return None
    record = read_json(path).get("metadata", {}).get(RECORD_KEY)
    return dict(record) if isinstance(record, dict) else None


def teacher_attention(setting: str, folder: str | Path | None) -> str:
    """The attention the teacher's score is computed under. ``setting`` is ``dmd.teacher_attention``:
    ``auto`` reads the teacher's record (a randomly initialised smoke-run teacher, ``folder`` None, is
    bidirectional); an explicit value is for teachers saved before records existed."""
    if setting != "auto":
        if setting not in ATTENTIONS:
            raise ValueError(f"dmd.teacher_attention={setting!r} must be 'auto' or one of {ATTENTIONS}")
        return setting
    if folder is None:
        return BIDIRECTIONAL
    record = read_record(folder)
    if record is None or record.get("attention") not in ATTENTIONS:
        found = None if record is None else record.get("attention")
        raise ValueError(f"teacher {folder}: its config.json records no teacher training (attention={found!r}); "
                         f"set dmd.teacher_attention to one of {ATTENTIONS}")
    return record["attention"]


# The ODE trajectories each trained attention generates in-distribution: a bidirectional teacher denoises
# the whole clip at once; a teacher-forcing ar_teacher (or a streaming student) block by block with its caches.
ODE_KINDS = {BIDIRECTIONAL: "bidirectional", TEACHER_FORCING: "causal", STREAMING: "causal"}


def ode_teacher_kind(setting: str, folder: str | Path | None) -> str:
    """``ode.teacher_kind`` resolved against the teacher's record: ``auto`` takes the kind its training
    attention generates (``ODE_KINDS``); an explicit value must agree with the record, and names the kind
    of a teacher saved before records existed. A randomly initialised smoke-run teacher (``folder`` None)
    is bidirectional unless named."""
    if setting != "auto" and setting not in ("bidirectional", "causal"):
        raise ValueError(f"ode.teacher_kind={setting!r} must be 'auto', 'bidirectional' or 'causal'")
    if folder is None:
        return "bidirectional" if setting == "auto" else setting
    record = read_record(folder)
    kind = ODE_KINDS.get(record.get("attention")) if record is not None else None
    if kind is None:
        if setting == "auto":
            found = None if record is None else record.get("attention")
            raise ValueError(f"teacher {folder}: its config.json records no training attention (attention={found!r}); "
                             "set ode.teacher_kind to 'bidirectional' or 'causal'")
        return setting
    if setting not in ("auto", kind):
        raise ValueError(f"ode.teacher_kind={setting!r} contradicts teacher {folder}'s training record (recipe "
                         f"{record.get('recipe')!r}, attention {record['attention']!r}: it generates {kind!r} "
                         f"trajectories); set ode.teacher_kind=auto or {kind!r}")
    return kind


def training_mask(attention: str, config, video_frames: int, device) -> torch.Tensor | None:
    """The token mask a network of ``attention`` was trained under over ``video_frames`` frames: None
    (full attention) for a bidirectional teacher, the ``[clean | noisy]`` teacher-forcing mask otherwise."""
    if attention == BIDIRECTIONAL:
        return None
    if attention == TEACHER_FORCING:
        return teacher_forcing_token_mask(config, video_frames, device)
    raise ValueError(f"attention={attention!r} has no training mask; expected one of {ATTENTIONS}")
