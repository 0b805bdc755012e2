"""Regression tests of issue 14's liveness and admission defects (each failed before its fix).

Defect 2 (a WebSocket client that never reads), 3 (WebRTC control consumer left pending after stop),
12 (admission by measured capacity),
13 (per-client-address limits survive reconnecting).
"""
from __future__ import annotations

import asyncio
import gc
import socket
import time

import httpx
import websockets
from streamgen_client import protocol as P

from streamgen.server.capacity import step_seconds

from .conftest import running_server, unhandled
from .rtc_client import RtcClient
from .ws_client import WsClient


def test_a_websocket_client_that_never_reads_loses_its_slot():
    """Defect 2: start, then pings, never reading: the slot was held forever (the send queue grew)."""
    # Small buffers so that a tiny stream (about 8 KB/s) fills them in seconds; the defaults take longer.
    with running_server(max_sessions=2, write_timeout_s=1.0, send_queue_max=16, send_buffer_bytes=8192) as server:
        async def run():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
            sock.connect(("127.0.0.1", server.settings.port))
            ws = await websockets.connect(server.url.replace("http://", "ws://") + "/v1/ws", sock=sock,
                                          ping_interval=None, max_queue=1, max_size=None)
            await ws.send(P.Start(seq=1, model="tiny").to_json())
            while not server.state.manager.sessions:
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            seq = 2
            # Ping (the session is "alive" on the inbound side) and never call recv().
            while server.state.manager.in_use() and time.monotonic() - t0 < 60:
                await ws.send(P.Ping(seq=seq, t_ms=1.0).to_json())
                seq += 1
                await asyncio.sleep(0.2)
            held = time.monotonic() - t0
            ws.transport.abort()
            return held, server.state.manager.in_use()

        held, in_use = asyncio.run(run())
        metrics = httpx.get(server.url + "/metrics").text
    assert in_use == 0, f"slot still held after {held:.1f} s"
    assert 'streamgen_sessions_reclaimed_total{reason="write_timeout"} 1.0' in metrics, \
        [line for line in metrics.splitlines() if "reclaimed_total" in line]
    print(f"never-reading client reclaimed after {held:.1f} s")


def test_webrtc_sessions_ended_by_stop_leave_no_task_behind():
    """Defect 3: each stopped WebRTC session left its control consumer pending ('Task was destroyed')."""
    with running_server(max_sessions=2, client_sessions_per_min=1e6,
                                               client_session_burst=1000) as server:
        def tasks() -> int:
            return server.run_on_loop(lambda: len(asyncio.all_tasks()))

        async def cycle():
            c = await RtcClient(server.url).connect()
            await asyncio.wait_for(c.opened.wait(), 10)
            c.send(P.Stop(seq=next(c.seq)))
            await c.wait_for(lambda: c.of_type("bye"), what="bye")
            await c.close()

        asyncio.run(cycle())
        time.sleep(0.5)
        before = tasks()
        for _ in range(6):
            asyncio.run(cycle())
        deadline = time.monotonic() + 5
        while (tasks() > before or server.state.manager.in_use()) and time.monotonic() < deadline:
            time.sleep(0.1)
        after = tasks()
        gc.collect()
    assert after <= before, (before, after)
    assert not unhandled(server.log.getvalue()), unhandled(server.log.getvalue())


def test_admission_follows_measured_capacity_and_models_reports_it():
    """Defect 12: the fixed max_sessions over-admitted; the server now admits by its measured block time."""
    # 0.8 of the engine per stream (measured block time plus a fixed share): room for one tiny stream only
    # when utilisation is set just above one stream's load. Measure first, then set it.
    with running_server() as probe:
        block_s = probe.state.manager.capacity.block_s("tiny")
        models = probe.get_json("/v1/models")
    assert block_s is not None and block_s > 0
    tiny = next(m for m in models["models"] if m["name"] == "tiny")
    assert models["max_sessions"] is None
    assert tiny["measured_capacity"] >= 0 and tiny["block_ms"] > 0  # 0 on a machine too busy for one stream
    period = tiny["frames_per_block"] / tiny["fps"]
    # Capacity counts batched steps as measured (server/capacity.py): k sessions fit while the measured
    # (or interpolated) step of k stays within the budget.
    batch_s = {int(k): v / 1000.0 for k, v in tiny["batch_ms"].items()}
    assert sorted(batch_s) == [1, 2, 4, 8]  # the warm-up timed each batch size
    budget = models["capacity_utilization"] * period
    cap = tiny["measured_capacity"]
    assert step_seconds(batch_s, cap) <= budget < step_seconds(batch_s, cap + 1)

    # max_batch=1: no batching, so two streams cost two steps and need twice the share of one. The share
    # is set from this server's own measurement (a second warm-up on a busy machine may measure less).
    with running_server(max_batch=1) as server:
        capacity = server.state.manager.capacity
        capacity.utilization = capacity.load("tiny") * 1.5  # one fits, two do not

        async def run():
            async with WsClient(server.url) as a:
                first = await a.start("tiny")
                second = await RtcClient(server.url).connect(expect_ok=False)
                async with WsClient(server.url) as c:
                    third = await c.start("tiny")
            return first, second, third

        # Streaming measures again: a loaded machine's block times may admit fewer, never more.
        first, second, third = asyncio.run(run())
    assert first["type"] == "started"
    assert second.status == 503 and second.answer_body["code"] == "busy"
    assert "measured" in second.answer_body["message"]
    assert third["code"] == "busy"


def test_reconnecting_does_not_reset_the_per_address_limits():
    """Defect 13: limits were per connection; 31 reconnects in 10 s flooded on at 10k messages/s."""
    with running_server(max_sessions=4, client_session_burst=3, client_sessions_per_min=6,
                        max_messages_per_s=10_000, message_burst=10_000,
                        client_messages_per_s=50, client_message_burst=100) as server:
        async def run():
            starts = []
            for _ in range(4):
                async with WsClient(server.url) as w:
                    starts.append(await w.start("tiny"))
            return starts

        starts = asyncio.run(run())
        rtc = asyncio.run(RtcClient(server.url).connect(expect_ok=False))
    assert [s["type"] for s in starts[:3]] == ["started"] * 3
    assert starts[3]["code"] == "rate_limited" and starts[3]["retry_after_s"] > 0
    assert rtc.status == 429 and rtc.answer_body["code"] == "rate_limited"

    with running_server(max_sessions=4, max_messages_per_s=10_000, message_burst=10_000,
                        client_messages_per_s=50, client_message_burst=100,
                        client_session_burst=100) as server:
        async def flood():
            limited = []
            for _ in range(3):  # each reconnect starts a fresh session bucket; the address bucket goes on
                async with WsClient(server.url) as w:
                    await w.start("tiny")
                    for _ in range(150):
                        await w.send(P.Ping(seq=next(w.seq), t_ms=1.0))
                    await asyncio.sleep(0.3)
                    limited.append(w.errors().count("rate_limited"))
            return limited

        limited = asyncio.run(flood())
    assert all(n >= 1 for n in limited[1:]), limited


def test_ops_endpoints_can_require_the_token():
    """Issue 14: /metrics, /v1/models, /v1/stats and /docs answered without a token; now a setting."""
    with running_server(max_sessions=1, auth_token="s3cret", ops_require_token=True) as server:
        with httpx.Client(base_url=server.url) as http:
            bare = {p: http.get(p).status_code for p in ("/metrics", "/v1/models", "/v1/stats", "/docs")}
            auth = {"Authorization": "Bearer s3cret"}
            with_token = {p: http.get(p, headers=auth).status_code for p in ("/metrics", "/v1/models", "/v1/stats")}
            health = (http.get("/healthz").status_code, http.get("/readyz").status_code)
    assert bare == {"/metrics": 401, "/v1/models": 401, "/v1/stats": 401, "/docs": 404}, bare
    assert set(with_token.values()) == {200} and health == (200, 200)
    with running_server(max_sessions=1, auth_token="s3cret") as server:  # the default: ops are public
        assert httpx.get(server.url + "/metrics").status_code == 200
