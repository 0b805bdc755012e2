"""Finding the parts of a Wan-family model on disk: transformer, VAE, umT5 + tokenizer, tiny decoder, LoRA.

Three kinds of folder are recognised (docs/checkpoints.md):

- a **Wan2.1 original** folder (``Wan2.1-T2V-1.3B``): ``config.json`` (``WanModel``) + the transformer
  weights, ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth`` and the tokenizer in ``google/umt5-xxl/``;
- a **diffusers** pipeline folder: ``model_index.json`` + ``transformer/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``;
- a **student** folder (Self-Forcing, CausVid, LongLive) holding a ``.pt`` / ``.safetensors`` generator
  checkpoint (or that file itself), with the VAE and umT5 taken from a **base** folder of one of the two
  kinds above (``--base DIR`` or ``"base"`` in a ``streamgen.json`` beside the weights).

A base folder must be complete: a missing part raises one line naming the file, the component and where
it was looked for. A student with no base streams with the preview decoder and the hash text encoder
(its layout check and throughput do not need them). Nothing here loads weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamgen.checkpoints import io

SPEC_NAME = "streamgen.json"
WAN_VAE = "Wan2.1_VAE.pth"
WAN_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_TOKENIZER = "google/umt5-xxl"
TINY_DECODERS = ("taew2_1.pth", "taew2_1.safetensors")
WAN_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"  # Wan i2v's / Matrix-Game 2.0's image encoder
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# Files in a student folder that are not the generator: the LoRA, the tiny decoder, Wan's own parts.
_NOT_GENERATOR = ("lora", "taew", "wan2.1_vae", "models_t5", "models_clip", "diffusion_pytorch_model")
SPEC_KEYS = {"base", "family", "weights", "lora", "lora_alpha", "tiny_decoder", "num_heads", "decoder", "overrides", "ema"}


@dataclass
class Components:
    """Where each part of a model is (None: absent), and what the folder said about itself."""

    transformer: Path  # a folder or file for ``load_checkpoint_dir``
    kind: str  # "streamgen" | "wan_original" | "diffusers" | "student" | "matrix_game"
    vae: Path | None = None  # diffusers ``vae/`` folder or ``Wan2.1_VAE.pth``
    text_encoder: Path | None = None  # diffusers ``text_encoder/`` folder or Wan's umT5 ``.pth``
    tokenizer: Path | None = None
    tiny_decoder: Path | None = None
    lora: Path | None = None
    image_encoder: Path | None = None  # Wan's CLIP .pth (Matrix-Game 2.0: encodes the start image)
    base: Path | None = None
    num_heads: int | None = None  # the base folder's transformer head count and width (see load_parts)
    base_dim: int | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # streamgen.json


def read_spec(folder: Path) -> dict[str, Any]:
    path = folder / SPEC_NAME
    if not path.is_file():
        return {}
    data = io.read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with keys from {sorted(SPEC_KEYS)}")
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(SPEC_KEYS)}")
    return data


def _missing(component: str, folder: Path, looked: list[str]) -> FileNotFoundError:
    return FileNotFoundError(f"{folder}: no {component}: looked for {' or '.join(looked)} in {folder}")


def _diffusers_part(folder: Path, sub: str, component: str) -> Path:
    part = folder / sub
    if not (part / "config.json").is_file():
        raise _missing(component, folder, [f"{sub}/config.json"])
    if not any(part.glob("*.safetensors")) and not any(part.glob("*.bin")):
        raise _missing(component + " weights", folder, [f"{sub}/diffusion_pytorch_model.safetensors", f"{sub}/model.safetensors"])
    return part


def base_parts(folder: Path) -> dict[str, Any]:
    """VAE, umT5 and tokenizer of a complete Wan2.1 original or diffusers folder, and its head count."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"base folder {folder} does not exist; expected a Wan2.1 original or diffusers Wan folder")
    if (folder / "model_index.json").is_file():
        tokenizer = folder / "tokenizer"
        if not tokenizer.is_dir():
            raise _missing("umT5 tokenizer", folder, ["tokenizer/"])
        heads = dim = None
        if (folder / "transformer" / "config.json").is_file():
            t = io.read_json(folder / "transformer" / "config.json")
            heads = t.get("num_attention_heads")
            dim = heads * t["attention_head_dim"] if heads and t.get("attention_head_dim") else None
        return {"vae": _diffusers_part(folder, "vae", "VAE (the video decoder)"),
                "text_encoder": _diffusers_part(folder, "text_encoder", "umT5 text encoder"),
                "tokenizer": tokenizer, "num_heads": heads, "base_dim": dim}
    if (folder / io.CONFIG_NAME).is_file() or (folder / WAN_VAE).is_file() or (folder / WAN_T5).is_file():
        if not (folder / WAN_VAE).is_file():
            raise _missing(f"VAE (the video decoder) {WAN_VAE}", folder, [WAN_VAE, "vae/ (diffusers)"])
        if not (folder / WAN_T5).is_file():
            raise _missing(f"umT5 text encoder {WAN_T5}", folder, [WAN_T5, "text_encoder/ (diffusers)"])
        if not (folder / WAN_TOKENIZER).is_dir():
            raise _missing("umT5 tokenizer", folder, [WAN_TOKENIZER + "/"])
        wan = io.read_json(folder / io.CONFIG_NAME) if (folder / io.CONFIG_NAME).is_file() else {}
        return {"vae": folder / WAN_VAE, "text_encoder": folder / WAN_T5, "tokenizer": folder / WAN_TOKENIZER,
                "num_heads": wan.get("num_heads"), "base_dim": wan.get("dim")}
    raise FileNotFoundError(
        f"base folder {folder} is neither a diffusers Wan folder (model_index.json) nor a Wan2.1 original folder "
        f"(config.json, {WAN_VAE}, {WAN_T5})")


def generator_file(folder: Path, spec: dict) -> Path:
    """The generator checkpoint of a student folder: streamgen.json's "weights", else the one weights file that
    is not a LoRA, a decoder or a Wan part."""
    if "weights" in spec:
        path = folder / spec["weights"]
        if not path.is_file():
            raise _missing(f"generator weights {spec['weights']} (named in {SPEC_NAME})", folder, [spec["weights"]])
        return path
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                   and not any(tag in p.name.lower() for tag in _NOT_GENERATOR))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{folder} is not a checkpoint folder: expected a config.json (streamgen, Wan2.1 or diffusers), a "
            f"model_index.json (diffusers pipeline) or one generator checkpoint (.pt / .safetensors, not a LoRA or "
            f"decoder); found {[p.name for p in found]} (name the generator with 'weights' in {SPEC_NAME})")
    return found[0]


def _optional(folder: Path, spec: dict, key: str, names: tuple[str, ...], component: str) -> Path | None:
    if key in spec:
        path = folder / spec[key]
        if not path.is_file():
            raise _missing(f"{component} {spec[key]} (named in {SPEC_NAME})", folder, [spec[key]])
        return path
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _lora_file(folder: Path, spec: dict) -> Path | None:
    if "lora" in spec:
        return _optional(folder, spec, "lora", (), "LoRA")
    found = sorted(p for p in folder.iterdir() if p.is_file() and "lora" in p.name.lower() and p.suffix in WEIGHT_SUFFIXES)
    return found[0] if len(found) == 1 else None


def matrix_game_parts(folder: Path, spec: dict, base: str | Path | None) -> dict[str, Any]:
    """The Wan VAE (it encodes the start image and decodes the stream) and tiny decoder of a Matrix-Game 2.0
    folder: beside its config, in the folder above (the release keeps Wan2.1_VAE.pth at its top), or in
    ``base`` (--base / streamgen.json's "base"); its CLIP file is looked for in the same places (optional:
    ``streamgen.image_condition`` has a stand-in). It has no text encoder."""
    base_dir = Path(base) if base is not None else (folder / spec["base"] if "base" in spec else None)
    places = [folder, folder.parent] + ([base_dir] if base_dir is not None else [])
    vae = next((d / WAN_VAE for d in places if (d / WAN_VAE).is_file()), None)
    if vae is None and base_dir is not None and (base_dir / "vae" / "config.json").is_file():
        vae = base_dir / "vae"
    tiny = _optional(folder, spec, "tiny_decoder", TINY_DECODERS, "tiny decoder")
    if vae is None and tiny is None:
        raise FileNotFoundError(
            f"{folder}: no VAE (encodes the start image, decodes the video) {WAN_VAE}: looked for {WAN_VAE} in "
            f"{' or '.join(str(d) for d in places)}, vae/ in the base folder, or taew2_1.pth beside the config")
    clip = next((d / WAN_CLIP for d in places if (d / WAN_CLIP).is_file()), None)
    return {"vae": vae, "tiny_decoder": tiny, "base": base_dir, "image_encoder": clip}


def find_components(path: str | Path, base: str | Path | None = None) -> Components:
    """The parts of the model at ``path`` (a folder or a generator file); ``base`` overrides streamgen.json's."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist")
    folder = path.parent if path.is_file() else path
    spec = read_spec(folder)
    if path.is_dir() and (path / io.CONFIG_NAME).is_file() and io.is_own_config(io.read_json(path / io.CONFIG_NAME)):
        return Components(transformer=path, kind="streamgen", spec=spec)
    if path.is_dir() and (path / io.CONFIG_NAME).is_file() and "action_config" in io.read_json(path / io.CONFIG_NAME):
        return Components(transformer=path, kind="matrix_game", spec=spec, **matrix_game_parts(path, spec, base))
    if path.is_dir() and ((path / "model_index.json").is_file() or (path / io.CONFIG_NAME).is_file()):
        kind = "diffusers" if (path / "model_index.json").is_file() else "wan_original"
        if kind == "wan_original" and io.read_json(path / io.CONFIG_NAME).get("_class_name") == "WanTransformer3DModel":
            return Components(transformer=path, kind="diffusers", spec=spec)  # a bare transformer/ folder
        parts = base_parts(path)
        return Components(transformer=path, kind=kind, base=path, spec=spec,
                          tiny_decoder=_optional(folder, spec, "tiny_decoder", TINY_DECODERS, "tiny decoder"),
                          **parts)
    weights = path if path.is_file() else generator_file(folder, spec)
    base_dir = Path(base) if base is not None else (folder / spec["base"] if "base" in spec else None)
    parts = base_parts(base_dir) if base_dir is not None else {}
    tiny = _optional(folder, spec, "tiny_decoder", TINY_DECODERS, "tiny decoder")
    if tiny is None and base_dir is not None:
        tiny = _optional(base_dir, {}, "tiny_decoder", TINY_DECODERS, "tiny decoder")
    return Components(transformer=weights, kind="student", base=base_dir, spec=spec, tiny_decoder=tiny,
                      lora=_lora_file(folder, spec), **parts)
