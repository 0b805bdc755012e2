"""A real local Ray cluster (this CPU, loopback, no dashboard) serving ``tiny`` on two replicas."""
from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request

import pytest


class LocalCluster:
    def __init__(self, **config) -> None:
        from streamgen.server.cluster.config import ClusterConfig

        self.config = ClusterConfig(**{"replica_host": "127.0.0.1", **config})
        self.port = random.randint(20000, 60000)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LocalCluster":
        pytest.importorskip("ray", reason="the cluster tests need the streamgen[cluster] extra")
        from streamgen.server.cluster import launch

        launch.start_local_ray(num_cpus=2)
        try:
            launch.deploy(self.config, "127.0.0.1", self.port)
            self.wait_replicas(self.config.replicas, timeout=180)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        import ray
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def wait_replicas(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.get_json("/readyz")["replicas"] >= n:
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"the cluster on {self.url} did not get {n} replicas in {timeout} s")


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(replicas=2, num_cpus=0.5, sessions_per_replica=2, max_queued=4, queue_timeout_s=90.0,
                      queue_report_s=0.5, server={"model": "tiny", "warmup_blocks": 1}) as c:
        yield c
