"""The binary WebSocket media message: a 32-byte header, then a JPEG frame or PCM audio (docs/protocol.md)."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from .fields import PROTOCOL_VERSION, ErrorCode, ProtocolError
MEDIA_MAGIC = b"SGMB"
# little-endian: magic, version, kind, channels, flags, block_index, frame_index, timestamp_us,
# sample_rate, payload_length  -> 4+1+1+1+1+4+4+8+4+4 = 32 bytes
_HEADER = struct.Struct("<4sBBBBIIqII")
HEADER_SIZE = _HEADER.size
MAX_MEDIA_PAYLOAD = 16 * 1024 * 1024  # a 4K JPEG or 10 s of 8-channel f32 audio fit well below


class MediaKind(int, Enum):
    VIDEO_JPEG = 1
    AUDIO_S16 = 2  # interleaved signed 16-bit little-endian PCM
    AUDIO_F32 = 3  # interleaved 32-bit float little-endian PCM


@dataclass(frozen=True, kw_only=True)
class MediaHeader:
    kind: MediaKind
    block_index: int
    frame_index: int  # frame within its block (video) or chunk within its block (audio)
    timestamp_us: int  # media time since the session's first frame, microseconds
    channels: int = 0  # audio only
    sample_rate: int = 0  # audio only, Hz
    payload_length: int = 0
    version: int = PROTOCOL_VERSION
    flags: int = 0


def pack_media(header: MediaHeader, payload: bytes) -> bytes:
    """Header (with payload_length filled in) followed by the payload."""
    if len(payload) > MAX_MEDIA_PAYLOAD:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"payload is {len(payload)} bytes, max {MAX_MEDIA_PAYLOAD}")
    audio = header.kind in (MediaKind.AUDIO_S16, MediaKind.AUDIO_F32)
    if audio and not (1 <= header.channels <= 8 and header.sample_rate > 0):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"audio needs channels in 1..8 and a sample_rate, got "
                            f"channels={header.channels} sample_rate={header.sample_rate}")
    try:
        head = _HEADER.pack(MEDIA_MAGIC, header.version, int(header.kind), header.channels, header.flags,
                            header.block_index, header.frame_index, header.timestamp_us,
                            header.sample_rate, len(payload))
    except struct.error as e:
        raise ProtocolError(ErrorCode.OUT_OF_RANGE, f"header field out of range: {e} ({header})") from None
    return head + bytes(payload)


def unpack_media(data: bytes | bytearray | memoryview) -> tuple[MediaHeader, memoryview]:
    """Split a binary media message into its header and a view of its payload."""
    view = memoryview(data)
    if len(view) < HEADER_SIZE:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"binary message is {len(view)} bytes, header needs {HEADER_SIZE}")
    magic, ver, kind, ch, flags, block, frame, ts, sr, n = _HEADER.unpack_from(view)
    if magic != MEDIA_MAGIC:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"bad magic {bytes(magic)!r}, want {MEDIA_MAGIC!r}")
    if ver != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.OUT_OF_RANGE, f"media header version {ver}, this side speaks {PROTOCOL_VERSION}")
    try:
        mk = MediaKind(kind)
    except ValueError:
        raise ProtocolError(ErrorCode.OUT_OF_RANGE, f"unknown media kind {kind}") from None
    if n > MAX_MEDIA_PAYLOAD:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"payload_length {n} over {MAX_MEDIA_PAYLOAD}")
    if n != len(view) - HEADER_SIZE:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"payload_length {n} but {len(view) - HEADER_SIZE} bytes follow")
    hdr = MediaHeader(kind=mk, block_index=block, frame_index=frame, timestamp_us=ts, channels=ch,
                      sample_rate=sr, payload_length=n, version=ver, flags=flags)
    return hdr, view[HEADER_SIZE:]
