"""Key scripts: which keys to hold when during a recording, so a world recording is not idle play.

Text form, comma-separated: ``KEY:START-END`` holds KEY from START to END seconds; ``KEY:AT`` taps it
(held ``TAP_S``). ``"ArrowUp:0.5-2.0,Space:3"`` holds ArrowUp from 0.5 s to 2 s and taps Space at 3 s.
A JSON file holds either that string or a list of ``{"key": K, "from": S, "to": E}`` / ``{"key": K, "at": S}``.
Times are seconds since the recording's first frame.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY = re.compile(r"^[A-Za-z0-9_+.-]{1,32}$")  # the protocol's key names (docs/protocol.md, action)
TAP_S = 0.2  # long enough for a block of the slowest model to see the key held


@dataclass(frozen=True, kw_only=True)
class KeyEdge:
    t_s: float  # seconds since the recording's first frame
    key: str
    down: bool


@dataclass(frozen=True)
class KeyScript:
    edges: tuple[KeyEdge, ...]

    @classmethod
    def parse(cls, spec: str) -> "KeyScript":
        """The text form, or the path of a JSON file (see the module docstring)."""
        if spec.strip().endswith(".json") or Path(spec).is_file():
            return cls.from_json(Path(spec))
        return cls.from_items([_text_item(part) for part in spec.split(",") if part.strip()])

    @classmethod
    def from_json(cls, path: Path) -> "KeyScript":
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise ValueError(f"--keys {path}: cannot read it ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"--keys {path}: not JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, str):
            return cls.parse(data)
        if not isinstance(data, list):
            raise ValueError(f"--keys {path}: expected a list of {{key, from, to}} / {{key, at}} or a string")
        return cls.from_items([_json_item(item) for item in data])

    @classmethod
    def from_items(cls, items: list[tuple[str, float, float]]) -> "KeyScript":
        edges = []
        for key, start, end in items:
            edges += [KeyEdge(t_s=start, key=key, down=True), KeyEdge(t_s=end, key=key, down=False)]
        # Releases before presses at the same instant, so back-to-back holds of one key stay two presses.
        return cls(tuple(sorted(edges, key=lambda e: (e.t_s, e.down))))

    @property
    def seconds(self) -> float:
        return self.edges[-1].t_s if self.edges else 0.0

    async def play(self, client: Any, t0: float | None = None) -> int:
        """Send each edge at its time after ``t0`` (``time.monotonic()``; default now); returns edges sent."""
        t0 = time.monotonic() if t0 is None else t0
        sent = 0
        for edge in self.edges:
            await asyncio.sleep(max(0.0, t0 + edge.t_s - time.monotonic()))
            await client.send_action(edge.key, edge.down)
            sent += 1
        return sent


def _check(key: Any, start: Any, end: Any, where: str) -> tuple[str, float, float]:
    if not isinstance(key, str) or not KEY.match(key):
        raise ValueError(f"--keys {where}: key {key!r} is not a key name like ArrowUp, KeyW or Space")
    for t in (start, end):
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < 86400:
            raise ValueError(f"--keys {where}: time {t!r} is not a number of seconds >= 0")
    if end <= start:
        raise ValueError(f"--keys {where}: ends at {end} s, not after it starts at {start} s")
    return key, float(start), float(end)


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--keys {where}: {text!r} is not a number of seconds") from None


def _text_item(part: str) -> tuple[str, float, float]:
    part = part.strip()
    key, sep, times = part.partition(":")
    if not sep:
        raise ValueError(f"--keys {part!r}: expected KEY:START-END or KEY:AT")
    start_text, dash, end_text = times.partition("-")
    start = _number(start_text, part)
    end = _number(end_text, part) if dash else start + TAP_S
    return _check(key.strip(), start, end, repr(part))


def _json_item(item: Any) -> tuple[str, float, float]:
    if not isinstance(item, dict) or "key" not in item or not ({"at"} <= set(item) or {"from", "to"} <= set(item)):
        raise ValueError(f"--keys item {item!r}: expected {{key, from, to}} or {{key, at}}")
    if "at" in item:
        at = item["at"]
        return _check(item["key"], at, at + TAP_S if isinstance(at, (int, float)) else at, repr(item))
    return _check(item["key"], item["from"], item["to"], repr(item))
