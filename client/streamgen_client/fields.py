"""Error codes, ProtocolError and the field checks behind the control messages (docs/protocol.md)."""
from __future__ import annotations

import math
import re
from enum import Enum
from typing import Any, Callable

PROTOCOL_VERSION = 1  # of the JSON messages and of the binary media header
# JavaScript numbers are exact up to 2**53 - 1; seq, seeds and timestamps stay inside that.
MAX_SAFE_INT = 2**53 - 1


class ErrorCode(str, Enum):
    BAD_JSON = "bad_json"  # not UTF-8 / not JSON / not an object / duplicate keys / binary frame
    UNKNOWN_TYPE = "unknown_type"  # "type" names no message of this direction
    TOO_LARGE = "too_large"  # message over MAX_CONTROL_BYTES (or media payload over its limit)
    BAD_FIELD = "bad_field"  # missing, extra or wrong-typed field, or a message not valid now
    OUT_OF_RANGE = "out_of_range"  # right type, value outside its range or not accepted by the model
    BUSY = "busy"  # no free session slot; retry_after_s says when to try again
    RATE_LIMITED = "rate_limited"  # too many messages per second
    UNAUTHORIZED = "unauthorized"  # missing or wrong bearer token, or origin not allowed
    INTERNAL = "internal"  # server fault; the session may be closed


class ProtocolError(Exception):
    """A malformed or invalid message. ``seq`` is the offending message's seq when it could be read."""

    def __init__(self, code: ErrorCode | str, message: str, seq: int | None = None):
        super().__init__(f"{ErrorCode(code).value}: {message}")
        self.code = ErrorCode(code)
        self.message = message
        self.seq = seq


# ----------------------------------------------------------------------------- field checks
Check = Callable[[str, Any], None]


def bad_field(name: str, value: Any, want: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELD, f"field {name!r} must be {want}, got {value!r:.80}")


def _range(name: str, value: Any, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ProtocolError(ErrorCode.OUT_OF_RANGE, f"field {name!r}={value!r} is outside [{lo}, {hi}]")


def int_(lo: int = 0, hi: int = MAX_SAFE_INT) -> Check:
    def check(name: str, v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad_field(name, v, "an integer")
        _range(name, v, lo, hi)
    return check


def num(lo: float, hi: float) -> Check:
    def check(name: str, v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad_field(name, v, "a finite number")
        _range(name, v, lo, hi)
    return check


def bool_() -> Check:
    def check(name: str, v: Any) -> None:
        if not isinstance(v, bool):
            raise bad_field(name, v, "true or false")
    return check


def str_(max_len: int, pattern: str | None = None) -> Check:
    rx = re.compile(pattern) if pattern else None

    def check(name: str, v: Any) -> None:
        if not isinstance(v, str):
            raise bad_field(name, v, "a string")
        if len(v) > max_len:
            raise ProtocolError(ErrorCode.OUT_OF_RANGE, f"field {name!r} is {len(v)} chars, max {max_len}")
        if rx is not None and not rx.fullmatch(v):
            raise bad_field(name, v, f"a string matching {pattern}")
    return check


def opt(inner: Check) -> Check:
    def check(name: str, v: Any) -> None:
        if v is not None:
            inner(name, v)
    return check


def list_(inner: Check, max_items: int) -> Check:
    def check(name: str, v: Any) -> None:
        if not isinstance(v, list):
            raise bad_field(name, v, "a list")
        if len(v) > max_items:
            raise ProtocolError(ErrorCode.OUT_OF_RANGE, f"field {name!r} has {len(v)} items, max {max_items}")
        for i, item in enumerate(v):
            inner(f"{name}[{i}]", item)
    return check


def dict_(inner: Check, max_items: int) -> Check:
    def check(name: str, v: Any) -> None:
        if not isinstance(v, dict):
            raise bad_field(name, v, "an object")
        if len(v) > max_items:
            raise ProtocolError(ErrorCode.OUT_OF_RANGE, f"field {name!r} has {len(v)} entries, max {max_items}")
        for k, item in v.items():
            NAME(f"{name} key", k)
            inner(f"{name}.{k}", item)
    return check


def scalar() -> Check:
    def check(name: str, v: Any) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            raise bad_field(name, v, "finite")
        if v is not None and not isinstance(v, (str, int, float, bool)):
            raise bad_field(name, v, "a string, number, boolean or null")
        if isinstance(v, str) and len(v) > 256:
            raise ProtocolError(ErrorCode.OUT_OF_RANGE, f"field {name!r} is {len(v)} chars, max 256")
    return check


NAME = str_(64, r"[A-Za-z0-9_.\-]+")  # model names, option keys, timing names
KEY = str_(32, r"[A-Za-z0-9_+\-.]+")  # key names, e.g. "KeyW", "ArrowUp", "Space", "fire"
SEQ = int_()
TIME_MS = num(0.0, float(MAX_SAFE_INT))
