"""The JSON layer of control messages (docs/protocol.md section 2): the size limit, the strict parse and the
per-connection ``seq`` check. Re-exported by ``protocol``; standard library only."""
from __future__ import annotations

import json
from typing import Any

from .fields import ErrorCode, ProtocolError

# 16 KiB holds the longest prompt (MAX_PROMPT_CHARS of 4-byte UTF-8) plus the envelope.
MAX_CONTROL_BYTES = 16 * 1024


def _no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ProtocolError(ErrorCode.BAD_JSON, "duplicate key in JSON object")
    return d


def _no_constant(name: str) -> Any:
    raise ProtocolError(ErrorCode.BAD_JSON, f"{name} is not valid JSON")


def decode_json(data: str | bytes) -> dict[str, Any]:
    """Size check, strict JSON parse (no NaN/Infinity, no duplicate keys), object check."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_CONTROL_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message is {len(raw)} bytes, max {MAX_CONTROL_BYTES}")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_dupes, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(ErrorCode.BAD_JSON, f"not valid UTF-8 JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, f"message must be a JSON object, got {type(obj).__name__}")
    return obj


class SeqChecker:
    """Enforces strictly increasing ``seq`` on one connection (answers out_of_range otherwise)."""

    def __init__(self) -> None:
        self.last: int | None = None

    def check(self, seq: int) -> None:
        if self.last is not None and seq <= self.last:
            raise ProtocolError(ErrorCode.OUT_OF_RANGE, f"seq {seq} is not above the previous seq {self.last}", seq)
        self.last = seq
