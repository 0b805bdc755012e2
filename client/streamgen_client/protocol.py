"""The streamgen wire protocol, shared by the server and the client (docs/protocol.md).

Control messages are JSON objects with ``type`` and ``seq``; each type is a frozen dataclass that
validates itself on construction, so an invalid message can neither be parsed nor sent. Media over
WebSocket travels as binary messages: a 32-byte header (``MediaHeader``) followed by the payload.
This module uses only the standard library: the client must stay light (no torch, no pydantic).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from .fields import (KEY, MAX_SAFE_INT, NAME, PROTOCOL_VERSION, SEQ, TIME_MS, Check, ErrorCode, ProtocolError,
                     bad_field, bool_, dict_, int_, list_, num, opt, scalar, str_)
from .jsonwire import MAX_CONTROL_BYTES, SeqChecker, decode_json
from .binary import (HEADER_SIZE, MAX_MEDIA_PAYLOAD, MEDIA_MAGIC, MediaHeader, MediaKind, pack_media,
                     unpack_media)

__all__ = [
    "PROTOCOL_VERSION", "MAX_CONTROL_BYTES", "MAX_PROMPT_CHARS", "MAX_MOUSE_DELTA", "MAX_OPTIONS",
    "MAX_ERROR_CHARS", "MAX_REASON_CHARS", "MAX_SAY_CHARS", "MAX_REFERENCE_CHARS", "MAX_AUDIO_IN_S",
    "ErrorCode", "ProtocolError", "Message", "Start", "KeyAction", "MouseAction", "Prompt", "Pause",
    "Resume", "Ping", "Stop", "Say", "Reference", "ModelInfo", "Started", "Telemetry", "Pong", "Error", "Bye", "Offer",
    "ClientMessage", "ServerMessage", "decode_json", "parse_client_message", "parse_server_message",
    "parse_offer", "SeqChecker", "MediaHeader", "MediaKind", "pack_media", "unpack_media", "HEADER_SIZE",
    "MEDIA_MAGIC", "MAX_MEDIA_PAYLOAD",
]

MAX_PROMPT_CHARS = 2000
# Mouse deltas are pixels per event; 4096 is more than any screen moves between two events.
MAX_MOUSE_DELTA = 4096.0
MAX_OPTIONS = 32
# Longest error message and bye reason (a sender truncates to these; the parser refuses longer ones).
MAX_ERROR_CHARS = 500
MAX_REASON_CHARS = 200
# Avatars: `say` text (about 30 s of speech at espeak-ng's default rate) and a `reference` image as base64
# (a JPEG of a few hundred pixels a side fits; the whole message stays under MAX_CONTROL_BYTES).
MAX_SAY_CHARS = 500
MAX_REFERENCE_CHARS = 15_000
# Avatars: one binary PCM message from a client carries at most 1 s of audio (senders chunk it: 20-100 ms
# live, up to 1 s from a file); the server bounds the audio a session holds ahead of the stream separately.
MAX_AUDIO_IN_S = 1.0


def _check_version(version: int) -> None:
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.OUT_OF_RANGE,
                            f"protocol version {version} is not supported; this side speaks {PROTOCOL_VERSION}")


def _seq_of(d: dict[str, Any]) -> int | None:
    """The message's seq when it is a valid one, so an error can answer it; else None."""
    s = d.get("seq")
    return s if isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SAFE_INT else None


# ----------------------------------------------------------------------------- messages
class Message:
    """Base of all control messages. Subclasses set TYPE and SPEC (field name -> check)."""

    TYPE: ClassVar[str] = ""
    SPEC: ClassVar[dict[str, Check]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            self.SPEC[f.name](f.name, getattr(self, f.name))
        self._validate()

    def _validate(self) -> None:
        """Cross-field rules; overridden where needed."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.TYPE}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            d[f.name] = dict(v) if isinstance(v, dict) else (list(v) if isinstance(v, (list, tuple)) else v)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Message":
        seq = _seq_of(d)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        required = {f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        extra = sorted(set(d) - names - {"type"})
        if extra:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{cls.TYPE!r} has unknown field(s) {extra}", seq)
        missing = sorted(required - set(d))
        if missing:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{cls.TYPE!r} is missing field(s) {missing}", seq)
        try:
            return cls(**{k: v for k, v in d.items() if k != "type"})
        except ProtocolError as e:
            raise ProtocolError(e.code, e.message, seq) from None


_msg = dataclass(frozen=True, kw_only=True)


# --- client -> server
@_msg
class Start(Message):
    """Open a session (WebSocket only; over WebRTC the offer carries these fields)."""
    TYPE = "start"
    SPEC = {"seq": SEQ, "version": int_(1, 255), "model": NAME, "seed": int_(),
            "prompt": opt(str_(MAX_PROMPT_CHARS)), "options": dict_(scalar(), MAX_OPTIONS)}
    seq: int
    model: str
    seed: int = 0
    prompt: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    version: int = PROTOCOL_VERSION

    def _validate(self) -> None:
        _check_version(self.version)


@_msg
class KeyAction(Message):
    """A key edge: ``down`` true on press, false on release. ``t_ms``: client clock, milliseconds."""
    TYPE = "action"
    SPEC = {"seq": SEQ, "kind": str_(8, "key"), "key": KEY, "down": bool_(), "t_ms": TIME_MS}
    seq: int
    key: str
    down: bool
    t_ms: float = 0.0
    kind: str = "key"


@_msg
class MouseAction(Message):
    """A relative mouse move in pixels since the previous mouse action."""
    TYPE = "action"
    SPEC = {"seq": SEQ, "kind": str_(8, "mouse"), "dx": num(-MAX_MOUSE_DELTA, MAX_MOUSE_DELTA),
            "dy": num(-MAX_MOUSE_DELTA, MAX_MOUSE_DELTA), "t_ms": TIME_MS}
    seq: int
    dx: float
    dy: float
    t_ms: float = 0.0
    kind: str = "mouse"


@_msg
class Prompt(Message):
    TYPE = "prompt"
    SPEC = {"seq": SEQ, "prompt": str_(MAX_PROMPT_CHARS)}
    seq: int
    prompt: str


@_msg
class Pause(Message):
    TYPE = "pause"
    SPEC = {"seq": SEQ}
    seq: int


@_msg
class Resume(Message):
    TYPE = "resume"
    SPEC = {"seq": SEQ}
    seq: int


@_msg
class Ping(Message):
    TYPE = "ping"
    SPEC = {"seq": SEQ, "t_ms": TIME_MS}
    seq: int
    t_ms: float = 0.0


@_msg
class Stop(Message):
    TYPE = "stop"
    SPEC = {"seq": SEQ}
    seq: int


@_msg
class Say(Message):
    """Avatars: the server speaks ``text`` with espeak-ng and the face says it (docs/protocol.md 2.1)."""
    TYPE = "say"
    SPEC = {"seq": SEQ, "text": str_(MAX_SAY_CHARS, r"[^\x00-\x1f\x7f]+")}
    seq: int
    text: str


@_msg
class Reference(Message):
    """Avatars: a new reference image (the identity), base64 PNG or JPEG; re-cached at the next block."""
    TYPE = "reference"
    SPEC = {"seq": SEQ, "image": str_(MAX_REFERENCE_CHARS, r"[A-Za-z0-9+/]+={0,2}")}
    seq: int
    image: str


# --- server -> client
@_msg
class ModelInfo(Message):
    """What the session streams and accepts (nested inside ``started``; not a message of its own)."""
    TYPE = "model_info"
    SPEC = {"name": NAME, "fps": num(0.1, 1000.0), "width": int_(1, 16384), "height": int_(1, 16384),
            "frames_per_block": int_(1, 4096), "sample_rate": opt(int_(1000, 384000)),
            "channels": int_(0, 8), "keys": list_(KEY, 256), "takes_mouse": bool_(),
            "takes_prompt": bool_(), "audio_in_rate": opt(int_(1000, 384000))}
    name: str
    fps: float
    width: int
    height: int
    frames_per_block: int = 1
    sample_rate: int | None = None  # None: the model makes no audio
    channels: int = 0
    keys: list[str] = field(default_factory=list)
    takes_mouse: bool = False
    takes_prompt: bool = False
    audio_in_rate: int | None = None  # avatars: the speech-in sample rate (mono); None: takes no audio

    def _validate(self) -> None:
        if (self.sample_rate is None) != (self.channels == 0):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"sample_rate={self.sample_rate} needs channels>0 "
                                f"and channels={self.channels} needs a sample_rate")

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        del d["type"]
        if d["audio_in_rate"] is None:
            del d["audio_in_rate"]  # optional: a model without audio in looks as it did to older parsers
        return d


@_msg
class Started(Message):
    TYPE = "started"
    SPEC = {"seq": SEQ, "reply_to": opt(SEQ), "version": int_(1, 255),
            "session_id": str_(64, r"[A-Za-z0-9_\-]+"), "model": lambda n, v: None}
    seq: int
    session_id: str
    model: ModelInfo
    reply_to: int | None = None  # the start's seq; None over WebRTC (the offer started it)
    version: int = PROTOCOL_VERSION

    def _validate(self) -> None:
        _check_version(self.version)
        if not isinstance(self.model, ModelInfo):
            raise bad_field("model", self.model, "a ModelInfo object")

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Message":
        m = d.get("model")
        if not isinstance(m, dict):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"field 'model' must be an object, got {m!r:.80}",
                                _seq_of(d))
        return super().from_dict({**d, "model": ModelInfo.from_dict(m)})


@_msg
class Telemetry(Message):
    """Sent once per generated block. ``timings_ms``: named stage durations of that block."""
    TYPE = "telemetry"
    SPEC = {"seq": SEQ, "block_index": int_(), "frames": int_(0, 4096),
            "timings_ms": dict_(num(0.0, 1e9), MAX_OPTIONS), "queue_depth": int_(0, 1_000_000),
            "dropped_frames": int_(), "applied_seq": opt(SEQ), "behind_ms": num(0.0, 1e12)}
    seq: int
    block_index: int
    frames: int = 0  # frames in this block
    timings_ms: dict[str, float] = field(default_factory=dict)
    queue_depth: int = 0  # output frames waiting to be sent
    dropped_frames: int = 0  # cumulative stale frames dropped in this session
    applied_seq: int | None = None  # seq of the last client action applied at this block's start
    behind_ms: float = 0.0  # how far the stream runs behind real time at this block (pauses excluded)


@_msg
class Pong(Message):
    TYPE = "pong"
    SPEC = {"seq": SEQ, "reply_to": opt(SEQ), "t_ms": TIME_MS, "server_ms": TIME_MS}
    seq: int
    reply_to: int | None = None
    t_ms: float = 0.0  # the ping's t_ms echoed, for round-trip time
    server_ms: float = 0.0  # server wall clock (Unix time, milliseconds)


@_msg
class Error(Message):
    TYPE = "error"
    SPEC = {"seq": SEQ, "code": str_(32), "message": str_(MAX_ERROR_CHARS), "reply_to": opt(SEQ),
            "retry_after_s": opt(num(0.0, 86400.0))}
    seq: int
    code: str
    message: str = ""
    reply_to: int | None = None  # seq of the message this answers, when known
    retry_after_s: float | None = None  # set with code "busy" (and "rate_limited")

    @classmethod
    def answering(cls, fault: ProtocolError, seq: int) -> "Error":
        """The server's answer to a fault, sent with the server's own ``seq``."""
        return cls(seq=seq, code=fault.code.value, message=fault.message[:500], reply_to=fault.seq)

    def _validate(self) -> None:
        try:
            ErrorCode(self.code)
        except ValueError:
            raise ProtocolError(ErrorCode.OUT_OF_RANGE, f"unknown error code {self.code!r}") from None
        if self.code == ErrorCode.BUSY.value and self.retry_after_s is None:
            raise ProtocolError(ErrorCode.BAD_FIELD, "error code 'busy' needs retry_after_s")


@_msg
class Bye(Message):
    TYPE = "bye"
    SPEC = {"seq": SEQ, "reason": str_(MAX_REASON_CHARS)}
    seq: int
    reason: str = "stop"


ClientMessage = Union[Start, KeyAction, MouseAction, Prompt, Pause, Resume, Ping, Stop, Say, Reference]
ServerMessage = Union[Started, Telemetry, Pong, Error, Bye]
_CLIENT: dict[str, type[Message]] = {c.TYPE: c for c in (Start, Prompt, Pause, Resume, Ping, Stop, Say, Reference)}
_SERVER: dict[str, type[Message]] = {c.TYPE: c for c in (Started, Telemetry, Pong, Error, Bye)}
_ACTIONS: dict[str, type[Message]] = {"key": KeyAction, "mouse": MouseAction}


def _parse(data: str | bytes, table: dict[str, type[Message]], side: str) -> Message:
    d = decode_json(data)
    seq = _seq_of(d)
    t = d.get("type")
    if not isinstance(t, str):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field 'type' must be a string, got {t!r:.80}", seq)
    if t == "action" and side == "client":
        kind = d.get("kind")
        # kind may be any JSON value (a list or an object is unhashable): look up strings only.
        cls: type[Message] | None = _ACTIONS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"action 'kind' must be 'key' or 'mouse', got {kind!r:.40}", seq)
    else:
        cls = table.get(t)
        if cls is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown {side} message type {t!r:.40}; "
                                f"known: {sorted(set(table) | ({'action'} if side == 'client' else set()))}", seq)
    return cls.from_dict(d)


def parse_client_message(data: str | bytes) -> ClientMessage:
    """Parse a client->server message; raises ProtocolError with a typed code."""
    return _parse(data, _CLIENT, "client")  # type: ignore[return-value]


def parse_server_message(data: str | bytes) -> ServerMessage:
    """Parse a server->client message; raises ProtocolError with a typed code."""
    return _parse(data, _SERVER, "server")  # type: ignore[return-value]


# ----------------------------------------------------------------------------- WebRTC signalling
@_msg
class Offer(Message):
    """Body of ``POST /v1/offer``. The answer body is ``{"sdp", "type": "answer", "session_id"}``."""
    TYPE = "offer"
    SPEC = {"sdp": str_(65536), "type_": str_(8, "offer"), "model": NAME, "seed": int_(),
            "prompt": opt(str_(MAX_PROMPT_CHARS)), "options": dict_(scalar(), MAX_OPTIONS),
            "version": int_(1, 255)}
    sdp: str
    model: str
    seed: int = 0
    prompt: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    version: int = PROTOCOL_VERSION
    type_: str = "offer"

    def _validate(self) -> None:
        _check_version(self.version)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["type"] = d.pop("type_")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Message":
        if not isinstance(d, dict):
            raise ProtocolError(ErrorCode.BAD_JSON, "offer must be a JSON object")
        d = dict(d)
        d["type_"] = d.pop("type", None)
        if d["type_"] is None:
            raise ProtocolError(ErrorCode.BAD_FIELD, "offer is missing field(s) ['type']")
        return super().from_dict(d)


def parse_offer(data: str | bytes | dict[str, Any]) -> Offer:
    return Offer.from_dict(data if isinstance(data, dict) else decode_json(data))  # type: ignore[return-value]
