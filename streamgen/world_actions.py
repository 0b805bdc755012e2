"""ALE (Atari) actions <-> browser keys, in one place.

The `world` model listens to browser keys (W3C ``KeyboardEvent.code``); its data were recorded with ALE
action names. Pong's RIGHT moves the right paddle *up* and LEFT moves it *down*; FIRE serves. A raw frame's
action becomes the set of keys held during it; the reverse picks the ALE action a key set means (the
up/down pair cancels, as holding both arrows does in a browser game).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from streamgen.actions import ActionSpec

# ALE action name -> keys held for it (Pong's minimal action set).
ALE_ACTION_KEYS: dict[str, frozenset[str]] = {
    "NOOP": frozenset(),
    "FIRE": frozenset({"Space"}),
    "RIGHT": frozenset({"ArrowUp"}),
    "LEFT": frozenset({"ArrowDown"}),
    "RIGHTFIRE": frozenset({"ArrowUp", "Space"}),
    "LEFTFIRE": frozenset({"ArrowDown", "Space"}),
}


def keys_for_action(name: str) -> frozenset[str]:
    """ALE action name -> the browser keys held for it."""
    try:
        return ALE_ACTION_KEYS[name]
    except KeyError:
        raise ValueError(f"ALE action {name!r} has no key mapping; known: {sorted(ALE_ACTION_KEYS)}") from None


def action_for_keys(keys: Iterable[str]) -> str:
    """Browser keys held -> the ALE action they mean (up and down together cancel to no move)."""
    held = set(keys)
    up, down, fire = "ArrowUp" in held, "ArrowDown" in held, "Space" in held
    move = "RIGHT" if up and not down else "LEFT" if down and not up else ""
    if move:
        return move + ("FIRE" if fire else "")
    return "FIRE" if fire else "NOOP"


RELEASE_LEAD_MS = 1e-3  # a key released for frame r is released just before r starts (still down in r - 1)


def events_for_rows(spec: ActionSpec, rows, raw_start: int = 0, held: frozenset[str] = frozenset()) -> list[dict]:
    """Key rows ``[T, K]`` (1 = held during raw frame ``raw_start + i``, in ``spec.keys`` order) -> wire key
    events at the stream clock, as :func:`events_for_actions` stamps them."""
    names = [frozenset(k for k, v in zip(spec.keys, row) if v > 0.5) for row in rows]
    events, _ = _events_for_key_sets(spec, names, raw_start, held)
    return events


def _events_for_key_sets(spec: ActionSpec, sets: Sequence[frozenset[str]], raw_start: int,
                         held: frozenset[str]) -> tuple[list[dict], frozenset[str]]:
    events = []
    for i, want in enumerate(sets):
        t = spec.frame_start_ms(raw_start + i)
        for key in sorted(held - want):
            events.append({"kind": "key", "key": key, "down": False, "t_ms": t - RELEASE_LEAD_MS})
        for key in sorted(want - held):
            events.append({"kind": "key", "key": key, "down": True, "t_ms": t})
        held = want
    return events, held


def events_for_actions(spec: ActionSpec, names: Sequence[str], raw_start: int = 0,
                       held: frozenset[str] = frozenset()) -> tuple[list[dict], frozenset[str]]:
    """Wire key events (stream clock) that hold exactly ``keys_for_action(names[i])`` during raw frame
    ``raw_start + i``, given the keys ``held`` before; returns the events (time order) and the keys held
    after. A key is down in a frame if held at its start or pressed inside it (``streamgen.actions``), so
    presses are stamped at the frame start and releases just before it, in the previous frame's span:
    feed each block the events stamped inside its span (``split_by_block``)."""
    return _events_for_key_sets(spec, [keys_for_action(n) for n in names], raw_start, held)


def split_by_block(spec: ActionSpec, events: list[dict], raw_per_block: int, blocks: int, raw_start: int = 0) -> list[list[dict]]:
    """Events grouped by the block whose raw-frame span holds their stamp (earlier stamps go to the first)."""
    out: list[list[dict]] = [[] for _ in range(blocks)]
    for ev in events:
        b = 0
        while b + 1 < blocks and ev["t_ms"] >= spec.frame_start_ms(raw_start + (b + 1) * raw_per_block):
            b += 1
        out[b].append(ev)
    return out
