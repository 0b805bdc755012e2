"""Rate limits: a token bucket, and the per-client-address buckets that outlive a connection.

A session's own bucket resets when a client reconnects; the address buckets do not, so a client that
reconnects in a loop is limited in new sessions per minute and in control messages per second over all
of its sessions. Memory is bounded: only the ``max_clients`` most recently seen addresses are kept.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens, self.t = float(burst), clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(kw_only=True)
class AddressLimitConfig:
    sessions_per_min: float
    session_burst: int
    messages_per_s: float
    message_burst: int
    max_clients: int


class AddressLimits:
    """The two buckets of each client address (event-loop only; not thread-safe)."""

    def __init__(self, config: AddressLimitConfig) -> None:
        self.config = config
        self._clients: OrderedDict[str, tuple[TokenBucket, TokenBucket]] = OrderedDict()

    def _buckets(self, address: str) -> tuple[TokenBucket, TokenBucket]:
        b = self._clients.get(address)
        if b is None:
            c = self.config
            b = (TokenBucket(c.sessions_per_min / 60.0, c.session_burst), TokenBucket(c.messages_per_s, c.message_burst))
            self._clients[address] = b
            while len(self._clients) > c.max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(address)
        return b

    def new_session(self, address: str) -> bool:
        """Whether ``address`` may open another session now (takes a token when it may)."""
        return self._buckets(address)[0].take()

    def message(self, address: str) -> bool:
        """Whether ``address`` may send another control message now."""
        return self._buckets(address)[1].take()

    def tracked(self) -> int:
        return len(self._clients)
