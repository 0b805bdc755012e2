"""ALE (Atari) action names <-> browser keys, for the recorded Pong data (docs/data.md).

The `world` model listens to browser keys (W3C ``KeyboardEvent.code``, named by its folder's
``config.json``); its data were recorded with ALE action names. Pong's RIGHT moves the right paddle *up*
and LEFT moves it *down*; FIRE serves. A raw frame's action becomes the set of keys held during it; the
reverse picks the ALE action a key set means (the up/down pair cancels, as holding both arrows does in a
browser game).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from streamgen.actions import ActionSpec, events_for_key_sets

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


def events_for_actions(spec: ActionSpec, names: Sequence[str], raw_start: int = 0,
                       held: frozenset[str] = frozenset()) -> tuple[list[dict], frozenset[str]]:
    """Wire key events (stream clock) that hold exactly ``keys_for_action(names[i])`` during raw frame
    ``raw_start + i`` (``streamgen.actions.events_for_key_sets``); returns the events and the keys held after."""
    return events_for_key_sets(spec, [keys_for_action(n) for n in names], raw_start, held)
