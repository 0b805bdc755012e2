"""Wan-family folders through the server's WebSocket, and ``streamgen serve --attention triton`` as a real
process (the Triton kernels interpreted on the CPU), with ``/v1/models`` reporting how each model runs."""
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.checkpoints.folder_layouts import write_longlive, write_self_forcing
from tests.server.conftest import RunningServer, free_port
from tests.server.ws_client import WsClient
from streamgen_client import protocol as P
from streamgen_client.binary import MediaKind


async def _stream_blocks(url: str, model: str, frames: int, timeout: float) -> list:
    """The first ``frames`` video frames of a WebSocket session of ``model``."""
    async with WsClient(url) as c:
        started = await c.start(model, seed=1, prompt="a cat walks along the beach")
        assert started["type"] == "started", started
        await c.wait_for(lambda: sum(h.kind == MediaKind.VIDEO_JPEG for h, _ in c.media) >= frames,
                         timeout=timeout, what=f"{frames} frames of {model}")
        await c.send(P.Stop(seq=next(c.seq)))
        await c.wait_closed(timeout=timeout)
        return [(h, p) for h, p in c.media if h.kind == MediaKind.VIDEO_JPEG][:frames]


def test_each_layout_streams_3_blocks_over_the_websocket(tmp_path, wan_base, diffusers_base):
    students = [write_self_forcing(tmp_path / "self_forcing", wan_base), write_longlive(tmp_path / "longlive", diffusers_base)]
    with RunningServer(model=str(wan_base), extra_models=[str(diffusers_base), *map(str, students)]) as server:
        listing = server.get_json("/v1/models")
        names = [m["name"] for m in listing["models"]]
        assert names == ["Wan2.1-T2V-tiny", "Wan2.1-T2V-tiny-Diffusers", "self_forcing", "longlive"]
        assert listing["default"] == "Wan2.1-T2V-tiny"
        runtime = listing["runtime"]
        assert {n: runtime[n]["family"] for n in names} == {
            "Wan2.1-T2V-tiny": "wan2.1", "Wan2.1-T2V-tiny-Diffusers": "wan2.1", "self_forcing": "self-forcing",
            "longlive": "longlive"}
        assert runtime["self_forcing"]["streaming"]["window_frames"] == 21
        assert runtime["longlive"]["streaming"]["sink_frames"] == 3 and runtime["longlive"]["lora"]["merged_modules"] == 20
        assert all(runtime[n]["decoder"]["kind"] == "wan-vae" and runtime[n]["text_encoder"]["kind"] == "umt5" for n in names)
        for name in names:
            video = asyncio.run(_stream_blocks(server.url, name, 9 + 12 + 12, timeout=120))
            per_block = [sum(1 for h, _ in video if h.block_index == b) for b in range(3)]
            assert per_block == [9, 12, 12], (name, per_block)
            assert len({bytes(p) for _, p in video}) > 1  # JPEG frames that differ


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_serve_with_the_triton_attention_backend(tmp_path):
    pytest.importorskip("triton")
    port = free_port()
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_CACHE_DIR=str(tmp_path / "triton"))
    proc = subprocess.Popen([sys.executable, "-m", "streamgen.cli.main", "serve", "--model", "tiny", "--port", str(port),
                             "--attention", "triton", "--warmup-blocks", "0", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                if _get_json(url + "/readyz")["ready"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve --attention triton did not get ready"
            time.sleep(0.2)
        runtime = _get_json(url + "/v1/models")["runtime"]["tiny"]
        assert runtime["attention_backend"] == "triton" and runtime["dtype"] == "float32"
        video = asyncio.run(_stream_blocks(url, "tiny", 2, timeout=180))
        assert [h.block_index for h, _ in video] == [0, 0]  # one block of the tiny preset, through the Triton kernels
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
