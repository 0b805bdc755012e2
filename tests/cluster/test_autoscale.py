"""Autoscaling on sessions in use: one replica of one session; a second session waits in the queue while
Serve starts a second replica for it, then streams there."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.cluster.conftest import LocalCluster
from tests.server.ws_client import WsClient

pytestmark = pytest.mark.slow


def test_sessions_waiting_make_serve_add_a_replica():
    with LocalCluster(min_replicas=1, max_replicas=2, replicas=1, num_cpus=0.5, sessions_per_replica=1,
                      upscale_delay_s=1.0, queue_timeout_s=150.0, queue_report_s=1.0,
                      server={"model": "tiny", "warmup_blocks": 1}) as cluster:
        assert cluster.get_json("/v1/models")["cluster"]["replicas"] == 1

        async def run():
            async with WsClient(cluster.url) as a, WsClient(cluster.url) as b:
                assert (await a.start("tiny"))["type"] == "started"
                t0 = time.monotonic()
                await b.send({"type": "start", "seq": 1, "model": "tiny"})
                await b.wait_for(lambda: b.of_type("telemetry"), timeout=10, what="a queue report")
                assert b.of_type("telemetry")[0]["timings_ms"]["queue_position"] == 1.0
                await b.wait_for(lambda: b.of_type("started"), timeout=150, what="a second replica to take b")
                print(f"the queued session started on a new replica after {time.monotonic() - t0:.1f} s")
                await b.wait_for(lambda: len(b.media) >= 4, timeout=15, what="frames on the new replica")
                placed = cluster.get_json("/v1/cluster")
                assert placed["replicas"] == 2 and len({s["replica"] for s in placed["sessions"]}) == 2
                assert len(a.media) > 0 and not a.of_type("bye")  # the first session streamed throughout
        asyncio.run(run())
