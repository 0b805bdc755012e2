"""The reference picker's identities (``GET /v1/identities``, server/avatar_identities.py): the shipped faces
beside the model, as PNG base64, token-protected, bounded; a bad file leaves the picker out, not the model."""
from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from streamgen.server.avatar_identities import MAX_IDENTITIES, MAX_SIDE, load_all, read_identities

from .avatar_model import IDENTITIES, NAME, shipped_identities
from .conftest import running_server


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def decode(png: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))


def test_identities_are_the_shipped_faces_pixel_for_pixel(avatar_server):
    status, body = get(avatar_server.url + f"/v1/identities?model={NAME}")
    assert status == 200 and body["model"] == NAME
    want = shipped_identities()[:IDENTITIES]
    assert [e["index"] for e in body["identities"]] == list(range(IDENTITIES))
    for entry, image in zip(body["identities"], want):
        assert (entry["width"], entry["height"]) == (64, 64)
        np.testing.assert_array_equal(decode(entry["png"]), image)  # lossless: what the model was trained on
    status, body = get(avatar_server.url + "/v1/identities?model=nope")
    assert status == 404 and body["code"] == "out_of_range" and "'nope'" in body["message"]


def test_identities_need_the_session_token():
    with running_server(model="tiny", auth_token="s3cret") as s:
        status, body = get(s.url + "/v1/identities?model=tiny")
        assert status == 401 and body["code"] == "unauthorized"
        assert get(s.url + "/v1/identities?model=tiny", token="wrong")[0] == 401
        assert get(s.url + "/v1/identities?model=tiny", token="s3cret") == (200, {"model": "tiny", "identities": []})


def test_bad_identity_files_are_refused_in_one_line(tmp_path, caplog):
    rng = np.random.default_rng(0)
    cases = {
        "float": rng.random((2, 8, 8, 3)),
        "gray": rng.integers(0, 255, (2, 8, 8), dtype=np.uint8),
        "many": rng.integers(0, 255, (MAX_IDENTITIES + 1, 4, 4, 3), dtype=np.uint8),
        "empty": np.zeros((0, 8, 8, 3), np.uint8),
    }
    for name, images in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        np.savez(folder / "references.npz", images=images)
        with pytest.raises(ValueError, match=f"{name}/references.npz") as e:
            read_identities(folder)
        assert "\n" not in str(e.value)
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "references.npz").write_bytes(b"PK not a zip at all")
    with pytest.raises(ValueError, match="no readable 'images'"):
        read_identities(tmp_path / "garbage")
    # A large face is scaled down to MAX_SIDE; a folder without the file has none; a bad file: none, logged.
    big = tmp_path / "big"
    big.mkdir()
    np.savez(big / "references.npz", images=np.full((1, 2 * MAX_SIDE, MAX_SIDE, 3), 90, np.uint8))
    (entry,) = read_identities(big)
    assert (entry["width"], entry["height"]) == (MAX_SIDE // 2, MAX_SIDE) and decode(entry["png"]).max() == 90
    assert read_identities(tmp_path) == [] and read_identities(None) == []
    assert load_all([(str(tmp_path / "gray"), "gray"), (str(big), "big")])["gray"] == []
    assert "identities of gray left out" in caplog.text
