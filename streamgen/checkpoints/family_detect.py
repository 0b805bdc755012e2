"""Which released model a checkpoint is, so it streams with its own settings (``streamgen.families.FAMILIES``).

Evidence, strongest first: ``"family"`` in the folder's ``streamgen.json``; our own ``config.json`` (its
settings are kept as they are); a Matrix-Game config (``action_config``); a Wan2.1 / diffusers base folder;
a LoRA beside the weights (LongLive ships ``lora.pt`` next to ``longlive_base.pt``); the file name
(``longlive``, ``causvid``, ``self_forcing``); else a generator checkpoint is taken as Self-Forcing's,
the layout it was released in. The reason is logged with the settings applied.
"""
from __future__ import annotations

import logging
from pathlib import Path

from streamgen.checkpoints import io
from streamgen.checkpoints.components import SPEC_NAME, WEIGHT_SUFFIXES, read_spec
from streamgen.config import ModelConfig
from streamgen.presets import preset
from streamgen.families import FAMILIES, family

log = logging.getLogger("streamgen.checkpoints")

_NAME_HINTS = (("longlive", "longlive"), ("causvid", "causvid"), ("self_forcing", "self-forcing"),
               ("self-forcing", "self-forcing"), ("matrix", "matrix-game-2"))


def detect_family(path: str | Path) -> tuple[str | None, str]:
    """``(family name or None, why)`` for a model folder or weights file; None = keep the folder's own config."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    spec = read_spec(folder)
    if "family" in spec:
        family(spec["family"])  # an unknown name is an error naming the known ones
        return spec["family"], f"stated in {folder / SPEC_NAME}"
    config = folder / io.CONFIG_NAME
    if path.is_dir() and config.is_file():
        data = io.read_json(config)
        if io.is_own_config(data):
            return None, f"{config} states its settings"
        if isinstance(data, dict) and "action_config" in data:
            return "matrix-game-2", f"{config} has Matrix-Game's action_config"
        return "wan2.1", f"{config} is a Wan2.1 / diffusers transformer config"
    if path.is_dir() and (path / "model_index.json").is_file():
        return "wan2.1", f"{path} is a diffusers pipeline folder"
    loras = [p.name for p in folder.iterdir() if p.is_file() and "lora" in p.name.lower() and p.suffix in WEIGHT_SUFFIXES]
    if loras or "lora" in spec:
        return "longlive", f"a LoRA ({spec.get('lora') or loras[0]}) beside the weights, as LongLive ships it"
    names = [path.name.lower()] + ([p.name.lower() for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES] if path.is_dir() else [])
    for tag, name in _NAME_HINTS:
        if any(tag in n for n in names):
            return name, f"the file name contains {tag!r}"
    return "self-forcing", (f"a generator checkpoint with no {SPEC_NAME} family, no LoRA and no name hint: taken as "
                            "Self-Forcing's release")


def family_base(base: ModelConfig | None, name: str, why: str, source: str) -> ModelConfig:
    """The config a checkpoint's shapes and the user's overrides go onto: ``base`` (default: the
    ``wan2.1-1.3b`` preset: latent grid, text length) with the family's streaming settings. Logs them."""
    fam = FAMILIES[name]
    log.info("%s: family %s (%s); streaming settings applied: %s", source, name, why, fam.summary())
    return (base or preset("wan2.1-1.3b")).with_(family=name, **fam.settings)
