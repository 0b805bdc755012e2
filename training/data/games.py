"""Per-game facts for the Atari dataset: crop, object colours, RAM addresses and scripted players.

Crops are in the emulator's native 210x160 screen and keep the whole playfield (the controlled
object's full range of motion and the ball's) while dropping score bars; colours were read from
the emulator's palette (ale-py 0.12). RAM addresses (from the AtariARI annotations) are used only
to check the colour finder against the emulator's own state in tests and in the game survey.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .locate import ColourTarget, locate


@dataclass(kw_only=True, frozen=True)
class GameSpec:
    """What the recorder, the scripted player and the evaluation need to know about one game."""

    name: str
    # Native-screen crop (top, bottom, left, right): playfield only, score bars removed.
    crop: tuple[int, int, int, int]
    # The controlled object (for action following) and the ball (for visibility / sound events).
    player: ColourTarget
    ball: ColourTarget | None = None
    # Axis the player mostly moves along (0 = rows, 1 = cols) and, per action name, the sign of the
    # motion it commands along that axis (checked by the game survey, not assumed).
    player_axis: int = 0
    moves: dict[str, int] = field(default_factory=dict)
    # RAM addresses of the player's coordinate along ``player_axis`` (and the ball's row, col).
    player_ram: int = 0
    ball_ram: tuple[int, int] | None = None


GAMES: dict[str, GameSpec] = {
    "pong": GameSpec(
        name="pong",
        crop=(34, 194, 0, 160),
        # Right (green) paddle; cols 136..148 of 160 cover its column with a margin.
        player=ColourTarget(colour=(92, 186, 92), background=(144, 72, 17), cols=(0.85, 0.925)),
        ball=ColourTarget(colour=(236, 236, 236), background=(144, 72, 17)),
        player_axis=0,
        moves={"RIGHT": -1, "LEFT": 1, "RIGHTFIRE": -1, "LEFTFIRE": 1},
        player_ram=51,
        ball_ram=(54, 49),
    ),
    "breakout": GameSpec(
        name="breakout",
        crop=(36, 196, 0, 160),
        # Paddle rows 189..193 native -> crop rows 153..157; side walls (cols < 8, >= 152) excluded.
        player=ColourTarget(colour=(200, 72, 72), background=(0, 0, 0), rows=(0.93, 1.0), cols=(0.05, 0.95)),
        # Ball shares the paddle's colour: search between the bricks and the paddle.
        ball=ColourTarget(colour=(200, 72, 72), background=(0, 0, 0), rows=(0.38, 0.93), cols=(0.05, 0.95)),
        player_axis=1,
        moves={"RIGHT": 1, "LEFT": -1},
        player_ram=72,
        ball_ram=(101, 99),
    ),
    "freeway": GameSpec(
        name="freeway",
        crop=(15, 195, 8, 160),
        # Player-1 chicken: native cols 44..50 -> crop cols 36..42; the yellow centre line
        # (native rows 102..104 -> crop 87..89) is masked out.
        player=ColourTarget(
            colour=(252, 252, 84), background=(142, 142, 142), cols=(0.21, 0.32), exclude_rows=(0.48, 0.50)
        ),
        player_axis=0,
        moves={"UP": -1, "DOWN": 1},
        player_ram=14,
    ),
    "boxing": GameSpec(
        name="boxing",
        crop=(24, 188, 16, 144),
        player=ColourTarget(colour=(214, 214, 214), background=(110, 156, 66)),
        # The opponent plays the role of the "ball" for the scripted player (chased, punched).
        ball=ColourTarget(colour=(0, 0, 0), background=(110, 156, 66)),
        player_axis=0,
        moves={"UP": -1, "DOWN": 1, "UPRIGHT": -1, "UPLEFT": -1, "DOWNRIGHT": 1, "DOWNLEFT": 1},
        player_ram=34,
        ball_ram=(35, 33),
    ),
}


def game_spec(game: str) -> GameSpec:
    if game not in GAMES:
        raise ValueError(f"unknown game {game!r}; known: {sorted(GAMES)}")
    return GAMES[game]


def crop_native(screen: np.ndarray, spec: GameSpec) -> np.ndarray:
    """Native [210, 160, 3] screen -> the game's playfield crop [h, w, 3]."""
    t, b, l, r = spec.crop
    return screen[t:b, l:r]


class ScriptedPlayer:
    """A plausible player: follows the ball (or opponent) with a per-episode skill, plus random holds.

    Scripted play makes the controlled object move purposefully (long runs toward the ball, stops,
    reversals), which random play rarely does; random holds keep every action represented.
    """

    def __init__(self, spec: GameSpec, action_names: list[str], rng: np.random.Generator) -> None:
        self.spec = spec
        self.names = action_names
        self.rng = rng
        # Per-episode skill: dead band (px) and aim offset, so episodes differ in style.
        self.dead_band = float(rng.uniform(1.0, 6.0))
        self.offset = float(rng.normal(0.0, 4.0))
        self.hold: tuple[str, int] | None = None

    def _index(self, name: str) -> int:
        return self.names.index(name) if name in self.names else 0

    def act(self, screen: np.ndarray) -> int:
        rng = self.rng
        if self.hold is not None:
            name, left = self.hold
            self.hold = (name, left - 1) if left > 1 else None
            return self._index(name)
        if rng.random() < 0.06:  # a random hold of 1..8 steps (exploration, every action seen)
            name = self.names[int(rng.integers(len(self.names)))]
            self.hold = (name, int(rng.integers(1, 9)))
            return self.act(screen)
        if rng.random() < 0.02:
            self.offset = float(rng.normal(0.0, 4.0))
        crop = crop_native(screen, self.spec)
        return self._index(getattr(self, f"_{self.spec.name}")(crop))

    def _track(self, crop: np.ndarray, axis: int, neg: str, pos: str, idle: str) -> str:
        me = locate(crop, self.spec.player)
        ball = locate(crop, self.spec.ball) if self.spec.ball is not None else (np.nan, np.nan)
        if np.isnan(me[axis]) or np.isnan(ball[axis]):
            return idle
        diff = ball[axis] + self.offset - me[axis]
        if abs(diff) <= self.dead_band:
            return "NOOP"
        return pos if diff > 0 else neg

    def _pong(self, crop: np.ndarray) -> str:
        return self._track(crop, 0, "RIGHT", "LEFT", "NOOP")  # RIGHT moves the paddle up

    def _breakout(self, crop: np.ndarray) -> str:
        return self._track(crop, 1, "LEFT", "RIGHT", "FIRE")  # FIRE launches a new ball

    def _freeway(self, crop: np.ndarray) -> str:
        r = self.rng.random()
        return "UP" if r < 0.8 else ("NOOP" if r < 0.95 else "DOWN")

    def _boxing(self, crop: np.ndarray) -> str:
        me = locate(crop, self.spec.player)
        foe = locate(crop, self.spec.ball)
        if np.isnan(me[0]) or np.isnan(foe[0]):
            return "NOOP"
        dy, dx = foe[0] + self.offset - me[0], foe[1] - me[1] - 28.0  # stand to the foe's left
        if abs(dy) < 6 and abs(dx) < 8:
            return "FIRE"
        vert = "" if abs(dy) <= self.dead_band else ("DOWN" if dy > 0 else "UP")
        horz = "" if abs(dx) <= self.dead_band else ("RIGHT" if dx > 0 else "LEFT")
        return (vert + horz) or "NOOP"


class RandomPlayer:
    """Random actions held for a geometric number of steps (mean 4), so holds move the object."""

    def __init__(self, action_names: list[str], rng: np.random.Generator) -> None:
        self.n = len(action_names)
        self.rng = rng
        self.current = 0
        self.left = 0

    def act(self, screen: np.ndarray) -> int:
        if self.left <= 0:
            self.current = int(self.rng.integers(self.n))
            self.left = int(self.rng.geometric(0.25))
        self.left -= 1
        return self.current
