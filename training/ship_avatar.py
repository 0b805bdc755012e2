"""Assemble a shipped avatar folder (``streamgen/weights/avatar/``) from a trained run.

``python -m streamgen.training.ship_avatar --model runs/avatar/sf --ae runs/avatar/ae --data data/avatar --out streamgen/weights/avatar``

Writes ``config.json`` + ``model.safetensors`` (the student's EMA weights, or any weights folder, with its
training record; stored as fp16, loaded as fp32), ``video_ae.safetensors`` (the face autoencoder: it decodes the stream and encodes the
reference), ``start_context.npz`` (the default identity's reference over the sink frames: ``load_pipeline``
primes every session with it, ``Session.set_reference`` switches it) and ``references.npz`` (``images``
uint8 ``[N, 64, 64, 3]``: the reference images of the training identities, the identities the model knows
best, for a picker). The model card is written by hand beside them.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from streamgen.checkpoints.folders import load_checkpoint_dir
from streamgen.checkpoints.io import save_checkpoint
from streamgen.decoders.trained import VIDEO_FILE
from streamgen.identity import reference_frames

from .data.avatar_faces import Identity, draw_face
from .state import resolve_weights
from .teacher_record import RECORD_KEY, read_record

START_CONTEXT_FILE = "start_context.npz"
REFERENCES_FILE = "references.npz"


def identity_references(data: str | Path, split: str = "train") -> np.ndarray:
    """uint8 ``[N, 64, 64, 3]``: each identity of ``split`` at rest (mouth closed, eyes open, head centred),
    drawn as the set draws its clips' references."""
    meta = json.loads((Path(data) / "meta.json").read_text())
    idents = meta["identities"][split]
    if not idents:
        raise ValueError(f"{data}: the {split} split has no identities")
    return np.stack([draw_face(Identity.from_dict(d), 0.0, 0.5, 1.0, (0.0, 0.0)) for d in idents])


def write_avatar_folder(out: str | Path, model: str | Path, ae: str | Path, data: str | Path, *, identity: int = 0) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config, net = load_checkpoint_dir(Path(model))
    if config.audio_in is None:
        raise ValueError(f"--model {model}: {config.name!r} takes no speech; not an avatar")
    record = read_record(model)
    # fp16 storage halves the package (the weights are small and well inside its range); loaded as fp32
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    save_checkpoint(out, config, state, metadata={"source": str(model), "stored_dtype": "float16",
                                                  **({RECORD_KEY: record} if record else {})})
    shutil.copyfile(Path(ae) / VIDEO_FILE, out / VIDEO_FILE)
    refs = identity_references(data)
    if not 0 <= identity < len(refs):
        raise ValueError(f"--identity {identity}: the set has {len(refs)} training identities")
    np.savez_compressed(out / REFERENCES_FILE, images=refs)
    np.savez(out / START_CONTEXT_FILE, video=reference_frames(config, refs[identity]),
             source=np.array(f"training identity {identity} at rest"))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Assemble a shipped avatar folder from trained weights and the face autoencoder.")
    p.add_argument("--model", required=True, help="weights folder or run folder (its latest EMA)")
    p.add_argument("--ae", required=True, help="folder with video_ae.safetensors")
    p.add_argument("--data", default="data/avatar", help="the avatar set (its meta.json gives the identities)")
    p.add_argument("--out", default="streamgen/weights/avatar")
    p.add_argument("--identity", type=int, default=0, help="the training identity sessions start with (default 0)")
    a = p.parse_args(argv)
    model = Path(a.model)
    if not (model / "config.json").is_file():  # a run folder: its latest EMA (or student) weights
        model = resolve_weights(model)
    print(write_avatar_folder(a.out, model, a.ae, a.data, identity=a.identity))


if __name__ == "__main__":
    main()
