"""The gateway's state: the replica handle, the sessions it placed, the wait queue and its metrics."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from ray import serve
from streamgen_client import protocol as P

from ..settings import UNMEASURED_SESSIONS, ServerSettings
from .config import ClusterConfig
from .waitqueue import QueueFull, QueueTimeout, WaitQueue

log = logging.getLogger("streamgen.server.cluster.core")
REPLICA_DEPLOYMENT = "StreamgenReplica"
STATUS_TTL_S = 1.0  # how stale the replica count may be (serve.status() asks the controller)
# Seconds a client waited in the queue: none, a session turnover, up to the default timeout.
ENDED_KEPT = 4096  # recently ended sessions whose end reason /v1/sessions/{id} still answers
WAIT_BUCKETS = (0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class ClusterMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions = Gauge("streamgen_cluster_sessions", "Sessions streaming through the gateway", ["transport"],
                              registry=r)
        self.queued = Gauge("streamgen_cluster_queued", "Clients waiting for a slot", registry=r)
        self.capacity = Gauge("streamgen_cluster_capacity", "Sessions the running replicas can stream", registry=r)
        self.replicas = Gauge("streamgen_cluster_replicas", "Replicas running", registry=r)
        self.refused = Counter("streamgen_cluster_refused", "Sessions refused by the gateway", ["reason"], registry=r)
        self.lost = Counter("streamgen_cluster_replica_lost", "Sessions ended because their replica died",
                            ["transport"], registry=r)
        self.wait = Histogram("streamgen_cluster_queue_wait_seconds", "Time from arrival to a replica slot",
                              buckets=WAIT_BUCKETS, registry=r)


@dataclass
class Lease:
    """A session the gateway placed: which replica streams it, over what."""

    transport: str
    replica: str
    node: str
    session_id: str | None = None
    started: float = 0.0
    bye: str | None = None  # the reason of the replica's bye, once it sent one


class GatewayCore:
    """State shared by the routes: the replica handle, leases in flight, the queue and the metrics."""

    def __init__(self, replicas: Any, config: ClusterConfig) -> None:
        self.handle, self.config = replicas, config
        self.settings = ServerSettings(**config.server)
        self.per_replica = config.sessions_per_replica or self.settings.max_sessions or UNMEASURED_SESSIONS
        self.leases: dict[int, Lease] = {}
        self.metrics = ClusterMetrics()
        self.queue = WaitQueue(config.max_queued, self.capacity, lambda: len(self.leases))
        self._running, self._status_t = 0, 0.0
        self.models: dict[str, Any] | None = None
        self.lost_total = 0
        self.ended: OrderedDict[str, str] = OrderedDict()  # session id -> why it ended (bounded)

    # ----- capacity -----------------------------------------------------------------------------------
    def capacity(self) -> int:
        return self._running * self.per_replica

    async def refresh(self, force: bool = False) -> int:
        """Running replicas (from Serve's controller, cached for STATUS_TTL_S)."""
        if force or time.monotonic() - self._status_t > STATUS_TTL_S:
            self._status_t = time.monotonic()
            try:
                status = await asyncio.to_thread(serve.status)
                app = status.applications.get(self.config.app_name)
                dep = app.deployments.get(REPLICA_DEPLOYMENT) if app else None
                self._running = int(dep.replica_states.get("RUNNING", 0)) if dep else 0
            except Exception as e:  # noqa: BLE001 - the controller restarting: keep the last count
                log.warning("serve.status failed: %s", e)
            self.metrics.replicas.set(self._running)
            self.metrics.capacity.set(self.capacity())
        return self._running

    async def describe(self) -> dict[str, Any] | None:
        """The replicas' model list, asked once (a lease slot for a moment) and kept."""
        if self.models is None:
            try:
                self.models = await asyncio.wait_for(self.handle.describe.remote(), 10.0)
            except Exception as e:  # noqa: BLE001 - no replica yet or all busy: ask again next time
                log.info("describe failed: %s", e)
        return self.models

    # ----- leases -------------------------------------------------------------------------------------
    def join(self, transport: str):
        try:
            return self.queue.join()
        except QueueFull:
            self.metrics.refused.labels("queue_full").inc()
            raise
        finally:
            self.metrics.queued.set(len(self.queue))

    async def wait(self, ticket, stream, transport: str, on_position=None) -> dict[str, Any]:
        """The first item of a lease ``stream`` (the replica that took it); QueueTimeout when none had room."""
        try:
            first = await self.queue.wait(ticket, stream.__anext__(), timeout_s=self.config.queue_timeout_s,
                                          report_s=self.config.queue_report_s, on_position=on_position)
        except QueueTimeout:
            self.metrics.refused.labels("queue_timeout").inc()
            stream.cancel()
            raise
        except BaseException:
            stream.cancel()
            raise
        finally:
            self.metrics.queued.set(len(self.queue))
        self.metrics.wait.observe(time.monotonic() - ticket.joined)
        return first

    def add(self, key: int, lease: Lease) -> None:
        lease.started = time.monotonic()
        self.leases[key] = lease
        self.metrics.sessions.labels(lease.transport).inc()

    def remove(self, key: int, reason: str, lost: bool = False) -> None:
        lease = self.leases.pop(key, None)
        if lease is not None:
            self.metrics.sessions.labels(lease.transport).dec()
            if lost:
                self.lost_total += 1
                self.metrics.lost.labels(lease.transport).inc()
            if lease.session_id:
                self.ended[lease.session_id] = reason
                while len(self.ended) > ENDED_KEPT:
                    self.ended.popitem(last=False)

    def placement(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [{"session_id": lease.session_id, "transport": lease.transport, "replica": lease.replica,
                 "node": lease.node, "age_s": round(now - lease.started, 1)} for lease in self.leases.values()]

    def session_state(self, session_id: str) -> dict[str, Any] | None:
        for lease in self.leases.values():
            if lease.session_id == session_id:
                return {"session_id": session_id, "state": "streaming", "replica": lease.replica,
                        "transport": lease.transport}
        if session_id in self.ended:
            return {"session_id": session_id, "state": "ended", "reason": self.ended[session_id]}
        return None

    def by_replica(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for lease in self.leases.values():
            out[lease.replica] = out.get(lease.replica, 0) + 1
        return out

    def busy_error(self, why: str) -> P.Error:
        return P.Error(seq=0, code="busy", message=why[:500], retry_after_s=self.settings.retry_after_s)
