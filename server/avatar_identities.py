"""The identities an avatar model ships for its reference-image picker: ``GET /v1/identities?model=NAME``.

A model folder may hold ``references.npz`` (``images`` uint8 ``[N, H, W, 3]``: the faces it was trained on,
written by ``training/ship_avatar.py``). They are read once when the server starts, checked against the bounds
below and kept as PNG base64, ready to be sent back as a ``reference`` message (docs/protocol.md section 8):
the page shows them beside the upload and sends the chosen one exactly as it sends an uploaded image, so the
server takes one path for both. The route needs the session token (when one is set), like the session routes.
"""
from __future__ import annotations

import base64
import io
import logging
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from PIL import Image
from streamgen_client import protocol as P

from streamgen.pipeline import model_folder

from .security import check_token

log = logging.getLogger("streamgen.server.identities")
IDENTITIES_FILE = "references.npz"
# The shipped avatar has 12; a picker with more is no longer a picker, and the answer stays small.
MAX_IDENTITIES = 64
# Each identity is shown (and sent back as a reference) at most this big a side: the avatar works at 64x64,
# and a larger stored image is scaled down (its PNG must also fit a reference message: MAX_REFERENCE_CHARS).
MAX_SIDE = 256
# The file itself is read only below this size (64 identities of 256x256x3 are 12.6 MB).
MAX_FILE_BYTES = 16 * 1024 * 1024
router = APIRouter()


def png_base64(image: np.ndarray) -> str:
    """uint8 ``[H, W, 3]`` as base64 PNG (what a ``reference`` message's ``image`` carries)."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii")


def read_identities(folder: Path | None) -> list[dict]:
    """The picker entries of ``folder/references.npz`` (empty when there is none); ValueError, naming the file,
    when it is there but not ``images`` uint8 ``[N, H, W, 3]`` within the bounds."""
    path = folder / IDENTITIES_FILE if folder is not None else None
    if path is None or not path.is_file():
        return []
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, max {MAX_FILE_BYTES}")
    try:
        with np.load(path, allow_pickle=False) as data:
            images = data["images"]
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: no readable 'images' array ({type(e).__name__}: {e})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: 'images' is {images.dtype} {list(images.shape)}; want uint8 [N, H, W, 3]")
    if not 1 <= images.shape[0] <= MAX_IDENTITIES or min(images.shape[1:3]) < 1:
        raise ValueError(f"{path}: {images.shape[0]} identities of {images.shape[2]}x{images.shape[1]}; "
                         f"want 1..{MAX_IDENTITIES}, each side >= 1")
    entries = []
    for i, image in enumerate(images):  # image: [H, W, 3]
        pic = Image.fromarray(image)
        if max(pic.size) > MAX_SIDE:
            pic.thumbnail((MAX_SIDE, MAX_SIDE))
        png = png_base64(np.asarray(pic))
        if len(png) > P.MAX_REFERENCE_CHARS:
            log.warning("%s: identity %d is %d base64 characters as PNG, over a reference message's %d: left out",
                        path, i, len(png), P.MAX_REFERENCE_CHARS)
            continue
        entries.append({"index": i, "name": f"identity {i}", "width": pic.size[0], "height": pic.size[1],
                        "png": png})
    return entries


def load_all(names: Iterable[tuple[str, str]]) -> dict[str, list[dict]]:
    """``{served name: entries}`` for the (name as given, served name) pairs of the models the server loads."""
    out = {}
    for name, served in names:
        try:
            out[served] = read_identities(model_folder(name))
        except ValueError as e:  # the model streams without a picker rather than not at all
            log.warning("identities of %s left out: %s", served, e)
            out[served] = []
    return out


@router.get("/v1/identities", tags=["session"],
            summary="An avatar model's shipped identities (PNG base64) for the reference-image picker")
async def identities(request: Request, model: str | None = None) -> JSONResponse:
    app = request.app.state.streamgen
    why = check_token(request, app.settings)
    if why:
        app.metrics.error("unauthorized")
        body = P.Error(seq=0, code="unauthorized", message=why).to_dict()
        return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    name = model if model is not None else next(iter(app.specs), None)
    if name not in app.identities:
        app.metrics.error("out_of_range")
        why = f"model={name!r} is not served here; choose one of {sorted(app.identities)}"
        body = P.Error(seq=0, code="out_of_range", message=why[:P.MAX_ERROR_CHARS]).to_dict()
        return JSONResponse(body, status_code=404)
    return JSONResponse({"model": name, "identities": app.identities[name]},
                        headers={"Cache-Control": "private, max-age=3600"})
