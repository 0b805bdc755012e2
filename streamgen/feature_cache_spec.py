"""What feature caching a pipeline uses (``--feature-cache MODE[@K][:PREDICTOR]``), torch-free so CLI parsers
stay fast.

``streamgen.feature_cache`` applies it; this module only names and checks the settings.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

# "reuse": training-free, the deep layers' residual of the previous step is added to this step's shallow
# features. "learned": a small trained predictor corrects that residual (its weights ship beside the model).
FEATURE_CACHE_MODES: tuple[str, ...] = ("reuse", "learned")
# The predictor file a "learned" cache reads from a model folder unless given another.
PREDICTOR_FILE = "feature_predictor.safetensors"


@dataclass(kw_only=True)
class FeatureCacheSpec:
    """Which denoising steps reuse the deep layers' features, from which layer on, and how."""

    mode: str = "reuse"
    # First layer replaced on reuse steps (layers 0..K-1 always run). None: a "learned" cache takes the
    # predictor file's, a "reuse" cache half the layers (the deep half is what is skipped).
    layer: int | None = None
    # Denoising step indices (0 = the first, noisiest step) that reuse. None: every other step (1, 3, ...);
    # step 0 never can (there is no previous step in its block) and the refill always runs every layer.
    reuse_steps: tuple[int, ...] | None = None
    # "learned" only: the predictor's safetensors; None = PREDICTOR_FILE in the loaded model's folder.
    predictor: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in FEATURE_CACHE_MODES:
            raise ValueError(f"feature cache mode {self.mode!r}: choose one of {FEATURE_CACHE_MODES}")
        if self.layer is not None and self.layer < 0:
            raise ValueError(f"feature cache layer {self.layer}: must be >= 0")
        if self.reuse_steps is not None:
            self.reuse_steps = tuple(int(s) for s in self.reuse_steps)
            if any(s < 1 for s in self.reuse_steps):
                raise ValueError(f"feature cache reuse_steps {self.reuse_steps}: step 0 has no previous step to reuse")
        if self.predictor is not None and self.mode != "learned":
            raise ValueError(f"feature cache predictor {self.predictor!r} given for mode {self.mode!r} (only 'learned' has one)")

    def describe(self) -> dict:
        return {"mode": self.mode, "layer": self.layer, "reuse_steps": list(self.reuse_steps) if self.reuse_steps else None}


def parse_feature_cache(text: str) -> FeatureCacheSpec:
    """``MODE[@K][:PREDICTOR]`` -> the spec; one clear line when bad. ``reuse@1``: plain reuse from layer 1
    on; ``learned``: the model folder's predictor; ``learned@2:path.safetensors``: that predictor file."""
    head, _, predictor = text.partition(":")
    mode, _, layer = head.partition("@")
    if layer and not layer.isdigit():
        raise ValueError(f"feature cache {text!r}: the layer after '@' must be a whole number, e.g. {mode or 'reuse'}@1")
    return FeatureCacheSpec(mode=mode, layer=int(layer) if layer else None, predictor=predictor or None)


def with_model_folder(spec: FeatureCacheSpec | str, folder: Path | None) -> FeatureCacheSpec:
    """``spec`` (parsed if text) with a "learned" cache's predictor defaulting to ``folder / PREDICTOR_FILE``
    (``load_pipeline`` passes the folder of the model it loads: a shipped default's or a checkpoint's)."""
    spec = parse_feature_cache(spec) if isinstance(spec, str) else spec
    if spec.mode != "learned" or spec.predictor is not None or folder is None:
        return spec
    return replace(spec, predictor=str(folder / PREDICTOR_FILE))
