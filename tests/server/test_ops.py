"""Health, readiness, metrics, OpenAPI, model listing, auth and origins, and the CLI entry."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import httpx
import pytest

from streamgen.server.settings import ServerSettings

from .conftest import free_port, running_server
from .rtc_client import RtcClient
from .ws_client import WsClient


def test_health_ready_metrics_openapi_models(server):
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/healthz").json() == {"status": "ok", "engine_alive": True}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        models = http.get("/v1/models").json()
        assert models["default"] == "tiny" and models["max_sessions"] == 3
        assert models["models"][0]["name"] == "tiny" and models["models"][0]["fps"] > 0
        paths = http.get("/openapi.json").json()["paths"]
        assert {"/v1/offer", "/healthz", "/readyz", "/metrics", "/v1/models"} <= set(paths)
        page = http.get("/")
        assert page.status_code == 200 and "app.js" in page.text
        assert http.get("/static/app.js").status_code == 200

    async def stream():
        c = await RtcClient(server.url).connect()
        await c.wait_for(lambda: len(c.video) >= 8, what="frames")
        await c.close()
    asyncio.run(stream())
    text = httpx.get(server.url + "/metrics").text
    for name in ("streamgen_sessions{", "streamgen_fps ", "streamgen_block_seconds_bucket", "streamgen_frames_sent_total",
                 "streamgen_frame_overhead_seconds_bucket", "streamgen_frames_dropped_total", "streamgen_ready 1.0"):
        assert name in text, name
    stats = httpx.get(server.url + "/v1/stats").json()
    assert stats["frame_overhead_ms"]["n"] >= 8 and stats["block_ms"]["p50"] > 0


def test_bearer_token_and_allowed_origins():
    with running_server(auth_token="s3cret", allowed_origins=["https://ok.example"]) as server:
        body = {"sdp": "v=0", "type": "offer", "model": "tiny"}
        with httpx.Client(base_url=server.url) as http:
            r = http.post("/v1/offer", json=body)
            assert r.status_code == 401 and r.json()["code"] == "unauthorized"
            r = http.post("/v1/offer", json=body, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401
            r = http.post("/v1/offer", json=body, headers={"Authorization": "Bearer s3cret", "Origin": "https://evil.example"})
            assert r.status_code == 403 and r.json()["code"] == "unauthorized"
            ok = {"Authorization": "Bearer s3cret", "Origin": "https://ok.example"}
            assert http.post("/v1/offer", json=body, headers=ok).json()["code"] == "bad_field"  # past auth: SDP
            assert http.get("/healthz").status_code == 200  # ops endpoints stay open

        async def ws():
            async with WsClient(server.url) as w:  # no token: told why, then closed before any start
                code = await w.wait_closed()
                first = w.messages[0]
            w2 = WsClient(server.url)
            w2.url += "?token=s3cret"  # browsers cannot set headers on a WebSocket: the token rides in the URL
            async with w2:
                second = await w2.start("tiny")
            async with WsClient(server.url, headers={"Authorization": "Bearer s3cret"}) as w3:
                third = await w3.start("tiny")
            return first, code, second, third
        first, code, second, third = asyncio.run(ws())
        assert first["code"] == "unauthorized" and code == 1008
        assert second["type"] == "started" and third["type"] == "started"

        async def rtc():
            c = await RtcClient(server.url, token="s3cret").connect()
            await c.wait_for(lambda: c.video, what="a frame")
            await c.close()
        asyncio.run(rtc())


def test_ice_servers_with_turn_credentials_reach_the_page_behind_the_token():
    turn = "turn:turn.example.invalid:3478?transport=udp"
    with pytest.raises(ValueError, match="set ice_username and ice_credential"):
        ServerSettings(ice_servers=[turn])
    with pytest.raises(ValueError, match="'http://x' is not a stun:"):
        ServerSettings(ice_servers=["http://x"])
    with running_server(auth_token="s3cret", ice_servers=["stun:stun.example.invalid:3478", turn],
                        ice_username="alice", ice_credential="turn-pw-7f3a") as server:
        with httpx.Client(base_url=server.url) as http:
            refused = http.get("/v1/ice")
            given = http.get("/v1/ice", headers={"Authorization": "Bearer s3cret"})
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    assert given.json() == {"iceServers": [{"urls": "stun:stun.example.invalid:3478"},
                                           {"urls": turn, "username": "alice", "credential": "turn-pw-7f3a"}]}
    assert "turn-pw-7f3a" not in server.log.getvalue()


def test_python_m_streamgen_server_serves_until_interrupted():
    port = free_port()
    env = {**os.environ, "STREAMGEN_WARMUP_BLOCKS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "streamgen.server", "--port", str(port), "--max-sessions", "2",
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as r:
                    models = r.read().decode()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server did not come up: {proc.stdout.read().decode()[-2000:]}")
                time.sleep(0.1)
        assert '"max_sessions":2' in models
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()[-2000:]
