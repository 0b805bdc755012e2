"""The gateway's wait queue on its own (no Ray): bound, order, positions, timeout, cleanup."""
from __future__ import annotations

import asyncio

import pytest

from streamgen.server.cluster.waitqueue import QueueFull, QueueTimeout, WaitQueue


def test_bound_is_free_slots_plus_max_queued():
    in_use = [3]
    q = WaitQueue(2, capacity=lambda: 4, in_use=lambda: in_use[0])
    tickets = [q.join() for _ in range(3)]  # one free slot + two places
    with pytest.raises(QueueFull, match="2 of 2 queue places"):
        q.join()
    assert [q.position(t) for t in tickets] == [1, 2, 3]
    q.leave(tickets[0])
    assert [q.position(t) for t in tickets] == [0, 1, 2]
    in_use[0] = 4  # the cluster filled: still no room for a fourth
    with pytest.raises(QueueFull):
        q.join()


def test_waiters_hear_their_position_until_granted_and_leave_the_line():
    async def run():
        q = WaitQueue(4, capacity=lambda: 1, in_use=lambda: 1)  # full
        first, second = q.join(), q.join()
        heard: list[tuple[str, int]] = []
        grant_first, grant_second = asyncio.Event(), asyncio.Event()

        async def granted(ev, value):
            await ev.wait()
            return value

        async def report(name):
            async def on(position, waited_s):
                assert waited_s >= 0
                heard.append((name, position))
            return on
        a = asyncio.ensure_future(q.wait(first, granted(grant_first, "A"), timeout_s=5, report_s=0.05,
                                         on_position=await report("a")))
        b = asyncio.ensure_future(q.wait(second, granted(grant_second, "B"), timeout_s=5, report_s=0.05,
                                         on_position=await report("b")))
        await asyncio.sleep(0.2)
        assert ("a", 1) in heard and ("b", 2) in heard  # told at once (full on arrival), then repeatedly
        grant_first.set()
        assert await a == "A"
        heard.clear()
        await asyncio.sleep(0.15)
        assert heard and all(h == ("b", 1) for h in heard)  # moved up when the first left the line
        grant_second.set()
        assert await b == "B"
        assert len(q) == 0
    asyncio.run(run())


def test_timeout_cancels_the_grant_and_frees_the_place():
    async def run():
        q = WaitQueue(1, capacity=lambda: 0, in_use=lambda: 0)
        t = q.join()
        cancelled = asyncio.Event()

        async def never():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        with pytest.raises(QueueTimeout, match="no replica had room within 0.2"):
            await q.wait(t, never(), timeout_s=0.2, report_s=10)
        await asyncio.wait_for(cancelled.wait(), 1)
        assert len(q) == 0
        q.join()  # the place is free again
    asyncio.run(run())
