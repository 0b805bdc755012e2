"""The gateway's bounded wait queue: clients that arrive while every replica is full wait here in order.

Serve itself holds the pending lease requests and hands each to the first replica with room (that is
the routing); this queue only bounds how many may wait, gives each its position, and ends a wait that
ran past its timeout. It is plain asyncio (no Ray), so it is tested on its own.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """Every replica is full and ``max_queued`` clients already wait."""

    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(f"every replica is full and {waiting} of {limit} queue places are taken")


class QueueTimeout(Exception):
    def __init__(self, waited_s: float) -> None:
        super().__init__(f"no replica had room within {waited_s:.1f} s")


@dataclass(eq=False)
class Ticket:
    number: int
    joined: float = field(default_factory=time.monotonic)


class WaitQueue:
    """FIFO of tickets. ``capacity()`` and ``in_use()`` say how full the cluster is right now."""

    def __init__(self, max_queued: int, capacity: Callable[[], int], in_use: Callable[[], int]) -> None:
        self.max_queued, self.capacity, self.in_use = max_queued, capacity, in_use
        self._waiting: list[Ticket] = []
        self._numbers = itertools.count(1)

    def __len__(self) -> int:
        return len(self._waiting)

    def free(self) -> int:
        return max(0, self.capacity() - self.in_use())

    def join(self) -> Ticket:
        """A place in line, or QueueFull when more would wait than free slots plus ``max_queued``."""
        if len(self._waiting) >= self.free() + self.max_queued:
            raise QueueFull(max(0, len(self._waiting) - self.free()), self.max_queued)
        t = Ticket(next(self._numbers))
        self._waiting.append(t)
        return t

    def position(self, t: Ticket) -> int:
        """1 for the next client to get a slot; 0 once it is no longer waiting."""
        try:
            return self._waiting.index(t) + 1
        except ValueError:
            return 0

    def leave(self, t: Ticket) -> None:
        if t in self._waiting:
            self._waiting.remove(t)

    async def wait(self, t: Ticket, granted: Awaitable[T], *, timeout_s: float, report_s: float,
                   on_position: Callable[[int, float], Awaitable[None]] | None = None) -> T:
        """Await ``granted`` (the first answer of the replica that took the session) while in line.

        ``on_position(position, waited_s)`` runs every ``report_s`` while the client waits (at once when
        the cluster is full on arrival). Raises QueueTimeout after ``timeout_s``; the ticket always leaves.
        """
        task = asyncio.ensure_future(granted)
        try:
            full_on_arrival = self.free() < self.position(t)
            first = 0.0 if full_on_arrival else report_s
            deadline = t.joined + timeout_s
            next_report = t.joined + first
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise QueueTimeout(now - t.joined)
                wait = min(deadline, next_report) - now
                done, _ = await asyncio.wait({task}, timeout=max(0.0, wait))
                if done:
                    return task.result()
                if on_position is not None and time.monotonic() >= next_report:
                    await on_position(self.position(t), time.monotonic() - t.joined)
                    next_report = time.monotonic() + report_s
        except BaseException:
            if not task.done():
                task.cancel()
            raise
        finally:
            self.leave(t)
