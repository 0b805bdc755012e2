"""Training output as a model: a run folder, its ``checkpoints`` folder or one step folder -> the weights
folder to load (the EMA weights, or the student's when the run kept no EMA).

Layout written by ``streamgen train`` (``docs/training.md``)::

    <run>/checkpoints/latest                 {"step": N, "folder": "step_0000000N"}
    <run>/checkpoints/step_0000000N/         student/ ema/ critic/ (model.safetensors + config.json)
                                             trainer.json, optimiser and RNG states
"""
from __future__ import annotations

from pathlib import Path

from streamgen.checkpoints.io import CONFIG_NAME, read_json

# Which networks of a step folder are loadable models, best first: the EMA is what training samples with.
WEIGHT_FOLDERS = ("ema", "student")


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder, a checkpoints folder or a step folder -> the step folder (the latest one)."""
    path = Path(path)
    for cand in (path, path / "checkpoints"):
        if (cand / "latest").is_file():
            record = read_json(cand / "latest")
            folder = cand / str(record.get("folder") if isinstance(record, dict) else "")
            if not folder.is_dir():
                raise FileNotFoundError(f"{cand / 'latest'} names {folder.name!r}, which is not a folder in {cand}")
            return folder
    if (path / "trainer.json").is_file() or any((path / n / CONFIG_NAME).is_file() for n in WEIGHT_FOLDERS):
        return path
    raise FileNotFoundError(f"no checkpoint in {path} (expected a run folder, its 'checkpoints' folder with a "
                            "'latest' file, or a step folder)")


def is_training_output(path: str | Path) -> bool:
    """Whether ``path`` is a run, checkpoints or step folder (rather than a weights folder itself)."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return False
    return (any((c / "latest").is_file() for c in (path, path / "checkpoints"))
            or any((path / n / CONFIG_NAME).is_file() for n in WEIGHT_FOLDERS))


def resolve_weights(path: str | Path) -> Path:
    """A weights folder (``model.safetensors`` + ``config.json``) as is; a run / checkpoints / step folder
    -> its latest EMA weights (the student's when the run kept no EMA)."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    step = resolve_checkpoint(path)
    for name in WEIGHT_FOLDERS:
        if (step / name / CONFIG_NAME).is_file():
            return step / name
    raise FileNotFoundError(f"checkpoint {step} holds none of {list(WEIGHT_FOLDERS)} with a {CONFIG_NAME}")


def model_folder(path: str | Path) -> Path:
    """What ``load_pipeline`` loads for a folder: training output resolved to its weights, anything else
    (a weights folder, a diffusers / Wan / Self-Forcing folder) unchanged."""
    return resolve_weights(path) if is_training_output(path) else Path(path)
