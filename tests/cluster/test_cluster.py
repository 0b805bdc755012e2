"""Issue 19's acceptance run: 2 replicas of ``tiny`` on a local Ray cluster, behind one endpoint.

2 x capacity sessions (WebSocket and WebRTC) spread over both replicas at full frame rate; the next
client waits in the queue with its position and starts when a slot frees; killing one replica's actor
ends its sessions with the typed reason ``replica_lost`` while the other replica's sessions keep their
rate; a new session is served meanwhile, and Serve brings the killed replica back.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.server.rtc_client import RtcClient
from tests.server.ws_client import WsClient

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="the cluster tests need the streamgen[cluster] extra")
FPS = 8.0  # tiny's frame rate (checked against /v1/models below)
FULL_RATE = 0.8  # a session keeps "full rate" when it receives at least this share of the model's frames


async def _rates(clients: dict, seconds: float) -> dict:
    """Video frames per second each client received over the next ``seconds``."""
    def count(c):
        return len(c.video) if isinstance(c, RtcClient) else sum(1 for h, _ in c.media if h.kind == 1)
    before, t0 = {k: count(c) for k, c in clients.items()}, time.monotonic()
    await asyncio.sleep(seconds)
    dt = time.monotonic() - t0
    return {k: (count(c) - before[k]) / dt for k, c in clients.items()}


def _metrics(cluster) -> dict[str, float]:
    """The gateway's Prometheus samples, summed over labels."""
    import urllib.request

    out: dict[str, float] = {}
    with urllib.request.urlopen(cluster.url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.split("{")[0].split(" ")[0], float(line.rsplit(" ", 1)[1])
                out[name] = out.get(name, 0.0) + value
    return out


def _ray_gauges(name: str) -> dict[str, float]:
    """``name``'s value per replica from the Ray node's metrics export."""
    import re
    import urllib.request

    (node,) = ray.nodes()
    with urllib.request.urlopen(f"http://127.0.0.1:{node['MetricsExportPort']}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(name + r'\{[^}]*replica="([^"]+)"[^}]*\} (\S+)', text)}


def _placement(cluster) -> dict[str, str]:
    return {s["session_id"]: s["replica"] for s in cluster.get_json("/v1/cluster")["sessions"]}


def test_two_replicas_spread_queue_and_survive_a_replica_death(cluster):
    models = cluster.get_json("/v1/models")
    assert models["models"][0]["fps"] == FPS
    assert models["cluster"]["capacity"] == 4 and models["cluster"]["replicas"] == 2

    async def run():
        ws = [WsClient(cluster.url) for _ in range(3)]
        for c in ws:
            await c.__aenter__()
        rtc = []
        try:
            # ---- 2 x capacity sessions through the one endpoint, both transports
            assert (await ws[0].start("tiny"))["type"] == "started"
            rtc.append(await RtcClient(cluster.url).connect())
            assert (await ws[1].start("tiny"))["type"] == "started"
            rtc.append(await RtcClient(cluster.url).connect())
            sessions = {ws[0].of_type("started")[0]["session_id"]: ws[0], rtc[0].session_id: rtc[0],
                        ws[1].of_type("started")[0]["session_id"]: ws[1], rtc[1].session_id: rtc[1]}
            for c in rtc:
                await c.wait_for(lambda c=c: len(c.video) >= 3, timeout=20, what="WebRTC frames")
            placed = _placement(cluster)
            assert set(placed) == set(sessions)
            replicas = sorted(set(placed.values()))
            assert len(replicas) == 2 and all(list(placed.values()).count(r) == 2 for r in replicas), placed
            rates = await _rates(sessions, 4.0)
            print("rates, 4 sessions on 2 replicas:", {k: round(v, 2) for k, v in rates.items()})
            assert all(r >= FULL_RATE * FPS for r in rates.values()), rates
            # The replicas' own gauges reach Ray's metrics (the node's Prometheus export).
            deadline = time.monotonic() + 40
            while _ray_gauges("ray_streamgen_replica_sessions") != {r: 2.0 for r in replicas}:
                assert time.monotonic() < deadline, _ray_gauges("ray_streamgen_replica_sessions")
                await asyncio.sleep(1.0)

            # ---- the fifth waits in the queue, told its position, and starts when a slot frees
            await ws[2].send({"type": "start", "seq": 1, "model": "tiny"})
            await ws[2].wait_for(lambda: any(m.get("timings_ms", {}).get("queue_position") == 1.0
                                             for m in ws[2].of_type("telemetry")), timeout=10, what="queue position")
            assert not ws[2].of_type("started")
            assert cluster.get_json("/v1/models")["cluster"]["queued"] == 1
            freed = placed[ws[0].of_type("started")[0]["session_id"]]
            await ws[0].send({"type": "stop", "seq": 2})
            assert await ws[0].wait_closed() == 1000 and ws[0].of_type("bye")[-1]["reason"] == "stop"
            stopped = ws[0].of_type("started")[0]["session_id"]
            await ws[2].wait_for(lambda: ws[2].of_type("started"), timeout=30, what="the queued session to start")
            assert cluster.get_json(f"/v1/sessions/{stopped}") == {"session_id": stopped, "state": "ended",
                                                                   "reason": "stop"}
            sid = ws[2].of_type("started")[0]["session_id"]
            del sessions[ws[0].of_type("started")[0]["session_id"]]
            sessions[sid] = ws[2]
            placed = _placement(cluster)
            assert placed[sid] == freed
            await ws[2].wait_for(lambda: len(ws[2].media) >= 3, timeout=10, what="frames of the dequeued session")
            seqs = [m["seq"] for m in ws[2].messages]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # one numbering across queue and replica

            # ---- kill one replica's actor
            victim = placed[rtc[0].session_id]
            on_victim = [s for s, r in placed.items() if r == victim]
            survivors = {s: sessions[s] for s, r in placed.items() if r != victim}
            t_kill = time.monotonic()
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            for s in on_victim:
                c = sessions[s]
                if isinstance(c, WsClient):
                    await c.wait_for(lambda c=c: c.of_type("bye"), timeout=30, what="bye on the dead replica")
                    assert c.of_type("bye")[-1]["reason"] == "replica_lost"
                    assert "internal" in c.errors()
                    assert await c.wait_closed() == 1011
            deadline = time.monotonic() + 30
            while any(cluster.get_json(f"/v1/sessions/{s}")["state"] != "ended" for s in on_victim):
                assert time.monotonic() < deadline, "sessions on the dead replica still listed"
                await asyncio.sleep(0.2)
            assert all(cluster.get_json(f"/v1/sessions/{s}")["reason"] == "replica_lost" for s in on_victim)
            print(f"replica {victim} killed: its {len(on_victim)} sessions ended with replica_lost in "
                  f"{time.monotonic() - t_kill:.2f} s")
            rates = await _rates(survivors, 3.0)
            print("rates of the other replica's sessions:", {k: round(v, 2) for k, v in rates.items()})
            assert all(r >= FULL_RATE * FPS for r in rates.values()), rates

            # ---- a new session is served while Serve replaces the dead replica
            gone = next(iter(survivors.values()))  # the other replica is full: free one of its slots
            if isinstance(gone, RtcClient):
                await gone.close()
            else:
                await gone.send({"type": "stop", "seq": 9})
            async with WsClient(cluster.url) as fresh:
                assert (await fresh.start("tiny"))["type"] == "started"
                await fresh.wait_for(lambda: len(fresh.media) >= 4, timeout=15, what="frames of a new session")
            cluster.wait_replicas(2, timeout=120)
            print(f"Serve replaced the replica {time.monotonic() - t_kill:.1f} s after the kill")
            metrics = _metrics(cluster)
            assert metrics["streamgen_cluster_replica_lost_total"] == len(on_victim)
            assert metrics["streamgen_cluster_queue_wait_seconds_count"] >= 6  # every session took a lease
            assert metrics["streamgen_cluster_replicas"] == 2.0
        finally:
            for c in rtc:
                await c.close()
            for c in ws:
                await c.__aexit__(None, None, None)

    asyncio.run(run())



@pytest.mark.browser
def test_the_page_streams_through_the_cluster(cluster):
    """Chromium opens the gateway's page, plays a WebRTC stream from a replica, and ends it."""
    from tests.server.test_browser import GRAB, connected_page

    assert cluster.get_json("/healthz")["status"] == "ok"
    with connected_page(cluster, 30_000) as page:
        before = page.evaluate(GRAB)
        page.wait_for_timeout(1000)
        after = page.evaluate(GRAB)
        sid = page.evaluate("window.streamgen.sessionId")
        assert _placement(cluster)[sid].startswith("SERVE_REPLICA::")
        page.click("#connect")  # disconnect: the replica ends the session and the gateway lets the lease go
        deadline = time.monotonic() + 15
        while sid in _placement(cluster):
            assert time.monotonic() < deadline, "the page's session is still placed after it disconnected"
            time.sleep(0.1)
    assert (before["w"], before["h"]) == (32, 32)
    assert after["t"] > before["t"] + 0.5  # the video kept playing
    assert cluster.get_json(f"/v1/sessions/{sid}")["state"] == "ended"


def test_hostile_clients_get_typed_errors_and_take_no_slot(cluster):
    """Junk before ``start`` and bad offers are answered by the gateway without taking a replica's slot."""
    import httpx

    async def run():
        async with WsClient(cluster.url) as c:
            await c.ws.send(b"\x00\x01")
            await c.send("{not json")
            await c.send("x" * 40_000)
            await c.send({"type": "ping", "seq": 1})
            await c.send({"type": "start", "seq": 2, "model": "no-such-model"})
            await c.wait_for(lambda: len(c.errors()) >= 5, timeout=10, what="five errors")
            # (too_large is answered on arrival, the others in order while the gateway waits for a start)
            assert sorted(c.errors()) == ["bad_field", "bad_json", "bad_json", "out_of_range", "too_large"]
            assert cluster.get_json("/v1/cluster")["sessions"] == []  # nothing above took a slot
            next(c.seq), next(c.seq)  # seqs 1 and 2 were used above; they must keep increasing
            assert (await c.start("tiny"))["type"] == "started"  # the connection still works
            assert len(cluster.get_json("/v1/cluster")["sessions"]) == 1
        async with httpx.AsyncClient(timeout=20) as http:
            big = await http.post(cluster.url + "/v1/offer", content=b"{" + b" " * 200_000 + b"}")
            junk = await http.post(cluster.url + "/v1/offer", content=b"[1, 2")
            unknown = await http.post(cluster.url + "/v1/offer", json={"sdp": "v=0", "model": "nope"})
            bad_sdp = await http.post(cluster.url + "/v1/offer", json={"sdp": "v=0", "model": "tiny"})
        assert (big.status_code, big.json()["code"]) == (413, "too_large")
        assert (junk.status_code, junk.json()["code"]) == (400, "bad_json")
        assert (unknown.status_code, unknown.json()["code"]) == (400, "out_of_range")
        assert bad_sdp.status_code == 400  # the replica's own checks, passed through
    asyncio.run(run())
    deadline = time.monotonic() + 10
    while cluster.get_json("/v1/cluster")["sessions"]:
        assert time.monotonic() < deadline, "a slot is still held after the hostile clients left"
        time.sleep(0.1)
